"""Task batches carry each image's pixel size from the feature store, so a VL-BERT task (fine-tuning,
evaluation, retrieval pools) gives the whole image the same box [0, 0, w - 1, h - 1] as pre-training."""

from __future__ import annotations

import json

import torch
from tasks.task_fixtures import make_store, tiny_encoder
from tasks.test_gqa_snli_ve import SNLI_VE
from tasks.test_retrieval import write_karpathy

from mmbert.tasks import TASKS, TaskModel
from mmbert.tasks.base import collate
from mmbert.tasks.retrieval import match_score, select_pairs

# VL-BERT's visual LayerNorm gains start at 0 (the paper's), which hides the boxes at init: open them here
OPEN_VISUAL = {"visual_scale_init": 1.0}


def _vl_bert_task(tmp_path, tokenizer):
    (tmp_path / "ve.jsonl").write_text("".join(json.dumps(r) + "\n" for r in SNLI_VE))
    task = TASKS["snli-ve"]()
    ds = task.load({"jsonl": tmp_path / "ve.jsonl"}, tokenizer, make_store(["1", "2", "3"], size=(90, 160)))
    encoder = tiny_encoder("vl_bert_tiny", **OPEN_VISUAL)
    return ds, TaskModel(encoder, task.build_head(encoder)).eval()


def test_collate_keeps_each_image_size(tmp_path, tokenizer):
    ds, _ = _vl_bert_task(tmp_path, tokenizer)
    batch = collate([ds[0], ds[1]])
    assert batch.image_size.tolist() == [[90, 160], [90, 160]]  # (height, width) as the store has them
    picked = select_pairs(batch, torch.tensor([0, 1, 0]), torch.tensor([1, 1, 0]))
    assert picked.image_size.tolist() == [[90, 160]] * 3


def test_vl_bert_task_forward_uses_the_pixel_whole_image_box(tmp_path, tokenizer):
    """Regression: task batches had no image_size, so VL-BERT fell back to the box [0, 0, 1, 1]."""
    ds, model = _vl_bert_task(tmp_path, tokenizer)
    batch = collate([ds[0], ds[1]])
    size = torch.tensor([[90, 160], [90, 160]])
    with torch.no_grad():
        got = model(batch)
        pixel = model.head(model.encoder(**batch.model_inputs(), image_size=size), batch)
        unit = model.head(model.encoder(**batch.model_inputs()), batch)
    torch.testing.assert_close(got, pixel, rtol=0, atol=0)
    assert not torch.allclose(pixel, unit)  # the box matters, so the check above can fail


def test_retrieval_pool_scores_use_the_pixel_box(tmp_path, tokenizer):
    """The evaluation pool (its own padding path) scores each pair with the pixel box too."""
    task = TASKS["retrieval"](negatives=1)
    store = make_store([str(1000 + i) for i in range(8)], size=(90, 160))
    ds = task.load({"karpathy": write_karpathy(tmp_path / "k.json")}, tokenizer, store)
    encoder = tiny_encoder("vl_bert_tiny", **OPEN_VISUAL)
    model = TaskModel(encoder, task.build_head(encoder)).eval()
    scores = task.score_matrix(model, ds, batch_size=64)
    images = list(ds.info["images"])
    with torch.no_grad():
        for i in (0, 1):
            item = ds[i]
            one = collate([item])
            enc = model.encoder(**one.model_inputs(), image_size=torch.tensor([[90, 160]]))
            own = match_score(model.head(enc, one))[0]
            assert abs(float(scores[i, images.index(item.meta["image"])]) - float(own)) < 1e-5
