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
from mmbert.data.masking import box_iou
from mmbert.data.synthetic.generate import generate
from mmbert.data.synthetic.scenes import WorldConfig
from mmbert.data.tokenizer import Tokenizer
from mmbert.models import MODELS, PretrainingModel, build_model
from mmbert.objectives import Pretraining, recipe_for
from mmbert.train import TrainConfig, train
from mmbert.train.pretrain_data import PretrainingDataset, QAItem, builds_pairs, read_pretraining_questions
from mmbert.train.schedule import TaskSchedule

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
                              builds_pairs(objectives), seed=0, dynamic=False, questions=questions[:16] if qa else None,
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


def uniter_data(world, **kw) -> PretrainingDataset:
    store, tokenizer, captions, _, _ = world
    schedule = TaskSchedule(("itm_wra", "mlm", "mrfr", "mrckl"), (2, 2, 1, 1), seed=0)
    return PretrainingDataset(CaptionDataset(captions, store, tokenizer, 24, 12), "uniter", True, seed=1,
                              negative="image", force_one=True, random_range=tokenizer.word_piece_range(),
                              schedule=schedule, **kw)  # fmt: skip


def test_uniter_conditional_masking_one_task_per_example(world):
    data = uniter_data(world)
    store, tokenizer, captions, _, _ = world
    special = torch.tensor(sorted(tokenizer.special_ids))
    plain = CaptionDataset(captions, store, tokenizer, 24, 12)
    n = len(data)
    for i in range(n):
        base = plain[i]
        itm, mlm, mrfr = data[(i, "itm_wra")], data[(i, "mlm")], data[(i, "mrfr")]
        # ITM: nothing masked in either modality; a negative replaces the IMAGE, the caption stays
        assert itm.mlm_labels is None and itm.region_target_mask is None and torch.equal(itm.text_ids, base.text_ids)
        assert itm.caption == base.caption
        if itm.pair_label == 0:
            assert itm.image_id != base.image_id
        else:
            assert itm.image_id == base.image_id and torch.equal(itm.regions.feats, base.regions.feats)
        # MLM: text masked (at least one target), regions untouched, no pair label
        assert (mlm.mlm_labels != -100).sum() >= 1 and mlm.region_target_mask is None and mlm.pair_label is None
        assert torch.equal(mlm.regions.feats, base.regions.feats)
        # MRM: regions masked (at least one), text untouched
        assert mrfr.mlm_labels is None and torch.equal(mrfr.text_ids, base.text_ids)
        assert mrfr.region_target_mask.sum() >= 1 and (mrfr.regions.feats[mrfr.region_target_mask] == 0).all()
        # random replacements come from the word pieces, never a special token
        replaced = (mlm.mlm_labels != -100) & (mlm.text_ids != tokenizer.mask_id) & (mlm.text_ids != base.text_ids)
        assert not torch.isin(mlm.text_ids[replaced], special).any()
    labels = [data[(i, "itm_wra")].pair_label for i in range(n)]
    k = n - sum(labels)
    assert abs(k - n / 2) <= 4.5 * (n / 4) ** 0.5  # negatives: binomial(n, 0.5)
    # token rate over many draws: 15 % of the caption tokens (plus the forced ones)
    chosen = total = 0
    for epoch in range(6):
        data.set_epoch(epoch)
        for i in range(n):
            ex = data[(i, "mlm")]
            ok = ~torch.isin(ex.text_ids.where(ex.mlm_labels == -100, ex.mlm_labels), special)
            chosen += int((ex.mlm_labels != -100).sum())
            total += int(ok.sum())
    assert 0.15 * total - 4.5 * (0.15 * 0.85 * total) ** 0.5 <= chosen <= 0.15 * total + 0.1 * total


def test_uniter_batches_carry_one_task_and_refuse_plain_indices(world):
    data = uniter_data(world)
    keys = data.step_keys(7, [0, 1, 2, 3])
    task = data.schedule.task(7)
    assert keys == [(i, task) for i in range(4)]
    batch = data.collate([data[k] for k in keys])
    assert batch.task == task
    with pytest.raises(KeyError, match="task schedule"):
        data[0]
    with pytest.raises(ValueError, match="mixes scheduled tasks"):
        data.collate([data[(0, "mlm")], data[(1, "itm_wra")]])
    assert {data.eval_keys(r, [0])[0][1] for r in range(4)} == {"itm_wra", "mlm", "mrfr", "mrckl"}


def test_one_task_step_scores_only_that_objective(world):
    store, tokenizer, captions, _, _ = world
    data = uniter_data(world)
    model = PretrainingModel(build_model("uniter_tiny", **tiny_config_overrides("uniter_tiny", tokenizer)))
    task = Pretraining(model)
    assert task.objective_names == ("itm_wra", "mlm", "mrfr", "mrckl")
    for name in task.objective_names:
        out = task(data.collate([data[(i, name)] for i in range(4)]))
        assert {k.split("_")[0] for k in out.metrics if k.endswith("_loss")} == {name.split("_")[0]}
        assert out.metrics["loss"] == pytest.approx(out.metrics[f"{name}_loss"], rel=1e-6)


def test_vilbert_rule_gives_the_pre_training_whole_image_feature(world):
    store, tokenizer, captions, _, _ = world
    data = PretrainingDataset(CaptionDataset(captions, store, tokenizer, 24, 12), "vilbert", True, seed=2)
    checked = 0
    for i in range(len(data)):
        ex = data[i]
        h, w = ex.regions.image_size
        boxes = ex.regions.boxes * torch.tensor([w, h, w, h], dtype=ex.regions.boxes.dtype)
        overlap = (box_iou(boxes, boxes, plus_one=True)[ex.region_target_mask] > 0.4).any(0)
        keep = max(int((~overlap).sum()), 1)
        torch.testing.assert_close(ex.global_feats, ex.regions.feats.sum(0) / keep)
        checked += int(ex.region_target_mask.any())
    assert checked > 0
    batch = data.collate([data[i] for i in range(4)])
    assert batch.global_feats.shape == (4, batch.region_feats.shape[-1])
    model = PretrainingModel(build_model("vilbert_tiny", **tiny_config_overrides("vilbert_tiny", tokenizer))).eval()
    out = Pretraining(model)(batch)  # the model takes the loader's whole-image feature
    assert torch.isfinite(torch.tensor(out.metrics["loss"]))


def test_vl_bert_recipe_rule_keeps_features_and_flags_90_percent(world):
    store, tokenizer, captions, _, _ = world
    data = PretrainingDataset(CaptionDataset(captions, store, tokenizer, 24, 12), "vl_bert", False, seed=4,
                              whole_word=True, word_action=True)  # fmt: skip
    plain = CaptionDataset(captions, store, tokenizer, 24, 12)
    targets = masked = 0
    for epoch in range(8):
        data.set_epoch(epoch)
        for i in range(len(data)):
            ex = data[i]
            assert torch.equal(ex.regions.feats, plain[i].regions.feats)  # the model swaps masked regions
            assert not (ex.region_masked & ~ex.region_target_mask).any()
            targets += int(ex.region_target_mask.sum())
            masked += int(ex.region_masked.sum())
    assert abs(masked - 0.9 * targets) <= 4.5 * (0.09 * targets) ** 0.5
