"""LXMERT's image question answering pre-training task.

LXMERT samples one answer from each question's soft score distribution and takes a cross-entropy;
here the loss is the expectation of that, the cross-entropy against the normalised scores (same
expected gradient, no sampling noise, no randomness inside a loss). Hard answer labels (B,) are also
accepted. Examples without an answer, and every mismatched image-text pair (``pair_labels == 0``:
the question is not about this image), are dropped, as in LXMERT.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mmbert.models.base import ScoredRows
from mmbert.objectives.base import LossOutput, Objective, ScoringInputs

IGNORE = -100


class ImageQA(Objective):
    """logits (B, A); targets soft scores (B, A) (all zero = no answer) or labels (B,) (-100 = none)."""

    name = "qa"
    output = "answer_logits"
    batch_fields = ("answer_targets", "pair_labels")

    def score(self, pred: Tensor, inputs: ScoringInputs) -> LossOutput:
        return self(pred, inputs.need("answer_targets", self.name), inputs.batch.pair_labels)

    def reads(self, inputs: ScoringInputs) -> ScoredRows:
        """The pooled output only."""
        return ScoredRows(pooled=True)

    def forward(self, logits: Tensor, targets: Tensor, pair_labels: Tensor | None = None) -> LossOutput:
        if targets.dim() == 2:
            if targets.shape != logits.shape:
                raise ValueError(f"qa: answer scores {tuple(targets.shape)} do not match logits {tuple(logits.shape)}")
            keep = targets.sum(-1) > 0
        else:
            if targets.shape != logits.shape[:1]:
                raise ValueError(f"qa: {targets.shape[0]} answer labels for {logits.shape[0]} examples")
            keep = targets != IGNORE
        if pair_labels is not None:
            keep = keep & (pair_labels != 0)
        n = int(keep.sum())
        if n == 0:
            return LossOutput(logits.sum() * 0.0, {"qa_loss": 0.0, "qa_score": 0.0, "qa_count": 0})
        log_q = F.log_softmax(logits[keep].float(), dim=-1)
        if targets.dim() == 2:
            scores = targets[keep].float()
            loss = -(scores / scores.sum(-1, keepdim=True) * log_q).sum(-1).mean()
            with torch.no_grad():
                score = scores.gather(1, log_q.argmax(-1, keepdim=True)).mean()
        else:
            labels = targets[keep].long()
            loss = F.nll_loss(log_q, labels)
            with torch.no_grad():
                score = (log_q.argmax(-1) == labels).float().mean()
        return LossOutput(loss, {"qa_loss": float(loss.detach()), "qa_score": float(score), "qa_count": n})
