"""Reading the official annotation files (JSON, JSON lines) with errors that name the file and record,
and writing results through ``mmbert.atomic``."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mmbert.atomic import atomic_write_json
from mmbert.tasks.records import TaskDataError


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise TaskDataError(f"{path}: not valid JSON ({e})") from None
    except UnicodeDecodeError as e:
        raise TaskDataError(not_utf8(path, e)) from None


def not_utf8(path: Any, e: UnicodeDecodeError) -> str:
    """The decoder's own message names no file."""
    return f"{path}: not UTF-8 text ({e.reason}: byte {e.object[e.start : e.start + 1]!r}); re-encode it as UTF-8"


def read_jsonl(path: Path) -> list[tuple[int, dict]]:
    """(line number, record) for every non-empty line."""
    out = []
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    out.append((n, json.loads(line)))
                except json.JSONDecodeError as e:
                    raise TaskDataError(f"{path}:{n}: not valid JSON ({e})") from None
    except UnicodeDecodeError as e:
        raise TaskDataError(not_utf8(path, e)) from None
    return out


def require_fields(record: Mapping, names: Sequence[str], where: str) -> None:
    """A clear error naming the file/record and the missing fields."""
    if not isinstance(record, Mapping):
        raise TaskDataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    missing = [n for n in names if n not in record]
    if missing:
        raise TaskDataError(f"{where}: missing field(s) {missing} (has {sorted(record)})")


def write_json(obj: Any, path: str | os.PathLike) -> Path:
    return atomic_write_json(path, obj, indent=None if isinstance(obj, list) else 2)
