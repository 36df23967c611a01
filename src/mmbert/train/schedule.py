"""One pre-training task per optimizer step, drawn by a mix ratio: UNITER's task schedule.

UNITER (pretrain.py ``MetaLoader``, data/loader.py) builds one data loader per task and, at every step,
picks a task at random with probability proportional to its ``mix_ratio`` (2:2:1:1 for itm, mlm, mrfr,
mrckl in its pre-training configs); that step's batch is that task's alone, and the step computes only
its loss. ``TaskSchedule.task(step)`` is the same draw made a pure function of (seed, step), so a resumed
or multi-process run follows exactly the schedule of an unbroken one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import torch


class TaskSchedule:
    """``tasks`` (names) drawn i.i.d. per step with probability ``ratio[i] / sum(ratio)``."""

    def __init__(self, tasks: Sequence[str], ratio: Sequence[float], seed: int = 0) -> None:
        tasks, ratio = tuple(tasks), tuple(float(r) for r in ratio)
        if not tasks:
            raise ValueError("a task schedule needs at least one task")
        if len(tasks) != len(ratio):
            raise ValueError(f"{len(tasks)} tasks {list(tasks)} but {len(ratio)} mix ratios {list(ratio)}")
        if len(set(tasks)) != len(tasks):
            raise ValueError(f"tasks {list(tasks)} repeat a name")
        if any(r < 0 for r in ratio) or sum(ratio) <= 0:
            raise ValueError(f"mix ratios must be non-negative with a positive sum, got {list(ratio)}")
        self.tasks, self.ratio, self.seed = tasks, ratio, int(seed)
        self._cumulative = torch.tensor(np.cumsum(ratio) / sum(ratio), dtype=torch.float64)

    @property
    def probabilities(self) -> dict[str, float]:
        total = sum(self.ratio)
        return {t: r / total for t, r in zip(self.tasks, self.ratio)}

    def task(self, step: int) -> str:
        """The task of global step ``step`` (0-based)."""
        state = np.random.SeedSequence([self.seed, int(step), 0x7A5C]).generate_state(1, np.uint64)[0]
        u = torch.rand((), generator=torch.Generator().manual_seed(int(state) & ((1 << 63) - 1)), dtype=torch.float64)
        index = int(torch.searchsorted(self._cumulative, u, right=True))
        return self.tasks[min(index, len(self.tasks) - 1)]

    def counts(self, start: int, stop: int) -> Counter:
        """How many of steps start..stop-1 compute each task."""
        return Counter(self.task(s) for s in range(start, stop))

    def to_dict(self) -> dict:
        return {"tasks": list(self.tasks), "mix_ratio": list(self.ratio), "seed": self.seed}
