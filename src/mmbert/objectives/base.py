"""What every objective returns."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor


@dataclass
class LossOutput:
    """A scalar loss to back-propagate and detached metrics to log (floats or 0-d tensors)."""

    loss: Tensor
    metrics: dict[str, float] = field(default_factory=dict)
