"""Pre-training every registered V&L tiny preset on a small synthetic store drives each of its paper's
objective losses down (LXMERT's image QA included, on the world's VQA questions); and the pieces of that
pipeline (corruption, questions, collate) behave."""

from __future__ import annotations

import json

import pytest
import torch

from mmbert.data import features as features_api
from mmbert.data.captions import read_captions
from mmbert.data.datasets import CaptionDataset
from mmbert.data.synthetic.generate import generate
from mmbert.data.synthetic.scenes import WorldConfig
from mmbert.data.tokenizer import Tokenizer
from mmbert.models import MODELS, PretrainingModel, build_model
from mmbert.objectives import Pretraining, recipe_for
from mmbert.train import TrainConfig, train
from mmbert.train.pretrain_data import PretrainingDataset, QAItem, read_pretraining_questions

VL_TINY = [n for n in MODELS if n.endswith("_tiny") and getattr(MODELS[n](), "region_feat_dim", None)]
WORLD_OVERRIDES = {"num_region_classes": 6, "num_object_labels": 6, "num_attr_labels": 7}  # the world's detector


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A 24-image synthetic world (16-d features), its store read into memory, tokenizer, captions."""
    root = tmp_path_factory.mktemp("world")
    generate(root, num_images=24, seed=0, config=WorldConfig(feat_dim=16, max_objects=4), render_images=False,
             nlvr2_pairs=0)  # fmt: skip
    with features_api.open(root / "features.tsv") as reader:
        store = {k: reader[k] for k in reader.keys()}
    tokenizer = Tokenizer.from_pretrained(root)
    captions = list(read_captions(root / "captions_train.json"))
    answers = json.loads((root / "vqa" / "answers.json").read_text())
    questions = read_pretraining_questions(root / "vqa" / "v2_OpenEnded_synthetic_train_questions.json", answers,
                                           root / "vqa" / "v2_synthetic_train_annotations.json")  # fmt: skip
    return store, tokenizer, captions, questions, answers


def tiny_config_overrides(name: str, tokenizer: Tokenizer) -> dict:
    config = MODELS[name]()
    overrides = {k: v for k, v in WORLD_OVERRIDES.items() if hasattr(config, k)}
    return {"vocab_size": tokenizer.vocab_size, **overrides}


def test_corruption_is_per_example_deterministic_and_marks_mismatches(world):
    store, tokenizer, captions, _, _ = world
    data = PretrainingDataset(CaptionDataset(captions, store, tokenizer, 24, 12), "lxmert", True, seed=3)
    a, b = data[5], data[5]
    assert torch.equal(a.text_ids, b.text_ids) and torch.equal(a.regions.feats, b.regions.feats)
    data.set_epoch(1)
    assert not (torch.equal(data[5].text_ids, a.text_ids) and torch.equal(data[5].mlm_labels, a.mlm_labels))
    labels = [data[i].pair_label for i in range(len(data))]
    assert 0.3 < sum(labels) / len(labels) < 0.7
    negative = next(data[i] for i in range(len(data)) if data[i].pair_label == 0)
    assert negative.caption != captions[negative.index].caption
    batch = data.collate([data[i] for i in range(6)])
    assert batch.region_masked.shape == batch.region_mask.shape
    assert batch.region_target_mask.sum() > 0 and (batch.mlm_labels != -100).sum() > 0
    # the corrupted input differs from the stored features exactly where a region was replaced
    changed = (batch.region_feats != batch.region_targets).any(-1)
    assert not (changed & ~batch.region_masked).any()


@pytest.mark.parametrize("name", VL_TINY)
def test_pretraining_a_tiny_model_lowers_every_objective(name, world, tmp_path):
    store, tokenizer, captions, questions, answers = world
    torch.manual_seed(0)
    overrides = tiny_config_overrides(name, tokenizer)
    recipe = recipe_for(MODELS[name]().model_type)
    qa = "qa" in recipe.objectives
    if qa:
        overrides["num_qa_labels"] = len(answers)
    model = PretrainingModel(build_model(name, **overrides))
    objectives = list(recipe.objectives)
    task = Pretraining(model, objectives)
    # 32 pairs corrupted the same way every epoch: 100 steps of 16 must fit every objective, image-text
    # matching included (learning it for fresh pairs takes a tiny model from scratch far longer)
    data = PretrainingDataset(CaptionDataset(captions[:32], store, tokenizer, 24, 12), recipe.region_rule,
                              "itm" in objectives, seed=0, dynamic=False, questions=questions[:16] if qa else None,
                              num_answers=len(answers) if qa else 0)  # fmt: skip
    config = TrainConfig(max_steps=100, batch_size=16, lr=3e-3, warmup_steps=5, schedule="constant",
                         log_every=1, save_every=0, progress=False, device="cpu", max_grad_norm=1.0)  # fmt: skip
    train(task, data, data.collate, config, tmp_path)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 100
    for objective in objectives:
        first = sum(r[f"{objective}_loss"] for r in records[:15]) / 15
        last = sum(r[f"{objective}_loss"] for r in records[-15:]) / 15
        assert last < first, f"{name}: {objective} loss {first:.4f} -> {last:.4f}"


def test_questions_join_the_captions_with_soft_answer_targets(world, tmp_path):
    store, tokenizer, captions, questions, answers = world
    assert all(0 <= a < len(answers) for q in questions for a in q.scores)
    # the official leave-one-out score: 10 identical human answers give 1.0
    assert any(list(q.scores.values()) == [1.0] for q in questions)
    extra = [QAItem(captions[0].image_id, "what colour is it?", {2: 0.6, 0: 0.3}), QAItem("nope", "x?", {})]
    with pytest.warns(UserWarning, match="1 of 2 questions"):
        data = PretrainingDataset(CaptionDataset(captions[:10], store, tokenizer, 24, 12), "lxmert", True,
                                  questions=extra, num_answers=len(answers))  # fmt: skip
    assert len(data) == 11
    q = data[10]
    assert q.answer_targets[2] == pytest.approx(0.6) and q.answer_targets[0] == pytest.approx(0.3)
    assert data[0].answer_targets.sum() == 0  # a caption has no answer
    batch = data.collate([data[i] for i in range(11)])
    assert batch.answer_targets.shape == (11, len(answers))
    # LXMERT's own format
    path = tmp_path / "lxmert.json"
    path.write_text(json.dumps([{"img_id": "1", "sent": "what is it?", "label": {"red": 0.9, "unknown": 1.0}}]))
    assert read_pretraining_questions(path, answers) == [QAItem("1", "what is it?", {answers.index("red"): 0.9})]
    path.write_text(json.dumps({"questions": [{"question_id": 1, "image_id": 1, "question": "q?"}]}))
    with pytest.raises(ValueError, match="not a VQA annotations file"):
        read_pretraining_questions(path, answers, path)
