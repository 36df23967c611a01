"""The demo's budget (``DemoPlan``; ``QUICK`` for a smoke run) and the model and trainer settings it implies."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

DEFAULT_MODEL = "visualbert_tiny"


@dataclass(frozen=True)
class DemoPlan:
    """The demo's budget. The default takes 5-6 minutes on 2 idle CPU cores; ``QUICK`` is a smoke test."""

    images: int = 2000  # world size (80 % train, 10 % val, 10 % test)
    feat_dim: int = 64  # simulated detector feature width (real detectors: 2048)
    max_objects: int = 6
    dim: int = 64
    heads: int = 4
    layers: int = 2
    ffn_dim: int = 128
    dropout: float = 0.0  # tiny models on short budgets learn faster without it
    max_text_len: int = 36  # captions name the whole scene
    # the match loss sits at chance for 900-1450 steps first (trap 4; 1450 on the v4 world): 2400 steps left
    # too little after it (VQA val: pre-trained +7.2 over text-only), 3200 leave enough (+16.9)
    pretrain_steps: int = 3200
    pretrain_batch: int = 64
    pretrain_lr: float = 2e-3
    vqa_questions: int = 1000  # the low-data fine-tuning regime
    vqa_steps: int = 600  # 19 passes over the questions; was 800, cut to pay for the longer pre-training
    vqa_batch: int = 32
    vqa_lr: float = 1e-3
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)  # fine-tuning from a pre-trained start varies by seed: average 5
    retrieval_images: int = 100
    eval_questions: int = 1000
    workers: int = 1  # data-loader processes for pre-training (masking and reading run beside the model)


QUICK = DemoPlan(images=40, dim=32, heads=2, ffn_dim=64, pretrain_steps=6, pretrain_batch=16, vqa_questions=60,
                 vqa_steps=4, vqa_batch=16, seeds=(0,), retrieval_images=4, eval_questions=20, workers=0)  # fmt: skip


# the config fields that size a region head over the detector's labels (0: no such head)
DETECTOR_HEAD_SIZES = ("num_region_classes", "num_object_labels", "num_attr_labels")


def demo_config(name: str, plan: DemoPlan, vocab_size: int, num_answers: int,
                objectives: Sequence[str] | None = None):  # fmt: skip
    """The family of preset ``name`` at the demo's width: the family's tiny layer plan (dual-stream
    models keep their tiny co-attention plan), the world's vocabulary, features and detector classes.

    A region head is sized to the world's detector where the preset has one. Where the preset has none
    (VisualBERT, as its paper: ``num_region_classes=0``) it gets one only when one of ``objectives``
    scores it (``mmbert compare``'s controlled recipe): an unscored head would be pre-trained for
    nothing and shift the initial draws of the heads that are."""
    from mmbert.data.synthetic import ATTRIBUTES, DETECTOR_CLASSES
    from mmbert.models import MODELS

    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(MODELS)}")
    family_tiny = name.rsplit("_", 1)[0] + "_tiny"
    preset = MODELS[family_tiny if family_tiny in MODELS else name]()
    names = {f.name for f in dataclasses.fields(preset)}
    over: dict[str, Any] = dict(dim=plan.dim, num_heads=plan.heads, ffn_dim=plan.ffn_dim, vocab_size=vocab_size,
                                dropout=plan.dropout, attn_dropout=plan.dropout,
                                max_positions=64, region_feat_dim=plan.feat_dim, vision_dim=plan.dim,
                                vision_heads=plan.heads, vision_ffn_dim=plan.ffn_dim, co_dim=plan.dim,
                                co_heads=plan.heads, pooled_dim=plan.dim,
                                num_region_classes=len(DETECTOR_CLASSES), num_object_labels=len(DETECTOR_CLASSES),
                                num_attr_labels=len(ATTRIBUTES), num_qa_labels=num_answers)  # fmt: skip
    if not any(n.endswith("co_ids") or n == "num_cross_layers" for n in names):
        over["num_layers"] = plan.layers
    scored = detector_sizes(objectives or ())
    for size in DETECTOR_HEAD_SIZES:
        if size in names and not getattr(preset, size) and size not in scored:
            del over[size]
    return preset.replace(**{k: v for k, v in over.items() if k in names})


def detector_sizes(objectives: Sequence[str]) -> set[str]:
    """The config fields (``DETECTOR_HEAD_SIZES``) whose heads ``objectives`` score (their detector needs)."""
    from mmbert.objectives.registry import OBJECTIVES

    needs = (OBJECTIVES[o]().detector for o in objectives if o in OBJECTIVES)
    return {need.size_key for need in needs if need is not None}


def build_encoder(config) -> nn.Module:
    from mmbert.models import model_class

    return model_class(config)(config)


def train_config(plan_steps: int, batch: int, lr: float, seed: int, quiet: bool, workers: int = 0):
    from mmbert.train.config import TrainConfig

    return TrainConfig(max_steps=plan_steps, batch_size=batch, lr=lr, warmup_steps=max(1, plan_steps // 10),
                       schedule="linear", seed=seed, device="cpu", save_every=0, keep_last=1,
                       log_every=max(1, min(10, plan_steps // 20)), progress=not quiet,
                       num_workers=workers)  # fmt: skip
