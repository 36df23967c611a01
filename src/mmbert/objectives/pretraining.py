"""``Pretraining``: a pre-training model plus the objectives of its paper, one weighted loss.

``RECIPES`` is the one place that says, per ``config.model_type`` (``recipe_key``: VOLTA's controlled
models, ``pooling="volta"``, under ``"volta"`` whatever their architecture), how a paper pre-trains as its authors'
code does: its objectives, how its tokens and regions are masked (see ``mmbert.data.masking``), whether
its MLM / region losses are also taken on mismatched image-text pairs, what an ITM negative replaces,
whether one task runs per step (UNITER's ``mix_ratio``) and whether a text-only corpus is mixed in
(VL-BERT). Any of it can be overridden by name:
``Pretraining(model, objectives=["mlm", "itm"], weights={"itm": 0.5})``.

The objectives themselves (``mmbert.objectives.registry.OBJECTIVES``) say which model output and batch
fields they read and score themselves; ``Pretraining`` runs the model once, applies the recipe's
mismatched-pair rule and sums their weighted losses. Objective names: ``mlm``; ``nsp``; ``itm``
(image-text match); ``itm_wra`` (UNITER's ITM task: matching + 0.1 x word-region alignment by optimal
transport); ``moc`` / ``mvrc`` (region class, hard detector label over all classes);
``mrc`` (UNITER's hard MRC, background excluded); ``mvrc_soft`` (soft CE to the detector distribution,
VL-BERT's original code); ``mrc_kl`` (KL to the detector distribution, mean per region: ViLBERT,
VOLTA); ``mrckl`` (UNITER's MRC-KL: mean over regions x classes); ``mrfr`` (feature regression, L2);
``mrfr_smooth_l1``; ``obj`` / ``attr`` / ``feat`` (LXMERT, confidence-weighted, x 6.67); ``qa`` (LXMERT
image QA).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mmbert.config import ModelConfig
from mmbert.data.batch import Batch
from mmbert.models.base import ScoredRows
from mmbert.models.pretraining import PretrainingModel, PretrainingOutput
from mmbert.nn.tied import TiedEmbedding
from mmbert.objectives.base import LossOutput, Objective, ScoringInputs
from mmbert.objectives.mlm import IGNORE
from mmbert.objectives.registry import OBJECTIVES


@dataclass(frozen=True)
class Recipe:
    """A paper's pre-training, as its authors' code runs it.

    objectives; region_rule ("lxmert" | "vilbert" | "vilbert_beta" | "vl_bert" | "uniter" | "zero" | None
    for text-only); score_mismatched: whether MLM / region targets of mismatched pairs are scored;
    negative: what an ITM negative replaces ("caption" | "image"); mix_ratio: one task per step drawn by
    these weights (one per objective; None: every objective in every step); whole_word / word_action /
    force_one: token masking (``mask_tokens``); random_tokens: where random MLM replacements come from,
    "vocab" (all ids) or "word_pieces" (UNITER: ``Tokenizer.word_piece_range``); text_ratio: text-only
    corpus examples per caption example in a step (VL-BERT: one batch of each), 0 for none; source: the
    authors' files."""

    objectives: tuple[str, ...]
    region_rule: str | None
    score_mismatched: bool
    negative: str = "caption"
    mix_ratio: tuple[float, ...] | None = None
    whole_word: bool = False
    word_action: bool = False
    force_one: bool = False
    random_tokens: str = "vocab"
    text_ratio: float = 0.0
    source: str = ""


