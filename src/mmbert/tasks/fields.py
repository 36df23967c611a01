"""Typed checks of task-record fields: a field holds what the task needs, or the record is refused with a
message naming the file, the record and the field. Loading is where a wrong type must stop: an int
question or a string box that passes loading fails much later, far from its cause, or not at all."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from mmbert.tasks.records import TaskDataError


def text_field(record: Mapping, name: str, where: str) -> str:
    """``record[name]`` as a non-empty string (a question, a sentence, a caption)."""
    value = record[name]
    if not isinstance(value, str):
        raise TaskDataError(f"{where}: {name!r} must be a string, got {type(value).__name__} {value!r:.80}")
    if not value.strip():
        raise TaskDataError(f"{where}: {name!r} is empty")
    return value


def token_list(value: Any, name: str, where: str) -> list:
    """A tokenised field (VCR's question and choices): a list, never a plain string (which would be
    rendered character by character)."""
    if isinstance(value, str):
        raise TaskDataError(f"{where}: {name!r} must be a list of tokens (VCR's format), got the string {value!r:.80}")
    if not isinstance(value, list) or not value:
        raise TaskDataError(f"{where}: {name!r} must be a non-empty list of tokens, got {value!r:.80}")
    return value


def xywh_box(value: Any, where: str) -> list[float]:
    """A COCO ``[x, y, w, h]`` pixel box: four finite numbers, x, y >= 0 and w, h > 0."""
    ok = (
        isinstance(value, (list, tuple))
        and len(value) == 4
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    )
    if not ok:
        raise TaskDataError(f"{where}: 'bbox' must be four numbers [x, y, w, h] in pixels, got {value!r:.80}")
    x, y, w, h = (float(v) for v in value)
    if x < 0 or y < 0 or w <= 0 or h <= 0:
        raise TaskDataError(f"{where}: 'bbox' {list(value)} has a negative corner or a non-positive size")
    return [x, y, w, h]


def refuse_duplicates(keys: Iterable[tuple[Any, str]], what: str) -> None:
    """(key, where) pairs: the first key seen twice is refused naming both places."""
    seen: dict[Any, str] = {}
    for key, where in keys:
        if key in seen:
            raise TaskDataError(f"{where}: {what} {key!r} repeats {seen[key]}; each must be unique (a repeat "
                                "would silently replace the first in scoring)")  # fmt: skip
        seen[key] = where
