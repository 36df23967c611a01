"""Pair classification: next-sentence prediction (BERT) and image-text matching (the V&L models).
Label 1 = is next / matches, 0 = not; -100 = no label."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mmbert.models.base import ScoredRows
from mmbert.objectives.base import LossOutput, Objective, ScoringInputs

IGNORE = -100


class PairMatch(Objective):
    """Two-way cross-entropy over ``pair_logits`` (B, 2); ``name`` is "nsp" or "itm" in the metrics."""

    output = "pair_logits"
    batch_fields = ("pair_labels",)

    def __init__(self, name: str = "itm") -> None:
        super().__init__()
        self.name = name

    def score(self, pred: Tensor, inputs: ScoringInputs) -> LossOutput:
        return self(pred, inputs.need("pair_labels", self.name))

    def reads(self, inputs: ScoringInputs) -> ScoredRows:
        """The pooled output only."""
        return ScoredRows(pooled=True)

    def forward(self, logits: Tensor, labels: Tensor) -> LossOutput:
        if logits.shape != (labels.shape[0], 2):
            raise ValueError(f"pair logits {tuple(logits.shape)} do not match {labels.shape[0]} labels")
        valid = labels != IGNORE
        if not bool(valid.any()):
            return LossOutput(logits.sum() * 0.0, {f"{self.name}_loss": 0.0, f"{self.name}_acc": 0.0})
        loss = F.cross_entropy(logits[valid].float(), labels[valid])
        with torch.no_grad():
            acc = (logits[valid].argmax(-1) == labels[valid]).float().mean()
        return LossOutput(loss, {f"{self.name}_loss": float(loss.detach()), f"{self.name}_acc": float(acc)})
