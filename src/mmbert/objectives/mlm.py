"""Masked language modelling: cross-entropy on the masked tokens only (label -100 = not a target)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mmbert.models.base import ScoredRows
from mmbert.objectives.base import LossOutput, Objective, ScoringInputs

IGNORE = -100


class MaskedLM(Objective):
    """MLM loss and accuracy. Accepts logits over every position (B, T, V) or, the fast path, only over
    the labelled positions (N, V) as produced with ``mlm_positions = labels != -100``.

    An all-ignored batch gives a loss of exactly 0 that still connects to the graph (finite, no NaN).
    """

    name = "mlm"
    output = "mlm_logits"
    batch_fields = ("mlm_labels",)

    def score(self, pred: Tensor, inputs: ScoringInputs) -> LossOutput:
        return self(pred, self._labels(inputs))

    def reads(self, inputs: ScoringInputs) -> ScoredRows:
        """The labelled tokens only."""
        return ScoredRows(text=self._labels(inputs) != IGNORE)

    def _labels(self, inputs: ScoringInputs) -> Tensor:
        return inputs.mlm_labels if inputs.mlm_labels is not None else inputs.need("mlm_labels", self.name)

    def forward(self, logits: Tensor, labels: Tensor) -> LossOutput:
        if logits.dim() == 3:
            if logits.shape[:2] != labels.shape:
                raise ValueError(
                    f"mlm logits {tuple(logits.shape)} do not match labels {tuple(labels.shape)}"
                )
            selected = labels != IGNORE
            logits, targets = logits[selected], labels[selected]
        else:
            targets = labels[labels != IGNORE]
            if logits.shape[0] != targets.shape[0]:
                raise ValueError(
                    f"got MLM logits for {logits.shape[0]} positions but labels mark {targets.shape[0]} targets"
                )
        n = targets.numel()
        if n == 0:
            return LossOutput(logits.sum() * 0.0, {"mlm_loss": 0.0, "mlm_acc": 0.0, "mlm_count": 0})
        loss = F.cross_entropy(logits.float(), targets)
        with torch.no_grad():
            acc = (logits.argmax(-1) == targets).float().mean()
        return LossOutput(loss, {"mlm_loss": float(loss.detach()), "mlm_acc": float(acc), "mlm_count": n})


def mlm_positions(labels: Tensor) -> Tensor:
    """The boolean (B, T) selection to pass as ``mlm_positions`` for the gathered fast path."""
    return labels != IGNORE