RECIPES: dict[str, Recipe] = {
    "bert": Recipe(("mlm", "nsp"), None, True,
                   source="google-research/bert create_pretraining_data.py / run_pretraining.py"),
    # VisualBERT: MLM with the image + sentence-image prediction; masked-token loss on matching pairs.
    "visualbert": Recipe(("mlm", "itm"), None, False,
                         source="uclanlp/visualbert pytorch_pretrained_bert/modeling.py, dataloaders/coco_dataset.py"),
    # Unicoder-VL: MLM + masked object classification (detector label, features zeroed) + matching (no code).
    "unicoder_vl": Recipe(("mlm", "moc", "itm"), "zero", False, source="the paper (arXiv:1908.06066); no code"),
    # VL-BERT: MLM with visual clues (whole words) + masked RoI classification against the detector's
    # distribution (soft CE); 90 % / 10 % region masking; no matching task; a text-only corpus mixed in
    # (cfgs/pretrain/*.yaml: Conceptual Captions and BookCorpus + English Wikipedia, BATCH_IMAGES [32, 32] =
    # one batch of each per step, the two MLM losses summed).
    "vl_bert": Recipe(("mlm", "mvrc_soft"), "vl_bert", True, whole_word=True, word_action=True, text_ratio=1.0,
                      source="jackroos/VL-BERT pretrain/data/datasets/conceptual_captions.py, general_corpus.py, "
                             "pretrain/modules/resnet_vlbert_for_pretraining_multitask.py, common/utils/misc.py"),
    # UNITER: one task per step (itm : mlm : mrfr : mrckl = 2 : 2 : 1 : 1), conditional masking, image
    # negatives, at least one masked token / region, replacement tokens from its v_range; its ITM task adds
    # 0.1 x the word-region alignment (optimal transport) loss (itm_ot_lambda in its pre-training configs).
    "uniter": Recipe(("itm_wra", "mlm", "mrfr", "mrckl"), "uniter", False, negative="image", mix_ratio=(2, 2, 1, 1),
                     force_one=True, random_tokens="word_pieces",
                     source="ChenRocks/UNITER pretrain.py, data/mlm.py, data/mrm.py, data/itm.py, model/pretrain.py, "
                            "model/ot.py, config/pretrain-*.json"),
    # ViLBERT: masks and scores every pair; 90 % zeroed / 10 % kept regions, IoU > 0.4 overlaps only in the
    # whole-image feature's divisor; KL region target.
    "vilbert": Recipe(("mlm", "mrc_kl", "itm"), "vilbert", True,
                      source="facebookresearch/vilbert-multi-task vilbert/datasets/concept_cap_dataset.py, "
                             "vilbert/vilbert.py, train_concap.py"),
    # VOLTA's controlled models (ctrl_lxmert, ctrl_visualbert, ctrl_uniter, ctrl_vl_bert; ctrl_vilbert is
    # ViLBERT's own recipe) all pre-train as VOLTA's ViLBERT: MLM, KL to the detector's distribution
    # (visual target 0, kl_1601) and matching, every pair masked and scored, the ViLBERT region rule.
    "volta": Recipe(("mlm", "mrc_kl", "itm"), "vilbert", True,
                    source="e-bug/volta volta/losses.py, volta/datasets/concept_cap_dataset.py, train_concap.py, "
                           "config/ctrl_*.json"),
    # LXMERT: every pair is masked and scored (lxmert_pretrain.py); only the QA label of a mismatch is dropped.
    "lxmert": Recipe(("mlm", "obj", "attr", "feat", "itm", "qa"), "lxmert", True,
                     source="airsplay/lxmert src/pretrain/lxmert_pretrain.py, src/lxrt/modeling.py"),
    # UNIMO's single-forward objectives: MLM, feature regression (L2) and classification against the
    # detector's soft labels, regions overlapping a masked one zeroed ("unimo" rule). Its contrastive and
    # seq2seq losses need more than one forward per batch: see mmbert.objectives.unimo.
    "unimo": Recipe(("mlm", "mrfr", "mrc_kl"), "unimo", True, source="PaddlePaddle/Research NLP/UNIMO"),
}

OBJECTIVE_NAMES = tuple(OBJECTIVES)


def recipe_key(config: ModelConfig) -> str:
    """The ``RECIPES`` key of a config: ``"volta"`` for VOLTA's controlled models (``pooling="volta"``),
    which pre-train by VOLTA's recipe rather than their own papers', else its ``model_type``."""
    return "volta" if getattr(config, "pooling", "cls") == "volta" else config.model_type


