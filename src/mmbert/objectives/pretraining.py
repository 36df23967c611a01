"""``Pretraining``: a pre-training model plus the objectives of its paper, one weighted loss.

``RECIPES`` is the one place that says, per ``config.model_type``, which objectives a paper pre-trains
with, how its regions are masked (see ``mmbert.data.masking``) and whether its MLM / region losses are
also taken on mismatched image-text pairs. Any of it can be overridden by name:
``Pretraining(model, objectives=["mlm", "itm"], weights={"itm": 0.5})``.

The objectives themselves (``mmbert.objectives.registry.OBJECTIVES``) say which model output and batch
fields they read and score themselves; ``Pretraining`` runs the model once, applies the recipe's
mismatched-pair rule and sums their weighted losses. Objective names: ``mlm``; ``nsp``; ``itm``
(image-text match); ``moc`` / ``mvrc`` (region class, hard detector label); ``mvrc_soft`` (soft CE to
the detector distribution, VL-BERT's original code); ``mrc_kl`` (KL to the detector distribution);
``mrfr`` (feature regression, L2); ``mrfr_smooth_l1``; ``obj`` / ``attr`` / ``feat`` (LXMERT,
confidence-weighted, x 6.67); ``qa`` (LXMERT image QA).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from mmbert.data.batch import Batch
from mmbert.models.pretraining import PretrainingModel, PretrainingOutput
from mmbert.objectives.base import LossOutput, Objective, ScoringInputs
from mmbert.objectives.mlm import IGNORE
from mmbert.objectives.registry import OBJECTIVES


@dataclass(frozen=True)
class Recipe:
    """A paper's pre-training: objectives, region masking rule ("lxmert" | "vilbert" | "zero" | None
    for text-only), and whether MLM / region targets of mismatched pairs are scored."""

    objectives: tuple[str, ...]
    region_rule: str | None
    score_mismatched: bool


RECIPES: dict[str, Recipe] = {
    "bert": Recipe(("mlm", "nsp"), None, True),
    # VisualBERT: MLM with the image + sentence-image prediction; masked-token loss on matching pairs.
    "visualbert": Recipe(("mlm", "itm"), None, False),
    # Unicoder-VL: MLM + masked object classification (detector label, features zeroed) + matching.
    "unicoder_vl": Recipe(("mlm", "moc", "itm"), "zero", False),
    # VL-BERT: MLM with visual clues + masked RoI classification with linguistic clues; no matching task.
    "vl_bert": Recipe(("mlm", "mvrc"), "zero", True),
    # UNITER: MLM / MRM only on matched pairs, ITM on its own; MRFR + MRC-KL as the region tasks.
    "uniter": Recipe(("mlm", "mrfr", "mrc_kl", "itm"), "zero", False),
    # ViLBERT: masks and scores every pair (vilbert-multi-task's concept_cap_dataset), KL region target.
    "vilbert": Recipe(("mlm", "mrc_kl", "itm"), "vilbert", True),
    # LXMERT: every pair is masked and scored (lxmert_pretrain.py); only the QA label of a mismatch is dropped.
    "lxmert": Recipe(("mlm", "obj", "attr", "feat", "itm", "qa"), "lxmert", True),
    # UNIMO's single-forward objectives: MLM, feature regression (L2) and classification against the
    # detector's soft labels, regions overlapping a masked one zeroed. Its contrastive and seq2seq losses
    # need more than one forward per batch: see mmbert.objectives.unimo.
    "unimo": Recipe(("mlm", "mrfr", "mrc_kl"), "vilbert", True),
}

OBJECTIVE_NAMES = tuple(OBJECTIVES)


def recipe_for(model_type: str) -> Recipe:
    if model_type not in RECIPES:
        raise KeyError(f"no pre-training recipe for model_type {model_type!r}; known: {sorted(RECIPES)}")
    return RECIPES[model_type]


def _need_out(out: PretrainingOutput, field: str, objective: str) -> Tensor:
    value = getattr(out, field)
    if value is None:
        raise ValueError(f"objective {objective!r} needs the model's {field}, but its heads do not produce it")
    return value


class Pretraining(nn.Module):
    """``forward(batch) -> LossOutput``: the weighted sum of the objectives' losses (``loss``) and all
    their metrics plus ``loss``. ``objectives`` default to the recipe of ``model.config.model_type``;
    ``weights`` default to 1 each (LXMERT's 6.67 lives inside its region losses, as in its code)."""

    def __init__(
        self,
        model: PretrainingModel,
        objectives: Sequence[str] | None = None,
        weights: Mapping[str, float] | None = None,
        score_mismatched: bool | None = None,
    ) -> None:
        super().__init__()
        recipe = RECIPES.get(model.config.model_type)
        if objectives is None:
            if recipe is None:
                raise KeyError(
                    f"no default objectives for model_type {model.config.model_type!r}; pass objectives=[...]"
                )
            objectives = recipe.objectives
        objectives = tuple(objectives)
        if not objectives:
            raise ValueError("at least one objective is needed")
        unknown = [o for o in objectives if o not in OBJECTIVES]
        if unknown:
            raise KeyError(f"unknown objectives {unknown}; known: {', '.join(OBJECTIVE_NAMES)}")
        weights = dict(weights or {})
        stray = sorted(set(weights) - set(objectives))
        if stray:
            raise KeyError(f"weights given for objectives not in use: {stray} (in use: {list(objectives)})")
        self.model = model
        self.objective_names = objectives
        # The MLM loss always sends the tied decoder's dense (V, D) gradient into the word embeddings, so
        # during these forwards the input lookup's gradient can be sparse: added in place instead of
        # costing a zero-filled (V, D) matrix and a dense add per step. Scoped to this objective's forward
        # (the model stays dense elsewhere), and not under DDP, whose reducer would expect a sparse grad.
        self.weights = {name: float(weights.get(name, 1.0)) for name in objectives}
        self.objectives: Mapping[str, Objective] = nn.ModuleDict({name: OBJECTIVES[name]() for name in objectives})
        self.scores_tokens = any(o.output == "mlm_logits" for o in self.objectives.values())
        self.sparse_lookup = self.scores_tokens and not (dist.is_available() and dist.is_initialized())
        self.score_mismatched = (
            score_mismatched if score_mismatched is not None else (recipe.score_mismatched if recipe else True)
        )
        produced = self._produced_outputs()
        missing = [n for n, o in self.objectives.items() if produced is not None and o.output not in produced]
        if missing:
            raise ValueError(
                f"objectives {missing} need heads that {type(model.encoder).__name__} does not have "
                f"(its heads produce: {sorted(produced or [])})"
            )

    def _produced_outputs(self) -> set[str] | None:
        """Which PretrainingOutput fields the heads fill (None when a custom region head hides it)."""
        heads = self.model.heads
        produced = set()
        if heads.mlm is not None:
            produced.add("mlm_logits")
        if heads.pair is not None:
            produced.add("pair_logits")
        if heads.answer is not None:
            produced.add("answer_logits")
        if heads.region is not None:
            decoders = getattr(heads.region, "decoders", None)
            if decoders is None:
                return None
            names = {"class": "region_class_logits", "attr": "region_attr_logits", "feat": "region_feat_pred"}
            produced |= {names[k] for k in decoders if k in names}
        return produced

    @property
    def uses_every_head(self) -> bool:
        """False when some head (or the pooler) gets no gradient: DDP then needs find_unused_parameters."""
        produced = self._produced_outputs()
        used = {o.output for o in self.objectives.values()}
        pooled_used = bool(used & {"pair_logits", "answer_logits"})
        return produced is not None and produced <= used and pooled_used

    def forward(self, batch: Batch) -> LossOutput:
        mlm_labels, region_targets = batch.mlm_labels, batch.region_target_mask
        if not self.score_mismatched and batch.pair_labels is not None:
            mismatched = batch.pair_labels == 0  # the corruption stays; only the scoring is dropped
            if mlm_labels is not None:
                mlm_labels = mlm_labels.masked_fill(mismatched[:, None], IGNORE)
            if region_targets is not None:
                region_targets = region_targets & ~mismatched[:, None]
        if self.scores_tokens:
            if mlm_labels is None:
                name = next(n for n, o in self.objectives.items() if o.output == "mlm_logits")
                raise ValueError(f"objective {name!r} needs batch.mlm_labels, which this batch does not have")
            positions = mlm_labels != IGNORE
        else:  # nothing to score: gather no token rather than project all of them onto the vocabulary
            positions = torch.zeros_like(batch.text_mask)
        inputs = batch.model_inputs()
        region_masked = getattr(batch, "region_masked", None)
        if region_masked is not None and getattr(self.model.encoder, "masked_region_input", False):
            inputs["region_masked"] = region_masked  # the model's masked-region embedding (VL-BERT, UNITER, ...)
        lookup = self.model.encoder.word_embeddings
        dense = lookup.sparse
        lookup.sparse = self.sparse_lookup or dense
        try:
            out = self.model(**inputs, mlm_positions=positions)
        finally:
            lookup.sparse = dense
        # Text-only BERT has no regions, hence no global_region; its objectives never align regions.
        where = getattr(self.model.config, "global_region", "none")
        scoring = ScoringInputs(batch, mlm_labels, region_targets, where)
        total: Tensor | None = None
        metrics: dict[str, float] = {}
        for name, objective in self.objectives.items():
            result = objective.score(_need_out(out, objective.output, name), scoring)
            weighted = result.loss * self.weights[name]
            total = weighted if total is None else total + weighted
            metrics.update(result.metrics)
        assert total is not None
        metrics["loss"] = float(total.detach())
        return LossOutput(total, metrics)
