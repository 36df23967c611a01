"""``mmbert compare``'s paper setting pre-trains each model as ``mmbert pretrain --model <model>_tiny`` does:
the objectives, masking rule, negatives, task schedule and text-only stream of the model's ``RECIPES``
entry, built by the one ``train.recipe_setup``; UNITER's pre-training computes one task per step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmbert.commands.compare.experiment import Runner
from mmbert.commands.compare.grid import try_lock
from mmbert.commands.compare.plan import ALL_MODELS, QUICK, preset_name
from mmbert.commands.demo.world import ensure_world
from mmbert.data.text_corpus import NextSentenceDataset, TextMLMDataset, TextStreamMixer, read_text_corpus
from mmbert.models import MODELS
from mmbert.objectives import RECIPES, Pretraining, recipe_for
from mmbert.objectives.unimo import UNIMO_OBJECTIVES, UnimoPretraining
from mmbert.train.pretrain_data import PretrainingDataset
from mmbert.train.schedule import TaskSchedule
from mmbert.train.unimo_data import UnimoPretrainingData


@pytest.fixture(scope="module")
def runner(tmp_path_factory) -> Runner:
    world = ensure_world(tmp_path_factory.mktemp("cache"), QUICK.demo, 0, nlvr2_pairs=QUICK.demo.images // 4)
    out = tmp_path_factory.mktemp("out")
    return Runner(out, world, QUICK, {m: QUICK.demo for m in ALL_MODELS}, log=lambda *_: None)


@pytest.mark.parametrize("model", ALL_MODELS)
def test_the_paper_setting_builds_the_recipe_of_mmbert_pretrain(runner, model, tmp_path):
    recipe = RECIPES[model]
    # `mmbert pretrain --model <model>_tiny` looks its recipe up from the preset: the same object
    assert recipe_for(MODELS[preset_name(model)]()) is recipe
    setup = runner.paper_setup(model, 0, tmp_path)
    assert setup.corruption["source"] == recipe.source
    if model == "bert":
        assert isinstance(setup.data, NextSentenceDataset) and isinstance(setup.task, Pretraining)
        assert setup.objectives == list(recipe.objectives)
        assert setup.data.documents == read_text_corpus(runner.text_corpus())
        return
    if model == "unimo":  # UNIMO's own multi-forward objectives on its mixed corpora, scene-graph rewrites
        assert isinstance(setup.task, UnimoPretraining) and setup.task.objective_names == UNIMO_OBJECTIVES
        assert isinstance(setup.data, UnimoPretrainingData) and setup.data.texts
        assert type(setup.data.rewriter).__name__ == "SceneGraphRewriter"
        return
    assert isinstance(setup.task, Pretraining)
    assert setup.task.objective_names == tuple(o for o in recipe.objectives if o != "qa")  # no questions given
    assert setup.task.score_mismatched == recipe.score_mismatched
    data = setup.data
    if recipe.text_ratio > 0:  # VL-BERT: a text-only batch of the training captions beside each caption batch
        assert isinstance(data, TextStreamMixer) and data.ratio == recipe.text_ratio
        assert isinstance(data.text, TextMLMDataset) and data.text.word_action == recipe.word_action
        data = data.main
    else:
        assert isinstance(data, PretrainingDataset)
    assert (data.region_rule, data.negative) == (recipe.region_rule, recipe.negative)
    assert (data.whole_word, data.word_action, data.force_one) == (
        recipe.whole_word, recipe.word_action, recipe.force_one)  # fmt: skip
    assert (data.random_range is not None) == (recipe.random_tokens == "word_pieces")
    if recipe.mix_ratio is None:
        assert data.schedule is None and not setup.task.scheduled
    else:  # UNITER: one task per step, drawn by its mix ratio
        assert setup.task.scheduled
        assert data.schedule.tasks == recipe.objectives and data.schedule.ratio == tuple(recipe.mix_ratio)


def test_uniter_pretrains_one_task_per_step(runner):
    runner.pretrained(("uniter", "paper", 0))
    log = runner.out / "runs" / "pretrain--uniter--paper--s0" / "metrics.jsonl"
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    rows = [r for r in rows if "loss" in r]
    assert len(rows) == QUICK.demo.pretrain_steps
    recipe = RECIPES["uniter"]
    schedule = TaskSchedule(recipe.objectives, recipe.mix_ratio, 0)  # the draw of `mmbert pretrain` at seed 0
    computed = []
    for r in rows:
        losses = [o for o in recipe.objectives if f"{o}_loss" in r]
        assert losses == [schedule.task(r["step"] - 1)], r
        computed += losses
    assert len(set(computed)) > 1  # these steps exercise more than one task


def test_the_text_corpus_is_the_training_captions_one_document_per_image(runner):
    captions = json.loads((runner.world / "captions_train.json").read_text())["annotations"]
    documents = read_text_corpus(runner.text_corpus())
    assert sum(len(d) for d in documents) == len(captions)
    assert len(documents) == len({c["image_id"] for c in captions})
    assert Path(runner.text_corpus()).parent == runner.out / "pretrained"


def test_the_pretrained_directory_exists_before_any_lock(runner, tmp_path):
    """The runner makes ``pretrained/`` itself, so a pre-training lock never creates (and on release never
    removes, with its lock file) that directory while another process may be opening the lock."""
    fresh = Runner(tmp_path / "out", runner.world, QUICK, runner.model_plans, log=lambda *_: None)
    cache = tmp_path / "out" / "pretrained"
    assert cache.is_dir() and not any(cache.iterdir())
    lock = try_lock(fresh.pretrained_path(("uniter", "paper", 0)), "pre-training")
    assert lock is not None
    lock.release()  # nothing pre-trained: a lock that had made the directory would take it away here
    assert cache.is_dir()
