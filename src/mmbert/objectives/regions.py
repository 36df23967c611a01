"""Masked region objectives: predict something about the regions whose input was masked.

* ``RegionClassification`` — cross-entropy with the detector's hard label (Unicoder-VL's masked object
  classification "moc", VL-BERT's masked RoI classification "mvrc"; VOLTA target 6).
* ``RegionDistribution`` — match the detector's class distribution: ``kind="kl"`` is
  KL(detector || predicted) (ViLBERT, UNITER's MRC-KL; VOLTA target 0); ``kind="soft_ce"`` the soft
  cross-entropy of VL-BERT's original code (same gradient, without the detector's entropy).
* ``FeatureRegression`` — regress the original feature: ``"l2"`` (UNITER's MRFR, VOLTA target 1) or
  ``"smooth_l1"`` (VOLTA target 5).
* ``LxmertRegionLoss`` — LXMERT's masked object prediction as its code computes it: obj / attr CE
  weighted by the detector's confidence, feature SmoothL1 averaged over dimensions; each summed over
  the masked regions, divided by the number of regions (``.mean()`` over all of them) and scaled by
  ``visual_loss_normalizer`` 6.67 (= 1 / 0.15, i.e. about a mean over the masked ones).

The first three average over target regions only (``targets`` bool (B, R)). Every one returns an exact,
graph-connected 0 when a batch has no target (finite, no NaN, safe under DDP).

Normalisation of the KL, as each repository computes it:
* ``average="region"`` — vilbert-multi-task (vilbert/vilbert.py ``BertForMultiModalPreTraining``) and
  VOLTA (volta/losses.py ``kl_1601``): the KL summed over classes and masked regions, divided by the
  number of masked regions, i.e. the mean per-region KL.
* ``average="region_class"`` — UNITER (model/pretrain.py ``mrc_kl``: ``F.kl_div(..., reduction='none')``
  then the pretrain loop's ``.mean()``): the mean over masked regions AND classes, i.e. the per-region KL
  divided by the number of classes (1601), ~1601x smaller.

Hard labels: ``RegionClassification`` takes the arg-max of the detector's distribution over all classes,
background included (VOLTA's target 6; ``moc`` / ``mvrc``), or with ``background=False`` over the
classes after the background column, ``argmax(p[:, 1:]) + 1`` (UNITER's hard MRC, model/pretrain.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mmbert.models.base import ScoredRows
from mmbert.objectives.base import DetectorNeed, LossOutput, Objective, ScoringInputs

# src/lxrt/entry.py VISUAL_CONFIG.visual_loss_config: every visual loss weighted 1 / 0.15 (~6.67)
LXMERT_VISUAL_LOSS_NORMALIZER = 1 / 0.15


def _check(name: str, pred: Tensor, targets: Tensor) -> None:
    if pred.shape[:2] != targets.shape:
        raise ValueError(f"{name}: predictions {tuple(pred.shape)} do not match the target mask {tuple(targets.shape)}")
    if targets.dtype != torch.bool:
        raise TypeError(f"{name}: the target mask must be boolean, got {targets.dtype}")


def _empty(name: str, pred: Tensor) -> LossOutput:
    return LossOutput(pred.sum() * 0.0, {f"{name}_loss": 0.0, f"{name}_count": 0})


class MaskedRegionObjective(Objective):
    """An objective scored at the target regions only (``ScoringInputs.target_regions``)."""

    def reads(self, inputs: ScoringInputs) -> ScoredRows:
        return ScoredRows(regions=inputs.target_regions(self.name))


class RegionClassification(MaskedRegionObjective):
    """Hard-label CE on target regions: logits (B, R, C), labels (B, R) long, targets bool (B, R).

    The hard label is the argmax of the detector's class distribution when that has as many classes as
    the head (VOLTA's target 6, 1601 classes with background), else the stored object ids."""

    output = "region_class_logits"
    batch_fields = ("region_target_mask", "region_cls_prob", "region_labels")
    detector = DetectorNeed(("cls_prob", "obj_id"), "num_region_classes")

    def __init__(self, name: str = "moc", background: bool = True) -> None:
        super().__init__()
        self.name, self.background = name, background

    def hard_labels(self, pred: Tensor, inputs: ScoringInputs) -> Tensor:
        """The detector's hard label per region (see the module docstring)."""
        probs = inputs.batch.region_cls_prob
        if probs is not None and probs.shape[-1] == pred.shape[-1]:
            return probs.argmax(-1) if self.background else probs[..., 1:].argmax(-1) + 1
        if not self.background:
            raise ValueError(f"objective {self.name!r} needs batch.region_cls_prob with the head's classes "
                             "(background first)")  # fmt: skip
        return inputs.need("region_labels", self.name)

    def score(self, pred: Tensor, inputs: ScoringInputs) -> LossOutput:
        pred, targets = inputs.regions(pred, self.name)
        return self(pred, self.hard_labels(pred, inputs), targets)

    def forward(self, logits: Tensor, labels: Tensor, targets: Tensor) -> LossOutput:
        _check(self.name, logits, targets)
        n = int(targets.sum())
        if n == 0:
            return _empty(self.name, logits)
        sel_logits, sel_labels = logits[targets].float(), labels[targets].long()
        bad = (sel_labels < 0) | (sel_labels >= logits.shape[-1])
        if bool(bad.any()):
            raise ValueError(
                f"{self.name}: region label {int(sel_labels[bad][0])} is outside 0..{logits.shape[-1] - 1}"
            )
        loss = F.cross_entropy(sel_logits, sel_labels)
        with torch.no_grad():
            acc = (sel_logits.argmax(-1) == sel_labels).float().mean()
        return LossOutput(loss, {f"{self.name}_loss": float(loss.detach()), f"{self.name}_acc": float(acc),
                                 f"{self.name}_count": n})


class RegionDistribution(MaskedRegionObjective):
    """Match the detector distribution on target regions: logits (B, R, C), probs (B, R, C), targets
    (B, R). ``kind="kl"``: sum_c p log(p / q) (0 log 0 = 0); ``kind="soft_ce"``: -sum_c p log q.
    ``average``: "region" (mean per-region value) or "region_class" (also divided by C; UNITER)."""

    output = "region_class_logits"
    batch_fields = ("region_target_mask", "region_cls_prob")
    detector = DetectorNeed(("cls_prob",), "num_region_classes")

    def __init__(self, name: str = "mrc_kl", kind: str = "kl", average: str = "region") -> None:
        super().__init__()
        if kind not in ("kl", "soft_ce"):
            raise ValueError(f"kind must be 'kl' or 'soft_ce', got {kind!r}")
        if average not in ("region", "region_class"):
            raise ValueError(f"average must be 'region' or 'region_class', got {average!r}")
        self.name, self.kind, self.average = name, kind, average

    def score(self, pred: Tensor, inputs: ScoringInputs) -> LossOutput:
        pred, targets = inputs.regions(pred, self.name)
        return self(pred, inputs.need("region_cls_prob", self.name), targets)

    def forward(self, logits: Tensor, probs: Tensor, targets: Tensor) -> LossOutput:
        _check(self.name, logits, targets)
        if probs.shape != logits.shape:
            raise ValueError(f"{self.name}: detector probs {tuple(probs.shape)} vs logits {tuple(logits.shape)}")
        n = int(targets.sum())
        if n == 0:
            return _empty(self.name, logits)
        log_q = F.log_softmax(logits[targets].float(), dim=-1)
        p = probs[targets].float()
        per_region = -(p * log_q).sum(-1)
        if self.kind == "kl":
            per_region = per_region + torch.xlogy(p, p).sum(-1)
        loss = per_region.mean()
        if self.average == "region_class":
            loss = loss / logits.shape[-1]
        with torch.no_grad():
            acc = (log_q.argmax(-1) == p.argmax(-1)).float().mean()
        return LossOutput(loss, {f"{self.name}_loss": float(loss.detach()), f"{self.name}_acc": float(acc),
                                 f"{self.name}_count": n})


class FeatureRegression(MaskedRegionObjective):
    """Regress original features of target regions: pred (B, R, F), feats (B, R, F), targets (B, R).
    Per region the error is averaged over the F dimensions, then averaged over target regions."""

    output = "region_feat_pred"
    batch_fields = ("region_target_mask", "region_targets")

    def __init__(self, name: str = "mrfr", kind: str = "l2") -> None:
        super().__init__()
        if kind not in ("l2", "smooth_l1"):
            raise ValueError(f"kind must be 'l2' or 'smooth_l1', got {kind!r}")
        self.name, self.kind = name, kind

    def score(self, pred: Tensor, inputs: ScoringInputs) -> LossOutput:
        pred, targets = inputs.regions(pred, self.name)
        return self(pred, inputs.need("region_targets", self.name), targets)

    def forward(self, pred: Tensor, feats: Tensor, targets: Tensor) -> LossOutput:
        _check(self.name, pred, targets)
        if pred.shape != feats.shape:
            raise ValueError(f"{self.name}: predicted features {tuple(pred.shape)} vs targets {tuple(feats.shape)}")
        n = int(targets.sum())
        if n == 0:
            return _empty(self.name, pred)
        p, t = pred[targets].float(), feats[targets].float()
        err = F.mse_loss(p, t, reduction="none") if self.kind == "l2" else F.smooth_l1_loss(p, t, reduction="none")
        loss = err.mean(-1).mean()
        return LossOutput(loss, {f"{self.name}_loss": float(loss.detach()), f"{self.name}_count": n})


# LXMERT's three visual losses: kind -> (model output, target field, confidence field, detector need).
_LXMERT_KINDS: dict[str, tuple[str, str, str | None, DetectorNeed | None]] = {
    "obj": ("region_class_logits", "region_labels", "region_obj_conf", DetectorNeed(("obj_id",), "num_object_labels")),
    "attr": ("region_attr_logits", "region_attr_labels", "region_attr_conf",
             DetectorNeed(("attr_id",), "num_attr_labels")),
    "feat": ("region_feat_pred", "region_targets", None, None),
}  # fmt: skip


class LxmertRegionLoss(Objective):
    """One of LXMERT's three visual losses (``kind`` "obj", "attr" or "feat").

    obj/attr: ``pred`` logits (B, R, C), ``target`` labels (B, R), ``weight`` detector confidence (B, R);
    feat: ``pred`` (B, R, F), ``target`` original features (B, R, F), ``weight`` ignored.
    loss = factor * sum over the scored regions of (per-region loss x weight) / number of real regions.
    As src/lxrt/modeling.py ``LXRTPretraining`` with lxmert_pretrain.py's labels: obj / attr are scored at
    EVERY real region (``obj_labels['obj'] = (labels, confidences)``, no mask), the feature only at the
    masked ones (``(feat, feat_mask)``); ``.mean()`` over all regions, times 1 / 0.15.
    """

    def __init__(self, kind: str, factor: float = LXMERT_VISUAL_LOSS_NORMALIZER) -> None:
        super().__init__()
        if kind not in _LXMERT_KINDS:
            raise ValueError(f"kind must be 'obj', 'attr' or 'feat', got {kind!r}")
        self.name, self.kind, self.factor = kind, kind, factor
        self.output, self._target, self._confidence, self.detector = _LXMERT_KINDS[kind]
        self.batch_fields = ("region_target_mask", self._target, *([self._confidence] if self._confidence else []),
                             "region_mask")  # fmt: skip

    def score(self, pred: Tensor, inputs: ScoringInputs) -> LossOutput:
        pred, targets = inputs.regions(pred, self.name)
        target = inputs.need(self._target, self.name)
        weight = getattr(inputs.batch, self._confidence) if self._confidence else None
        return self(pred, target, self._scored(targets, inputs), weight, inputs.batch.region_mask)

    def reads(self, inputs: ScoringInputs) -> ScoredRows:
        return ScoredRows(regions=self._scored(inputs.target_regions(self.name), inputs))

    def _scored(self, targets: Tensor, inputs: ScoringInputs) -> Tensor:
        """Class labels at every real region, the feature at the masked ones (``targets``)."""
        if self.kind == "feat":
            return targets
        real = inputs.batch.region_mask
        return real.clone() if real is not None else torch.ones_like(targets)

    def forward(
        self, pred: Tensor, target: Tensor, targets: Tensor, weight: Tensor | None = None, real: Tensor | None = None
    ) -> LossOutput:
        _check(self.name, pred, targets)
        n = int(targets.sum())
        if n == 0:
            return _empty(self.name, pred)
        num_regions = int(real.sum()) if real is not None else targets.numel()
        if self.kind == "feat":
            per_region = F.smooth_l1_loss(pred[targets].float(), target[targets].float(), reduction="none").mean(-1)
        else:
            per_region = F.cross_entropy(pred[targets].float(), target[targets].long(), reduction="none")
            if weight is not None:
                per_region = per_region * weight[targets].float()
        loss = per_region.sum() / max(num_regions, 1) * self.factor
        metrics = {f"{self.name}_loss": float(loss.detach()), f"{self.name}_count": n}
        if self.kind != "feat":
            with torch.no_grad():
                metrics[f"{self.name}_acc"] = float((pred[targets].argmax(-1) == target[targets]).float().mean())
        return LossOutput(loss, metrics)
