"""Helpers for the task tests: a tiny vocabulary, an in-memory feature store, tiny V&L encoders, and a
few optimiser steps to check that a task's loss falls."""

from __future__ import annotations

import numpy as np
import torch

from mmbert.data.batch import RegionFeatures
from mmbert.models import MODELS, build_model

WORDS = (
    "what color is the cat dog car red blue green how many are there two three yes no a an left right image "
    "both images contain at least one animal person man woman holding umbrella sitting on bench next to "
    "because he she it wants rain sunny why doing standing black white small big photo of"
).split()
FEAT_DIM = 16

# Tiny presets with regions, preferred first; whichever exist are used.
VL_TINY = [
    "visualbert_tiny",
    "uniter_tiny",
    "lxmert_tiny",
    "vilbert_tiny",
    "vl_bert_tiny",
    "unicoder_vl_tiny",
]


def vl_tiny_presets() -> list[str]:
    found = [n for n in VL_TINY if n in MODELS]
    found += [n for n in MODELS if n.endswith("_tiny") and n not in found and n != "bert_tiny"]
    return found


def make_store(image_ids, regions: int = 5, seed: int = 0, size=(100, 200)) -> dict[str, RegionFeatures]:
    """Image id -> RegionFeatures with pixel boxes inside an image of ``size`` (height, width)."""
    rng = np.random.default_rng(seed)
    store = {}
    h, w = size
    for i, image_id in enumerate(image_ids):
        n = regions - (i % 2)  # vary the region count so padding is exercised
        xy = rng.uniform(0, 0.5, (n, 2))
        wh = rng.uniform(0.1, 0.5, (n, 2))
        boxes = np.concatenate([xy, xy + wh], 1) * np.array([w, h, w, h])
        store[str(image_id)] = RegionFeatures(
            image_id=str(image_id),
            feats=rng.normal(size=(n, FEAT_DIM)).astype(np.float32),
            boxes=boxes.astype(np.float32),
            image_size=size,
        )
    return store


def tiny_encoder(name: str, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return build_model(name, **{"vocab_size": 64, "dropout": 0.0, "attn_dropout": 0.0, "init_std": 0.1, **overrides})


def tiny_task_model(task, preset: str | None = None):
    """A tiny V&L encoder (the first tiny preset unless named) under a fresh head of ``task``."""
    from mmbert.tasks.model import TaskModel

    encoder = tiny_encoder(preset or vl_tiny_presets()[0])
    return TaskModel(encoder, task.build_head(encoder))


def train_steps(task, model, dataset, steps: int = 12, batch_size: int = 4, lr: float = 3e-3) -> list[float]:
    """Full-batch-ish training on a tiny dataset; returns the loss per step."""
    from mmbert.tasks.base import loader

    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    losses = []
    batches = list(loader(dataset, batch_size, pad_token_id=model.config.pad_token_id))
    for step in range(steps):
        batch = batches[step % len(batches)]
        out = task.model_step(model, batch)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(float(out.loss.detach()))
    return losses
