"""Referring expressions: refs + instances, IoU targets, per-region head, falling loss, bad input."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from tasks.task_fixtures import make_store, tiny_encoder, train_steps, vl_tiny_presets

from mmbert.tasks.base import TaskDataError, TaskModel, collate
from mmbert.tasks.refexp import PAD_LOGIT, RefExpTask

SENTS = [
    "the man on the left",
    "a red car",
    "the big dog",
    "woman holding umbrella",
    "small white car",
    "person sitting on bench",
]


def write_files(tmp_path, store, suffix=".json", drop=None):
    """One ref per (image, sentence); the ground truth is one of the image's detected boxes, shifted a bit."""
    refs, anns = [], []
    for n, (image_id, feats) in enumerate(store.items()):
        for k in range(2):
            x1, y1, x2, y2 = feats.boxes[(n + k) % feats.num_regions].tolist()
            ann_id = 100 * n + k
            anns.append(
                {
                    "id": ann_id,
                    "image_id": int(image_id),
                    "bbox": [x1 + 1, y1, x2 - x1, y2 - y1],
                    "category_id": 1,
                }
            )
            refs.append(
                {
                    "ref_id": ann_id,
                    "ann_id": ann_id,
                    "image_id": int(image_id),
                    "category_id": 1,
                    "split": "val" if n == 0 else "train",
                    "file_name": f"{image_id}.jpg",
                    "sent_ids": [ann_id],
                    "sentences": [
                        {
                            "sent": SENTS[(n + k) % 6],
                            "raw": SENTS[(n + k) % 6],
                            "tokens": [],
                            "sent_id": ann_id,
                        }
                    ],
                }
            )
    if drop:
        del refs[1][drop]
    if suffix == ".json":
        (tmp_path / "refs.json").write_text(json.dumps(refs))
    else:
        (tmp_path / "refs(unc).p").write_bytes(pickle.dumps(refs))
    (tmp_path / "instances.json").write_text(json.dumps({"images": [], "annotations": anns}))
    return {
        "refs": tmp_path / ("refs.json" if suffix == ".json" else "refs(unc).p"),
        "instances": tmp_path / "instances.json",
    }


@pytest.fixture
def store():
    return make_store(["1", "2", "3", "4"])


def test_targets_are_iou_with_the_ground_truth(tmp_path, tokenizer, store):
    ds = RefExpTask(split="train").load(write_files(tmp_path, store), tokenizer, store)
    assert len(ds) == 6
    ex = ds[0]  # image 2, ground truth = its box 1 shifted by one pixel
    assert int(ex.target.argmax()) == 1 and 0.8 < float(ex.target[1]) < 1.0
    assert ex.target.shape == (store["2"].num_regions,)


@pytest.mark.parametrize("preset", ["first", "responsive"])
def test_refexp_finetunes(tmp_path, tokenizer, store, preset):
    presets = vl_tiny_presets()
    # ViLBERT keeps a whole-image region first in its vision output: the head must skip it
    name = presets[0] if preset == "first" else ("vilbert_tiny" if "vilbert_tiny" in presets else presets[-1])
    task = RefExpTask(split="train")
    ds = task.load(write_files(tmp_path, store), tokenizer, store)
    encoder = tiny_encoder(name)
    model = TaskModel(encoder, task.build_head(encoder))
    batch = collate([ds[0], ds[2]])
    logits = model(batch)
    assert logits.shape == batch.region_mask.shape
    assert bool((logits[~batch.region_mask] == PAD_LOGIT).all())
    losses = train_steps(task, model, ds, steps=20, batch_size=3, lr=3e-3)
    assert sum(losses[-2:]) < 0.7 * sum(losses[:2])
    metrics, preds = task.evaluate(model, ds, batch_size=4)
    assert metrics["split"] == "train" and metrics["num_expressions"] == 6
    path = task.write_predictions(preds, tmp_path / task.prediction_file)
    back = json.loads(path.read_text())
    assert {tuple(sorted(p)) for p in back} == {("box", "iou", "ref_id", "sent_id")}
    assert metrics["accuracy"] == 100.0 * np.mean([p["iou"] >= 0.5 for p in back])


def test_pickle_needs_explicit_trust(tmp_path, tokenizer, store):
    files = write_files(tmp_path, store, suffix=".p")
    with pytest.raises(TaskDataError, match="runs code from the file.*trust_pickle"):
        RefExpTask(split="val").load(files, tokenizer, store)
    ds = RefExpTask(split="val", trust_pickle=True).load(files, tokenizer, store)
    assert len(ds) == 2 and isinstance(ds[0].target, torch.Tensor)


def test_bad_input(tmp_path, tokenizer, store):
    with pytest.raises(TaskDataError, match=r"refs\[1\]: missing field\(s\) \['ann_id'\]"):
        RefExpTask().load(write_files(tmp_path, store, drop="ann_id"), tokenizer, store)
    files = write_files(tmp_path, store)
    partial = {k: v for k, v in store.items() if k != "3"}
    ds = RefExpTask().load(files, tokenizer, partial)
    assert len(ds) == 4 and ds.report.counts == {
        "records whose image is absent from the feature store (refexp)": 1
    }
    with pytest.raises(TaskDataError, match="no referring expressions in split 'testB'"):
        RefExpTask(split="testB").load(files, tokenizer, store)
    with pytest.raises(TaskDataError, match="need a feature store"):
        RefExpTask().load(files, tokenizer, None)
