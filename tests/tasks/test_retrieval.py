"""Retrieval: Karpathy JSON, in-batch / hard negatives, falling loss, full-pool recall, zero-shot."""

from __future__ import annotations

import json

import pytest
import torch
from tasks.task_fixtures import make_store, tiny_encoder, tiny_task_model, train_steps, vl_tiny_presets

from mmbert.models.dual_stream import DualStreamModel
from mmbert.models.pretraining import PretrainingModel
from mmbert.tasks.base import TaskDataError, TaskModel, collate
from mmbert.tasks.retrieval import RetrievalTask, pool_scores

CAPTIONS = [
    "a red car",
    "a dog on a bench",
    "a man holding an umbrella",
    "two cats",
    "a green photo",
    "a woman sitting",
    "a big black dog",
    "a small white car",
]


def write_karpathy(path, drop=None):
    images = []
    for i in range(8):
        split = "train" if i < 4 else ("restval" if i < 5 else "test")
        sents = [
            {"raw": CAPTIONS[i], "tokens": CAPTIONS[i].split(), "imgid": i, "sentid": 2 * i},
            {"raw": CAPTIONS[(i + 3) % 8] + " image", "tokens": [], "imgid": i, "sentid": 2 * i + 1},
        ]
        images.append(
            {
                "filename": f"{1000 + i}.jpg",
                "imgid": i,
                "split": split,
                "sentences": sents,
                "sentids": [2 * i, 2 * i + 1],
            }
        )
    if drop:
        del images[0]["sentences"][0][drop]
    path.write_text(json.dumps({"images": images, "dataset": "flickr30k"}))
    return path


@pytest.fixture
def store():
    return make_store([str(1000 + i) for i in range(8)])


def responsive_preset() -> str:
    """ViLBERT's product fusion makes the pooled output depend strongly on the image from the start."""
    presets = vl_tiny_presets()
    return "vilbert_tiny" if "vilbert_tiny" in presets else presets[0]


def test_retrieval_finetunes_with_in_batch_negatives(tmp_path, tokenizer, store):
    task = RetrievalTask(split="train", negatives=2)
    ds = task.load({"karpathy": write_karpathy(tmp_path / "k.json")}, tokenizer, store)
    assert len(ds) == 10 and ds.info["images"] == ["1000", "1001", "1002", "1003", "1004"]  # train + restval
    model = tiny_task_model(task, responsive_preset())
    losses = train_steps(task, model, ds, steps=20, batch_size=5, lr=3e-3)
    assert sum(losses[-2:]) < 0.7 * sum(losses[:2])


