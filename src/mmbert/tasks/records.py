"""The records every task builds: a ``View`` (one text + image input), an ``Example`` (its views, target
and meta), the ``TaskDataset`` over them, and the ``LoadReport`` of what a loader skipped.

Multi-image (NLVR2) and multi-choice (VCR) examples carry several views, which ``collate`` flattens into
the batch dimension; the head reshapes the logits back to (B, views, ...).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor
from torch.utils.data import Dataset

from mmbert.data.batch import RegionFeatures


class TaskDataError(ValueError):
    """An annotation file that cannot be used as it is; the message names the file and the record."""


@dataclass
class View:
    """One (text, image) input to the encoder: token ids with [CLS]/[SEP], their segments, the regions."""

    text_ids: list[int]
    segment_ids: list[int]
    regions: RegionFeatures | None = None


@dataclass
class Example:
    """One dataset item: its views (1 for most tasks, 2 for NLVR2, 4 for VCR), the training target
    (a tensor, or None on unlabelled splits) and ``meta`` (ids for the prediction writer)."""

    views: list[View]
    target: Tensor | None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class LoadReport:
    """What a loader skipped or changed and why: counted and reported, never silently dropped."""

    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, reason: str, what: str = "") -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        if what and len(self.examples.setdefault(reason, [])) < 5:
            self.examples[reason].append(what)

    def __bool__(self) -> bool:
        return bool(self.counts)

    def summary(self) -> str:
        if not self.counts:
            return "nothing skipped"
        return "; ".join(
            f"{n} {reason}"
            + (f" (e.g. {', '.join(self.examples[reason])})" if self.examples.get(reason) else "")
            for reason, n in self.counts.items()
        )


class TaskDataset(Dataset):
    """A list of ``Example`` builders with a report of what was skipped. Items are built lazily (the
    region features are read from the store when an item is asked for, not at load time)."""

    def __init__(
        self, records: list[Any], build: Callable[[Any], Example], report: LoadReport, info: dict
    ) -> None:
        self.records = records
        self._build = build
        self.report = report
        self.info = info  # task-specific facts for the metric (e.g. VQA annotations by question id)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> Example:
        return self._build(self.records[i])


def encode_text(
    tokenizer: Any, text: str, pair: str | None = None, max_length: int | None = None
) -> tuple[list[int], list[int]]:
    """[CLS] text [SEP] (pair [SEP]) -> (ids, segment ids), truncated to ``max_length`` (longest first)."""
    enc = tokenizer.encode(text, pair, max_length=max_length)
    return list(enc.ids), list(enc.segment_ids)