def recipe_for(model: str | ModelConfig) -> Recipe:
    """The recipe of a config (see ``recipe_key``) or of a ``model_type``."""
    key = model if isinstance(model, str) else recipe_key(model)
    if key not in RECIPES:
        raise KeyError(f"no pre-training recipe for model_type {key!r}; known: {sorted(RECIPES)}")
    return RECIPES[key]


def _need_out(out: PretrainingOutput, field: str, objective: str) -> Tensor:
    value = getattr(out, field)
    if value is None:
        raise ValueError(f"objective {objective!r} needs the model's {field}, but its heads do not produce it")
    return value


class Pretraining(nn.Module):
    """``forward(batch) -> LossOutput``: the weighted sum of the objectives' losses (``loss``) and all
    their metrics plus ``loss``. ``objectives`` default to the recipe of ``model.config`` (``recipe_key``);
    ``weights`` default to 1 each (LXMERT's 6.67 lives inside its region losses, as in its code).
    A batch with a ``task`` (a task schedule, UNITER) computes that one objective only; a batch with a
    ``text_batch`` (a text-only corpus mixed in, VL-BERT) adds its MLM loss, reported as ``mlm_text``.

    ``scored_rows_only`` (on by default): the model's last layer computes only the rows of its final
    states that the active objectives read (``Objective.reads``: the labelled tokens, the target regions,
    the pooled positions), keys and values still at every real row: the same loss and gradients for
    fewer FLOPs. It applies when every active objective declares its rows (word-region alignment, e.g.,
    reads all of them: then every row is computed) and the model takes ``scored_rows``. Off: every row."""

    def __init__(
        self,
        model: PretrainingModel,
        objectives: Sequence[str] | None = None,
        weights: Mapping[str, float] | None = None,
        score_mismatched: bool | None = None,
        scored_rows_only: bool = True,
    ) -> None:
        super().__init__()
        recipe = RECIPES.get(recipe_key(model.config))
        if objectives is None:
            if recipe is None:
                raise KeyError(
                    f"no default objectives for model_type {recipe_key(model.config)!r}; pass objectives=[...]"
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
        self.weights = {name: float(weights.get(name, 1.0)) for name in objectives}
        self.objectives: Mapping[str, Objective] = nn.ModuleDict({name: OBJECTIVES[name]() for name in objectives})
        self.scores_tokens = any(o.output == "mlm_logits" for o in self.objectives.values())
        self.scheduled = False  # set when batches carry one task each (a step leaves the other heads unused)
        self.scored_rows_only = scored_rows_only
        self.score_mismatched = (
            score_mismatched if score_mismatched is not None else (recipe.score_mismatched if recipe else True)
        )
        for objective in self.objectives.values():
            check = getattr(objective, "check_model", None)  # objectives that run on some models only
            if check is not None:
                check(model.config)
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
        if self.scheduled:
            return False
        produced = self._produced_outputs()
        used = {o.output for o in self.objectives.values()}
        pooled_used = bool(used & {"pair_logits", "answer_logits"})
        return produced is not None and produced <= used and pooled_used

    def forward(self, batch: Batch) -> LossOutput:
        task = getattr(batch, "task", None)
        if task is not None and task not in self.objectives:
            raise KeyError(f"the batch is for task {task!r}, which is not among the objectives {list(self.objectives)}")
        names = [task] if task is not None else list(self.objectives)
        mlm_labels, region_targets = batch.mlm_labels, batch.region_target_mask
        if not self.score_mismatched and batch.pair_labels is not None:
            mismatched = batch.pair_labels == 0  # the corruption stays; only the scoring is dropped
            if mlm_labels is not None:
                mlm_labels = mlm_labels.masked_fill(mismatched[:, None], IGNORE)
            if region_targets is not None:
                region_targets = region_targets & ~mismatched[:, None]
        inputs = batch.encoder_inputs(self.model.encoder)  # with the pixel sizes where it takes them (VL-BERT)
        region_masked = getattr(batch, "region_masked", None)
        if region_masked is not None and getattr(self.model.encoder, "masked_region_input", False):
            inputs["region_masked"] = region_masked  # the model's masked-region embedding (VL-BERT, UNITER, ...)
        global_feats = getattr(batch, "global_feats", None)
        if global_feats is not None:
            inputs["global_feats"] = global_feats  # the loader's whole-image feature (ViLBERT's rules)
        token_objective = next((n for n in names if self.objectives[n].output == "mlm_logits"), None)
        # Text-only BERT has no regions, hence no global_region; its objectives never align regions.
        where = getattr(self.model.config, "global_region", "none")
        scoring = ScoringInputs(batch, mlm_labels, region_targets, where)
        scoring.outputs = out = self._run_model(inputs, mlm_labels, token_objective, self._scored_rows(names, scoring))
        total: Tensor | None = None
        metrics: dict[str, float] = {}
        for name in names:
            objective = self.objectives[name]
            result = objective.score(_need_out(out, objective.output, name), scoring)
            weighted = result.loss * self.weights[name]
            total = weighted if total is None else total + weighted
            metrics.update(result.metrics)
        text_batch = getattr(batch, "text_batch", None)
        if text_batch is not None:
            result, weight = self._score_text(text_batch)
            total = total + result.loss * weight
            metrics.update(result.metrics)
        assert total is not None
        metrics["loss"] = float(total.detach())
        return LossOutput(total, metrics)

    def _scored_rows(self, names: Sequence[str], inputs: ScoringInputs) -> ScoredRows | None:
        """The union of the rows the objectives ``names`` read (``scored_rows_only``), or None: every row
        (it is off, the model takes none, or some objective reads every row)."""
        if not (self.scored_rows_only and self.model.encoder.takes_scored_rows):
            return None
        union = ScoredRows()
        for name in names:
            reads = self.objectives[name].reads(inputs)
            if reads is None:
                return None
            union = union.union(reads)
        return union

    def _run_model(
        self,
        inputs: dict,
        mlm_labels: Tensor | None,
        token_objective: str | None,
        scored_rows: ScoredRows | None = None,
    ) -> PretrainingOutput:
        """The model's forward, its MLM logits gathered at the labelled tokens when a token objective runs,
        its last layer computed at ``scored_rows`` only (when given)."""
        if token_objective is not None:
            if mlm_labels is None:
                raise ValueError(f"objective {token_objective!r} needs batch.mlm_labels, which this batch lacks")
            positions = mlm_labels != IGNORE
        else:  # nothing to score: gather no token rather than project all of them onto the vocabulary
            positions = torch.zeros_like(inputs["text_mask"] if inputs.get("text_mask") is not None
                                         else inputs["text_ids"], dtype=torch.bool)  # fmt: skip
        if scored_rows is not None:
            inputs = {**inputs, "scored_rows": scored_rows}
        lookup = self.model.encoder.word_embeddings
        # The decoder scores tokens, so it sends a dense (V, D) gradient into the word embeddings: the lookup
        # adds its rows into that matrix instead of costing a (V, D) sum per step (mmbert.nn.tied).
        pair = token_objective is not None and isinstance(lookup, TiedEmbedding)
        with lookup.paired() if pair else nullcontext():
            return self.model(**inputs, mlm_positions=positions)

    def _score_text(self, text: Batch) -> tuple[LossOutput, float]:
        """MLM on a text-only batch (VL-BERT's general-corpus stream): its own mean, reported as mlm_text_*."""
        if "mlm" not in self.objectives:
            raise ValueError("the batch carries a text-only stream (text_batch) but 'mlm' is not an objective")
        if text.mlm_labels is None:
            raise ValueError("the text-only batch (text_batch) has no mlm_labels")
        where = getattr(self.model.config, "global_region", "none")
        scoring = ScoringInputs(text, text.mlm_labels, None, where)
        out = self._run_model(text.model_inputs(), text.mlm_labels, "mlm", self._scored_rows(["mlm"], scoring))
        result = self.objectives["mlm"].score(out.mlm_logits, scoring)
        metrics = {k.replace("mlm_", "mlm_text_", 1): v for k, v in result.metrics.items()}
        return LossOutput(result.loss, metrics), self.weights["mlm"]
