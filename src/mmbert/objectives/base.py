"""What every objective returns (``LossOutput``), and what a pre-training objective is (``Objective``:
it declares the model output and batch fields it reads and scores itself)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from mmbert.data.batch import Batch
from mmbert.models.base import ScoredRows


@dataclass
class LossOutput:
    """A scalar loss to back-propagate and detached metrics to log (floats or 0-d tensors)."""

    loss: Tensor
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class DetectorNeed:
    """What a feature store must hold for an objective: one of ``fields`` (``RegionFeatures`` fields,
    the first present is used), whose class count must fit the model config's ``size_key``. ``mmbert
    pretrain`` checks it on the store's first record before training starts."""

    fields: tuple[str, ...]
    size_key: str


@dataclass
class ScoringInputs:
    """What an objective scores against, besides its model output: the batch, the MLM labels and the
    region target mask after the recipe's mismatched-pair rule, and where the model's whole-image
    region sits (to align region predictions with the batch's regions)."""

    batch: Batch
    mlm_labels: Tensor | None
    region_targets: Tensor | None
    global_region: str = "none"
    outputs: Any = None  # the model's whole PretrainingOutput, for objectives that also read the states

    def need(self, field: str, objective: str) -> Tensor:
        """``batch.<field>``, or a clear error naming the objective that needs it."""
        value = getattr(self.batch, field)
        if value is None:
            raise ValueError(f"objective {objective!r} needs batch.{field}, which this batch does not have")
        return value

    def regions(self, pred: Tensor, objective: str) -> tuple[Tensor, Tensor]:
        """(region predictions aligned to the batch's R regions, the bool (B, R) target mask)."""
        targets = self.target_regions(objective)
        return self.align(pred, targets.shape[1]), targets

    def target_regions(self, objective: str) -> Tensor:
        """The bool (B, R) mask of the regions a masked-region objective scores."""
        return self.region_targets if self.region_targets is not None else self.need("region_target_mask", objective)

    def align(self, pred: Tensor, r: int) -> Tensor:
        """Region predictions (B, R', .) -> the batch's R regions. Models add vision elements: a global
        image region first (``config.global_region`` "first", e.g. ViLBERT) or last, VL-BERT's [END]."""
        if pred.shape[1] == r:
            return pred
        start = 1 if self.global_region == "first" else 0
        if pred.shape[1] >= start + r:
            return pred[:, start : start + r]
        raise ValueError(
            f"the model gives {pred.shape[1]} region predictions per image but the batch has {r} regions"
        )


class Objective(nn.Module):
    """A pre-training objective that says what it reads and scores itself.

    Subclasses (or their ``__init__``, where one class serves several names) set:

    * ``name`` — the registry key and the prefix of its metrics (``mlm_loss``, ``mlm_acc``);
    * ``output`` — the ``PretrainingOutput`` field it scores (``"mlm_logits"``, ``"pair_logits"``,
      ``"region_class_logits"``, ``"region_attr_logits"``, ``"region_feat_pred"``, ``"answer_logits"``);
      ``Pretraining`` refuses an objective whose model has no head for it;
    * ``batch_fields`` — the ``Batch`` fields it reads (documentation and ``describe()``; missing ones
      raise a clear error through ``ScoringInputs.need``);
    * ``detector`` — what a feature store must hold for it (None when nothing).

    and implement ``score(pred, inputs) -> LossOutput``; where it reads only some rows of the final states,
    ``reads(inputs)`` says which (the last layer then computes only those). Adding an objective is one such
    class plus one entry in ``mmbert.objectives.registry.OBJECTIVES``.
    """

    name: str = ""
    output: str = ""
    batch_fields: tuple[str, ...] = ()
    detector: DetectorNeed | None = None

    def score(self, pred: Tensor, inputs: ScoringInputs) -> LossOutput:
        """The loss and metrics of ``pred`` (this objective's model output) against ``inputs``."""
        raise NotImplementedError(f"{type(self).__name__} does not implement score()")

    def reads(self, inputs: ScoringInputs) -> ScoredRows | None:
        """The rows of the final states that ``score`` reads for these inputs; None (the default, always
        safe): every row. A row read but not declared would be scored as zeros: declare them all."""
        return None

    def describe(self) -> str:
        reads = ", ".join(f"batch.{f}" for f in self.batch_fields) or "nothing else"
        return f"{self.name}: scores {self.output} against {reads}"
