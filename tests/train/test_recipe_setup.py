"""``train.recipe_setup``: a paper's recipe resolved with the run's deviations, and the loss that scores it
(the command-level runs are in tests/commands/test_pretrain.py and test_compare_experiment.py)."""

from __future__ import annotations

import pytest

from mmbert.models import PretrainingModel, build_model
from mmbert.objectives import RECIPES, Pretraining
from mmbert.objectives.unimo import UnimoPretraining
from mmbert.train.recipe_setup import DataConfig, PretrainSources, pretraining_task, resolve_corruption


def test_the_recipe_applies_unless_a_setting_deviates_from_it():
    uniter = RECIPES["uniter"]
    chosen = resolve_corruption(uniter, DataConfig())
    assert chosen["region_rule"] == "uniter" and chosen["negative"] == "image" and chosen["force_one"]
    assert chosen["mix_ratio"] == [2, 2, 1, 1] and chosen["random_tokens"] == "word_pieces"
    assert chosen["source"] == uniter.source
    changed = resolve_corruption(uniter, DataConfig(region_rule="zero", negative="caption", mix_ratio=[]))
    assert (changed["region_rule"], changed["negative"], changed["mix_ratio"]) == ("zero", "caption", None)
    assert resolve_corruption(RECIPES["vl_bert"], DataConfig())["text_ratio"] == 1.0
    assert resolve_corruption(RECIPES["vl_bert"], DataConfig(text_ratio=0.5))["text_ratio"] == 0.5


@pytest.mark.parametrize(("setting", "message"), [
    ({"region_rule": "bogus"}, "'bogus' is not one of"),
    ({"negative": "region"}, "'region' is not 'caption' or 'image'"),
    ({"text_ratio": -1.0}, "'text_ratio' must be >= 0"),
])  # fmt: skip
def test_a_bad_deviation_is_refused_by_name(setting, message):
    with pytest.raises(ValueError, match=message):
        resolve_corruption(RECIPES["vilbert"], DataConfig(**setting))


def test_the_task_follows_the_model_and_the_schedule():
    bert = PretrainingModel(build_model("bert_tiny"))
    scheduled = pretraining_task(bert, ["mlm", "nsp"], DataConfig(), {"mix_ratio": {"mlm": 1, "nsp": 1}})
    every_step = pretraining_task(bert, ["mlm", "nsp"], DataConfig(), {"mix_ratio": None}, {"nsp": 0.5})
    assert isinstance(scheduled, Pretraining) and scheduled.scheduled and not every_step.scheduled
    assert every_step.weights == {"mlm": 1.0, "nsp": 0.5}
    unimo = pretraining_task(PretrainingModel(build_model("unimo_tiny")), ["mlm", "cmcl"],
                             DataConfig(cmcl_temperature=0.2), {"mix_ratio": None})  # fmt: skip
    assert isinstance(unimo, UnimoPretraining) and unimo.objective_names == ("mlm", "cmcl")
    assert unimo.temperature == 0.2


def test_sources_read_from_the_command_line_flags():
    class Args:  # what argparse hands `mmbert pretrain`: every flag, most of them unset
        model, captions, features, text_corpus, scenes, out = "uniter_tiny", "c.json", "f.tsv", None, None, "o"
        resume = False

    sources = PretrainSources.from_args(Args())
    assert (sources.model, sources.captions, sources.features, sources.out) == ("uniter_tiny", "c.json", "f.tsv", "o")
    assert sources.questions is None and sources.image_corpus is None
