"""``UnimoPretraining``: UNIMO's pre-training on a mixed ``UnimoBatch`` (pairs, texts, images), one loss.

Objectives (any subset, by name; weights 1 by default):

- ``mlm`` — span-masked LM on the pairs' captions (with the image) and on the text-only sentences;
- ``mrfr`` / ``mrc_kl`` — masked region feature regression (L2) and classification against the
  detector's soft labels, on the pairs' regions and on the image-only images (the registry's
  objectives, ``mmbert.objectives.registry``);
- ``cmcl`` — cross-modal contrastive learning (``mmbert.objectives.cmcl``): the pair's image encoded
  alone (unmasked regions, [IMG] pooler) against its text variants encoded alone ([CLS] pooler), plus
  the images retrieved from the image-only pool (encoded alone) as extra positives when the batch has them;
- ``seq2seq`` — generation: the caption from the regions under the captioning mask, and the text-only
  sentences' second part from their first under the seq2seq mask; each target position predicts the
  next token through the tied LM head (the target starts with [CLS]; its last token is the end marker).

Every forward the batch needs is run here; the single-forward objectives score through the same
``Objective.score`` as every other model's pre-training.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmbert.models import PretrainingModel
from mmbert.nn.masks import captioning_mask, seq2seq_mask
from mmbert.objectives.base import LossOutput, ScoringInputs
from mmbert.objectives.cmcl import cmcl_loss
from mmbert.objectives.mlm import IGNORE
from mmbert.objectives.registry import OBJECTIVES

UNIMO_OBJECTIVES = ("mlm", "mrfr", "mrc_kl", "cmcl", "seq2seq")
SINGLE_FORWARD = ("mlm", "mrfr", "mrc_kl")


class UnimoPretraining(nn.Module):
    def __init__(
        self,
        model: PretrainingModel,
        objectives: Sequence[str] | None = None,
        weights: Mapping[str, float] | None = None,
        temperature: float = 0.07,
    ) -> None:
        super().__init__()
        if model.config.model_type != "unimo":
            raise ValueError(f"UnimoPretraining trains UNIMO, got a {model.config.model_type!r} model")
        names = tuple(objectives) if objectives is not None else UNIMO_OBJECTIVES
        unknown = [n for n in names if n not in UNIMO_OBJECTIVES]
        if unknown or not names:
            raise KeyError(f"unknown UNIMO objectives {unknown}; known: {', '.join(UNIMO_OBJECTIVES)}")
        weights = dict(weights or {})
        stray = sorted(set(weights) - set(names))
        if stray:
            raise KeyError(f"weights given for objectives not in use: {stray} (in use: {list(names)})")
        if temperature <= 0:
            raise ValueError(f"CMCL temperature must be positive, got {temperature}")
        self.model = model
        self.objective_names = names
        self.weights = {n: float(weights.get(n, 1.0)) for n in names}
        self.scorers = nn.ModuleDict({n: OBJECTIVES[n]() for n in names if n in SINGLE_FORWARD})
        self.temperature = temperature
        self.score_mismatched = True  # no image-text matching: every pair matches
        self.uses_every_head = False  # the tag / region heads idle on some batches: DDP must look for them

    # ---------------------------------------------------------------------------------------------
    def forward(self, batch) -> LossOutput:
        terms: dict[str, list[Tensor]] = {n: [] for n in self.objective_names}
        metrics: dict[str, float] = {}
        region_names = [n for n in ("mrfr", "mrc_kl") if n in self.scorers]
        for part, sub in (("pair", batch.pairs), ("image", batch.images)):
            if sub is None or not ("mlm" in self.scorers and part == "pair" or region_names):
                continue
            self._single_forward(part, sub, terms, metrics, region_names)
        if batch.text_ids is not None and "mlm" in self.scorers:
            positions = batch.mlm_labels != IGNORE
            out = self.model(batch.text_ids, text_mask=batch.text_mask, mlm_positions=positions)
            r = self.scorers["mlm"].score(out.mlm_logits, ScoringInputs(batch, batch.mlm_labels, None))
            terms["mlm"].append(r.loss)
            metrics.update({f"text_{k}": v for k, v in r.metrics.items()})
        if "cmcl" in terms and batch.pairs is not None:
            r = self._cmcl(batch)
            terms["cmcl"].append(r.loss)
            metrics.update(r.metrics)
        if "seq2seq" in terms:
            for r in self._seq2seq(batch):
                terms["seq2seq"].append(r.loss)
                metrics.update(r.metrics)
        total: Tensor | None = None
        for name, losses in terms.items():
            for loss in losses:
                total = loss * self.weights[name] if total is None else total + loss * self.weights[name]
        if total is None:
            raise ValueError(
                f"this batch has nothing for the objectives {list(self.objective_names)} to score"
            )
        metrics["loss"] = float(total.detach())
        return LossOutput(total, metrics)

    def _single_forward(self, part, sub, terms, metrics, region_names) -> None:
        """MLM (pairs) and the region objectives on one forward of the pairs or the image-only images."""
        use_mlm = part == "pair" and "mlm" in self.scorers
        positions = (sub.mlm_labels != IGNORE) if use_mlm else None
        out = self.model(
            sub.text_ids if part == "pair" else None,
            text_mask=sub.text_mask if part == "pair" else None,
            region_feats=sub.region_feats,
            region_boxes=sub.region_boxes,
            region_mask=sub.region_mask,
            region_masked=sub.region_masked,
            mlm_positions=positions,
        )
        inputs = ScoringInputs(sub, sub.mlm_labels if use_mlm else None, sub.region_target_mask, "first")
        for name in (["mlm"] if use_mlm else []) + region_names:
            field = self.scorers[name].output
            r = self.scorers[name].score(getattr(out, field), inputs)
            terms[name].append(r.loss)
            metrics.update({f"{part}_{k}": v for k, v in r.metrics.items()})

    def _cmcl(self, batch) -> LossOutput:
        enc, p = self.model.encoder, batch.pairs
        image = enc(
            None, region_feats=p.region_targets, region_boxes=p.region_boxes, region_mask=p.region_mask
        )
        n, k, t = batch.variant_ids.shape
        valid = batch.variant_valid
        texts = enc(batch.variant_ids[valid], text_mask=batch.variant_mask[valid]).pooled
        pooled = texts.new_zeros(n, k, texts.shape[-1])
        pooled[valid] = texts
        retrieved = None
        if batch.retrieved_feats is not None:  # images of the image-only pool retrieved as extra positives
            retrieved = enc(None, region_feats=batch.retrieved_feats, region_boxes=batch.retrieved_boxes,
                            region_mask=batch.retrieved_mask).pooled_vision  # fmt: skip
        return cmcl_loss(image.pooled_vision, pooled, batch.variant_positive, valid, self.temperature,
                         retrieved=retrieved, image_positive=batch.image_positive)  # fmt: skip

    def _seq2seq(self, batch) -> list[LossOutput]:
        out: list[LossOutput] = []
        enc, lm = self.model.encoder, self.model.heads.mlm
        if batch.pairs is not None:  # captioning: regions (+ [IMG]) see each other, the caption is causal
            p = batch.pairs
            ids, mask = batch.caption_ids[:, :-1], batch.caption_mask[:, :-1]
            labels = batch.caption_ids[:, 1:].masked_fill(~batch.caption_mask[:, 1:], IGNORE)
            vision = torch.cat([torch.ones_like(p.region_mask[:, :1]), p.region_mask], 1)
            visible = captioning_mask(mask, vision)
            h = enc(ids, text_mask=mask, region_feats=p.region_targets, region_boxes=p.region_boxes,
                    region_mask=p.region_mask, attention_mask=visible).text  # fmt: skip
            out.append(_next_token_loss(lm, h, labels, "caption"))
        if batch.source_ids is not None:  # text: the source sees itself, the target is causal
            src, src_mask = batch.source_ids, batch.source_mask
            tgt, tgt_mask = batch.target_ids[:, :-1], batch.target_mask[:, :-1]
            labels = batch.target_ids[:, 1:].masked_fill(~batch.target_mask[:, 1:], IGNORE)
            offset = self.model.config.position_offset
            positions = (
                torch.cat([torch.arange(src.shape[1]), torch.arange(tgt.shape[1])]).to(src.device) + offset
            )
            h = enc(torch.cat([src, tgt], 1), text_mask=torch.cat([src_mask, tgt_mask], 1),
                    attention_mask=seq2seq_mask(src_mask, tgt_mask),
                    text_positions=positions.expand(src.shape[0], -1)).text  # fmt: skip
            out.append(_next_token_loss(lm, h[:, src.shape[1] :], labels, "text"))
        return out


def _next_token_loss(lm: nn.Module, hidden: Tensor, labels: Tensor, part: str) -> LossOutput:
    """hidden (B, T, D) at the target inputs; labels (B, T) the next tokens (-100 = none)."""
    selected = labels != IGNORE
    if not bool(selected.any()):
        zero = hidden.sum() * 0.0
        return LossOutput(zero, {f"{part}_seq2seq_loss": 0.0})
    logits = lm(hidden, selected)
    loss = F.cross_entropy(logits.float(), labels[selected])
    with torch.no_grad():
        acc = (logits.argmax(-1) == labels[selected]).float().mean()
    return LossOutput(loss, {f"{part}_seq2seq_loss": float(loss.detach()), f"{part}_seq2seq_acc": float(acc)})
