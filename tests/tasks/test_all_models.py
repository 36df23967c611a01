"""Every task head on every tiny V&L preset: one batch, logits of the task's shape, finite loss, gradients."""

from __future__ import annotations

import json

import pytest
import torch
from tasks.task_fixtures import make_store, tiny_encoder, vl_tiny_presets
from tasks.test_caption import coco_file
from tasks.test_flickr30k_entities import store as flickr_store
from tasks.test_flickr30k_entities import write_files as write_flickr
from tasks.test_gqa_snli_ve import GQA, SNLI_VE
from tasks.test_nlvr2 import all_images
from tasks.test_nlvr2 import write_jsonl as write_nlvr2
from tasks.test_refexp import write_files as write_refexp
from tasks.test_retrieval import write_karpathy
from tasks.test_vcr import write_jsonl as write_vcr
from tasks.test_vqa import write_official

from mmbert.tasks import TASKS, TaskModel
from mmbert.tasks.base import collate
from mmbert.tasks.caption import supports_visibility_mask


def task_setup(name, tmp_path):
    if name == "vqa":
        return TASKS[name](min_answer_count=1), write_official(tmp_path), make_store([10, 11, 12, 13]), (2, 7)
    if name == "nlvr2":
        return TASKS[name](), {"data": write_nlvr2(tmp_path / "d.json")}, make_store(all_images()), (2, 2)
    if name == "retrieval":
        store = make_store([str(1000 + i) for i in range(8)])
        return TASKS[name](negatives=1), {"karpathy": write_karpathy(tmp_path / "k.json")}, store, (4, 2)
    if name == "refexp":
        store = make_store(["1", "2", "3", "4"])
        return TASKS[name](), write_refexp(tmp_path, store), store, None
    if name == "caption":
        return TASKS[name](max_regions=None), {"captions": coco_file(tmp_path)}, make_store(["1", "2", "3"]), None
    if name == "gqa":
        (tmp_path / "gqa.json").write_text(json.dumps(GQA))
        return TASKS[name](), {"lxmert": tmp_path / "gqa.json"}, make_store(["1", "2", "3"]), (2, 3)
    if name == "snli-ve":
        pairs = SNLI_VE + [{**r, "pairID": r["pairID"] + "b"} for r in SNLI_VE]  # pairIDs are unique
        (tmp_path / "ve.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pairs))
        return TASKS[name](), {"jsonl": tmp_path / "ve.jsonl"}, make_store(["1", "2", "3"]), (2, 3)
    if name == "flickr30k-entities":
        return TASKS[name](max_regions=None), write_flickr(tmp_path), flickr_store(), None
    assert name == "vcr", f"add task {name!r} to task_setup"
    return (
        TASKS[name](),
        {"data": write_vcr(tmp_path / "v.jsonl")},
        make_store(["val-0", "val-1", "val-2"]),
        (2, 4),
    )


@pytest.mark.parametrize("task_name", list(TASKS))
@pytest.mark.parametrize("preset", vl_tiny_presets())
def test_task_head_on_every_model(tmp_path, tokenizer, preset, task_name):
    task, files, store, shape = task_setup(task_name, tmp_path)
    ds = task.load(files, tokenizer, store)
    encoder = tiny_encoder(preset)
    if task_name == "caption" and not supports_visibility_mask(encoder):
        with pytest.raises(ValueError, match="single-stream"):  # captioning runs on one joint sequence
            task.build_head(encoder)
        return
    model = TaskModel(encoder, task.build_head(encoder))
    batch = collate([ds[0], ds[3]] if task_name != "retrieval" else [ds[0], ds[1], ds[2], ds[3]])
    if task_name in ("retrieval", "caption", "flickr30k-entities"):
        out = task.model_step(model, batch)  # retrieval: 4 captions x (1 positive + 1 negative)
    else:
        logits = model(batch)
        assert logits.shape == (shape or batch.region_mask.shape)
        out = task.loss(logits, batch)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    head_grads = [p.grad for p in model.head.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in head_grads)
