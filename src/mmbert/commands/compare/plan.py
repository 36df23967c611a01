"""What ``mmbert compare`` runs: the models, the two pre-training settings, the budget and the sizes.

The default plan is sized so that the whole default grid (seven V&L models and text-only BERT, paper and
controlled settings, no-pre-training ablation, two tasks, three seeds) fits in an hour on 2 CPU cores;
``QUICK`` is the seconds-long version the tests run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from mmbert.commands.demo.plan import QUICK as QUICK_DEMO
from mmbert.commands.demo.plan import DemoPlan
from mmbert.objectives.pretraining import Recipe

# The seven vision-and-language models of the survey, and the language-prior baseline.
VL_MODELS = ("vilbert", "lxmert", "visualbert", "unicoder_vl", "vl_bert", "uniter", "unimo")
TEXT_MODEL = "bert"
ALL_MODELS = (*VL_MODELS, TEXT_MODEL)

# Pre-training settings. "paper": each model's own recipe (objectives.RECIPES); "controlled": VOLTA's
# ctrl_* study, one objective set for every model; "none": the no-pre-training ablation (random init).
# Text-only BERT has one recipe (MLM + NSP on the training captions), run once as "text".
PAPER, CONTROLLED, NONE, TEXT = "paper", "controlled", "none", "text"
SETTINGS = (PAPER, CONTROLLED)

# VOLTA's controlled setting (e-bug/volta config/ctrl_*.json): masked LM, KL to the detector's class
# distribution on masked regions (visual_target_weights {"0": 1}) and image-text matching, every objective
# every step, mismatched pairs scored. Masked regions are zeroed (15 %): VOLTA's loaders use ViLBERT's rule,
# whose pre-training whole-image feature needs a whole-image region that not every model here has.
CONTROLLED_RECIPE = Recipe(("mlm", "mrc_kl", "itm"), "zero", True,
                           source="e-bug/volta config/ctrl_*.json, volta/losses.py, volta/datasets/")  # fmt: skip

DEFAULT_TASKS = ("vqa", "refexp")


@dataclass(frozen=True)
class ComparePlan:
    """The grid's budget. ``demo`` sizes the world, the models and the pre-training (``pretrain_steps``
    is ``--budget``); the rest sizes each fine-tuning cell."""

    demo: DemoPlan = DemoPlan(pretrain_steps=200, pretrain_batch=32, workers=0)
    finetune_steps: int = 150
    finetune_batch: int = 32
    finetune_lr: float = 1e-3
    train_items: int = 2000  # fine-tuning examples per task (the first ones of its training split)
    eval_items: int = 500  # held-out test examples scored per task
    retrieval_images: int = 100  # test images of the retrieval pool (5 captions each)
    text_pretrain_steps: int | None = None  # BERT's budget; None = the same as the V&L models'


PLAN = ComparePlan()
QUICK = ComparePlan(demo=dataclasses.replace(QUICK_DEMO, pretrain_steps=4), finetune_steps=3, finetune_batch=8,
                    train_items=24, eval_items=16, retrieval_images=4)  # fmt: skip


def with_budget(plan: ComparePlan, steps: int | None) -> ComparePlan:
    """``plan`` with ``steps`` pre-training steps per (model, setting, seed) (``--budget``)."""
    if steps is None:
        return plan
    if steps < 1:
        raise ValueError(f"--budget must be a positive number of pre-training steps, got {steps}")
    return dataclasses.replace(plan, demo=dataclasses.replace(plan.demo, pretrain_steps=steps))


def preset_name(model: str) -> str:
    """The registry preset a model of the comparison is built from (its family's tiny preset)."""
    return f"{model}_tiny"


def parse_names(text: str, known: Sequence[str], flag: str, what: str, normalise=lambda s: s) -> list[str]:
    """A comma-separated option value as a list of known names, in order, each once (an unknown one is
    refused, naming it and the known ones)."""
    names = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        name = normalise(item)
        if name not in known:
            raise KeyError(f"{flag}: unknown {what} {item!r}; available: {', '.join(known)}")
        if name not in names:
            names.append(name)
    if not names:
        raise ValueError(f"{flag}: no {what} named")
    return names


def parse_models(text: str) -> list[str]:
    """``all`` or a comma-separated list of model families (``vilbert``) or tiny presets (``vilbert_tiny``)."""
    if text.strip() == "all":
        return list(ALL_MODELS)
    return parse_names(text, ALL_MODELS, "--models", "model", lambda s: s.removesuffix("_tiny"))


def parse_settings(text: str) -> list[str]:
    if text == "both":
        return list(SETTINGS)
    if text not in SETTINGS:
        raise ValueError(f"--setting must be paper, controlled or both, got {text!r}")
    return [text]
