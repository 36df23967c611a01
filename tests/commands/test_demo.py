"""The demo: its outputs (results, report, real PNG pictures, the attention overlay) on the --quick budget,
and the pre-training traps of such worlds (every pair masked, MLM scored on matching pairs only; the
match loss's plateau budgeted for)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmbert.commands import demo
from mmbert.data.captions import read_coco_captions
from mmbert.data.datasets import CaptionDataset
from mmbert.data.tokenizer import Tokenizer
from mmbert.models.pretraining import PretrainingModel
from mmbert.objectives.pretraining import Pretraining, recipe_for
from mmbert.train.pretrain_data import PretrainingDataset


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    args = argparse.Namespace(model=demo.DEFAULT_MODEL, out=str(root / "out"), cache=str(root / "cache"), seed=0,
                              quick=True, threads=None)  # fmt: skip
    assert demo.run(args) == 0
    return root


def test_quick_demo_writes_results_report_and_real_pictures(quick_run):
    out = quick_run / "out"
    results = json.loads((out / "results.json").read_text())
    for key in ("majority", "text_only", "from_scratch", "pretrained"):
        assert key in results["vqa"]
    assert len(results["vqa"]["pretrained"]["seeds"]) == len(demo.QUICK.seeds)
    assert results["retrieval_zero_shot"]["num_images"] == demo.QUICK.retrieval_images
    assert {c["what"] for c in results["acceptance"]} and all("pass" in c for c in results["acceptance"])
    report = (out / "report.md").read_text()
    assert "| VQA (val, official accuracy) |" in report and "![attention](attention.png)" in report
    for name in results["pictures"]:
        with Image.open(out / name) as im:
            im.verify()
            assert im.format == "PNG"
    assert "attention.png" in results["pictures"]


def test_attention_picture_overlays_the_rendered_scene(quick_run):
    out, cache = quick_run / "out", quick_run / "cache"
    results = json.loads((out / "results.json").read_text())
    att = results["attention"]
    world = next(cache.glob("world-*"))
    scenes = {s["image_id"]: s for s in json.loads((world / "scenes.json").read_text())["images"]}
    scene = scenes[att["image_id"]]
    assert len(att["attention"]) == len(scene["region_object"])
    with Image.open(world / "images" / scene["file_name"]) as src, Image.open(out / "attention.png") as pic:
        assert pic.size[0] == pic.size[1] == 4 * src.size[0]
        # a pixel far from any box keeps the scene's own colour: the picture is drawn over the image
        small = np.asarray(pic.convert("RGB").resize(src.size, Image.NEAREST))
        same = (small == np.asarray(src.convert("RGB"))).all(-1).mean()
        assert same > 0.3


def _pretraining_batch(world: Path, n: int = 200):
    tok = Tokenizer.from_pretrained(world)
    captions = CaptionDataset(read_coco_captions(world / "captions_train.json"), world / "features.tsv", tok,
                              max_text_length=demo.QUICK.max_text_len, max_regions=None)  # fmt: skip
    data = PretrainingDataset(captions, region_rule=None, match=True, seed=0)
    examples = [data[i % len(data)] for i in range(n)]
    data.set_epoch(1)
    examples += [data[i % len(data)] for i in range(n)]
    return tok, data, data.collate(examples)


def test_every_pair_is_masked_and_mlm_is_scored_on_matching_pairs_only(quick_run):
    """Trap 1: if only matching pairs carried [MASK], the match head would learn "[MASK] means match"."""
    world = next((quick_run / "cache").glob("world-*"))
    tok, data, batch = _pretraining_batch(world)
    is_mask = (batch.text_ids == tok.mask_id) & batch.text_mask
    real = batch.text_mask.sum(1).float()
    matched, mismatched = batch.pair_labels == 1, batch.pair_labels == 0
    assert matched.sum() > 50 and mismatched.sum() > 50
    rate_m = (is_mask.sum(1) / real)[matched].mean()
    rate_x = (is_mask.sum(1) / real)[mismatched].mean()
    assert abs(float(rate_m - rate_x)) < 0.03  # the corruption does not reveal the label
    # the demo's recipe (VisualBERT): MLM loss on matching pairs only
    plan = demo.QUICK
    config = demo.demo_config(demo.DEFAULT_MODEL, plan, tok.vocab_size, 10)
    task = Pretraining(PretrainingModel(demo.build_encoder(config)), ["mlm", "itm"])
    assert not recipe_for(config.model_type).score_mismatched
    only_mismatched = type(batch)(**{**batch.__dict__})
    keep = mismatched.nonzero().flatten()
    for name in ("text_ids", "text_mask", "segment_ids", "region_feats", "region_boxes", "region_mask",
                 "mlm_labels", "pair_labels"):  # fmt: skip
        setattr(only_mismatched, name, getattr(batch, name)[keep])
    assert (only_mismatched.mlm_labels != -100).any()  # targets were drawn ...
    out = task(only_mismatched)
    assert out.metrics["mlm_count"] == 0 and out.metrics["mlm_loss"] == 0.0  # ... but not scored
    out = task(batch)
    assert 0 < out.metrics["mlm_count"] < int((batch.mlm_labels != -100).sum())


def test_match_loss_plateau_is_budgeted_for():
    """Trap 4: the match loss sits at chance for a stretch before it falls. The demo's pre-training
    budget is at least twice the stretch measured on this world (ITM left chance after 900-1450 steps of 64
    pairs at the demo width), and the demo reports when ITM accuracy left chance."""
    plan = demo.DemoPlan()
    assert plan.pretrain_steps * plan.pretrain_batch >= 2 * 1450 * 64
    curve = {"step": [10, 20, 30, 40], "itm_acc": [0.5, 0.52, 0.7, 0.8]}
    assert demo.left_chance_at(curve) == 40  # the mean of the last three logged accuracies reaches 0.6
    assert demo.left_chance_at({"step": [10], "itm_acc": [0.5]}) is None


def test_demo_config_shrinks_any_family_to_the_demo_size():
    plan = demo.DemoPlan()
    for name in ("visualbert_base", "uniter_tiny", "lxmert_tiny", "vilbert_tiny"):
        config = demo.demo_config(name, plan, vocab_size=99, num_answers=20)
        assert config.dim == plan.dim and config.vocab_size == 99 and config.region_feat_dim == plan.feat_dim
        enc = demo.build_encoder(config)
        ids = torch.randint(5, 99, (2, 7))
        feats, boxes = torch.randn(2, 3, plan.feat_dim), torch.tensor([[[0.1, 0.1, 0.4, 0.5]] * 3] * 2)
        assert enc(ids, region_feats=feats, region_boxes=boxes).pooled.shape[0] == 2
    with pytest.raises(KeyError):
        demo.demo_config("no_such_model", plan, 99, 20)


def test_a_region_head_only_where_the_preset_has_one_or_an_objective_scores_it():
    """VisualBERT's preset has no region head (its paper scores no regions): the demo's config keeps none
    for the paper's recipe, builds one over the detector's classes for a recipe that scores them
    (``mmbert compare``'s controlled one), and presets with a head keep theirs at the world's size."""
    from mmbert.data.synthetic import ATTRIBUTES, DETECTOR_CLASSES

    plan = demo.QUICK
    paper = demo.demo_config("visualbert_tiny", plan, 99, 20, recipe_for("visualbert").objectives)
    assert paper.num_region_classes == 0
    assert PretrainingModel(demo.build_encoder(paper)).heads.region is None
    controlled = demo.demo_config("visualbert_tiny", plan, 99, 20, ["mlm", "mrc_kl", "itm"])
    assert controlled.num_region_classes == len(DETECTOR_CLASSES)
    assert PretrainingModel(demo.build_encoder(controlled)).heads.region is not None
    assert demo.demo_config("vilbert_tiny", plan, 99, 20).num_region_classes == len(DETECTOR_CLASSES)
    lxmert = demo.demo_config("lxmert_tiny", plan, 99, 20)
    assert (lxmert.num_object_labels, lxmert.num_attr_labels) == (len(DETECTOR_CLASSES), len(ATTRIBUTES))


def test_the_demo_pretrains_visualbert_without_a_region_head(quick_run, tmp_path):
    """The demo's pre-training is VisualBERT's paper's: MLM + matching, and no region head pre-trained for
    nothing (one was, once VisualBertConfig took num_region_classes for VOLTA's controlled model)."""
    world = next((quick_run / "cache").glob("world-*"))
    tok = Tokenizer.from_pretrained(world)
    model, objectives, _, _ = demo.pretrain(world, tok, demo.QUICK, demo.DEFAULT_MODEL, 10, tmp_path / "pre", 0,
                                            True)  # fmt: skip
    assert objectives == ["mlm", "itm"] and model.heads.region is None


def test_the_checks_are_judged_on_the_held_out_test_split(quick_run):
    results = json.loads((quick_run / "out" / "results.json").read_text())
    assert results["vqa_test"]["test_questions"] > 0 and results["vqa"]["val_questions"] > 0
    assert all("(VQA test" in c["what"] or "test images" in c["what"] for c in results["acceptance"])
    assert results["checks_enforced"] is False  # --quick reports them only
    assert "| VQA (test, official accuracy; the checks) |" in (quick_run / "out" / "report.md").read_text()


def test_a_failed_check_fails_the_demo():
    checks = [{"what": "a", "value": "+1", "pass": True}, {"what": "b", "value": "-1", "pass": False}]
    assert demo.exit_status(checks) == 1
    assert demo.exit_status(checks[:1]) == 0
    assert demo.exit_status(checks, enforced=False) == 0