class ScoreByFirstFeature(torch.nn.Module):
    """A stand-in model whose match log-odds for a pair is the image's first feature (times a weight)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))

    def forward(self, batch):
        s = self.w * batch.region_feats[:, 0, 0]
        return torch.stack([torch.zeros_like(s), s], -1)


def test_hard_negatives_are_the_highest_scoring_other_images(tmp_path, tokenizer, store):
    task = RetrievalTask(split="train", negatives=2, hard_negatives=True)
    ds = task.load({"karpathy": write_karpathy(tmp_path / "k.json")}, tokenizer, store)
    batch = collate([ds[i] for i in range(5)])
    out = task.model_step(ScoreByFirstFeature(), batch)
    f = batch.region_feats[:, 0, 0]
    images = [m["image"] for m in batch.meta["items"]]
    expected = []
    for i in range(5):
        others = sorted((j for j in range(5) if images[j] != images[i]), key=lambda j: -float(f[j]))[:2]
        group = torch.stack([f[i], *[f[j] for j in others]])
        expected.append(torch.nn.functional.cross_entropy(group[None], torch.zeros(1, dtype=torch.long)))
    assert float(out.loss.detach()) == pytest.approx(float(torch.stack(expected).mean()), rel=1e-5)
    out.loss.backward()


def test_full_pool_recall_and_rankings(tmp_path, tokenizer, store):
    task = RetrievalTask(split="test")
    ds = task.load({"karpathy": write_karpathy(tmp_path / "k.json")}, tokenizer, store)
    assert ds.info["images"] == ["1005", "1006", "1007"] and ds.info["text_to_image"] == [0, 0, 1, 1, 2, 2]
    model = tiny_task_model(task)
    metrics, ranks = task.evaluate(model, ds, batch_size=4)
    assert set(metrics) >= {"ir_r@1", "ir_r@5", "ir_r@10", "tr_r@1", "tr_r@5", "tr_r@10"}
    assert metrics["ir_r@5"] == 100.0  # only 3 images in the pool
    # the batched pool scores equal scoring each pair alone
    scores = task.score_matrix(model, ds, batch_size=4)
    model.eval()
    batch = collate([ds[2]])
    with torch.no_grad():
        alone = model(batch)
    assert torch.allclose(scores[2, 1], alone[0, 1] - alone[0, 0], atol=1e-5)
    path = task.write_predictions(ranks, tmp_path / task.prediction_file)
    back = json.loads(path.read_text())
    assert back[0]["sentid"] == 10 and len(back[0]["images"]) == 3
    assert back[-1]["image"] == "1007" and len(back[-1]["sentids"]) == 6


def test_zero_shot_uses_the_pretrained_match_head(tmp_path, tokenizer, store):
    name = vl_tiny_presets()[0]
    pt = PretrainingModel(tiny_encoder(name)).eval()
    task = RetrievalTask(split="test")
    ds = task.load({"karpathy": write_karpathy(tmp_path / "k.json")}, tokenizer, store)
    model = TaskModel(pt.encoder, task.head_from_pretraining(pt)).eval()
    scores = task.score_matrix(model, ds)
    batch = collate([ds[0]])
    with torch.no_grad():
        out = pt(**batch.model_inputs())
    assert torch.allclose(scores[0, 0], out.pair_logits[0, 1] - out.pair_logits[0, 0], atol=1e-5)


def test_bad_input(tmp_path, tokenizer, store):
    with pytest.raises(TaskDataError, match=r"images\[0\].sentences\[0\]: missing field\(s\) \['raw'\]"):
        RetrievalTask().load({"karpathy": write_karpathy(tmp_path / "k.json", drop="raw")}, tokenizer, store)
    partial = {k: v for k, v in store.items() if k != "1006"}
    ds = RetrievalTask(split="test").load(
        {"karpathy": write_karpathy(tmp_path / "k.json")}, tokenizer, partial
    )
    assert ds.info["images"] == ["1005", "1007"] and ds.report.summary().startswith("1 records whose image")
    with pytest.raises(TaskDataError, match="fold 3"):
        RetrievalTask(split="test", fold=3).load(
            {"karpathy": write_karpathy(tmp_path / "k.json")}, tokenizer, store
        )
    with pytest.raises(ValueError, match="no feature store"):
        pool_scores(None, [], [])


@pytest.mark.parametrize("name", [n for n in ("lxmert_tiny", "vilbert_tiny") if n in vl_tiny_presets()])
def test_fast_dual_stream_scores_equal_the_full_forward(tmp_path, tokenizer, store, name):
    task = RetrievalTask(split="test")
    ds = task.load({"karpathy": write_karpathy(tmp_path / "k.json")}, tokenizer, store)
    model = tiny_task_model(task, name)
    assert isinstance(model.encoder, DualStreamModel)
    fast = task.score_matrix(model, ds, batch_size=4, fast=True)
    slow = task.score_matrix(model, ds, batch_size=5, fast=False)
    assert fast.shape == (6, 3) and torch.allclose(fast, slow, atol=1e-5)


def test_unimo_retrieval_trains_its_match_head_with_the_circle_loss(tmp_path, tokenizer, store):
    from mmbert.tasks.unimo_heads import UnimoMatchHead, circle_loss

    task = RetrievalTask(split="train", negatives=2)
    ds = task.load({"karpathy": write_karpathy(tmp_path / "k.json")}, tokenizer, store)
    model = tiny_task_model(task, "unimo_tiny")
    assert isinstance(model.head, UnimoMatchHead)
    with torch.no_grad():  # every pair scores 0.3: sigmoid(0.3) for the positive and both negatives
        model.head.fc.weight.zero_()
        model.head.fc.bias.fill_(0.3)
    batch = collate([ds[i] for i in range(5)])
    out = task.model_step(model.eval(), batch)
    p = torch.sigmoid(torch.tensor(0.3))
    expected = circle_loss(p.expand(5, 1), p.expand(5, 2))
    assert float(out.loss) == pytest.approx(float(expected), rel=1e-5)
