"""VOLTA's loader (mmbert.convert.volta): which settings it reads from a VOLTA config file and how it
refuses those mmbert does not reproduce."""

from __future__ import annotations

import json
import re

import pytest
import torch
from authors_fixtures import fixture_dirs, read_fixture

import mmbert
from mmbert.convert import CheckpointError, volta


def _raw(name: str) -> dict:
    """The tiny VOLTA config of the authors' fixture ``volta/<name>``."""
    return json.loads(_fixture(name).config.read_text())


@pytest.mark.parametrize(
    "name", ["ctrl_vilbert_base", "ctrl_visualbert_base", "ctrl_lxmert", "ctrl_vl-bert_base"]
)
def test_missing_add_global_imgfeat_is_voltas_default_none_and_refused(name):
    """volta/config.py defaults add_global_imgfeat to None (no whole-image region, as config/lxmert.json);
    mmbert's models need the region first, so a file without the key is refused, not read as "first"."""
    raw = _raw(name)
    volta.config_from(raw, {}, f"{name}.json", {})  # the file as the authors wrote it loads
    del raw["add_global_imgfeat"]
    with pytest.raises(CheckpointError, match=r"add_global_imgfeat absent \(VOLTA's default None\)"):
        volta.config_from(raw, {}, f"{name}.json", {})


def test_a_different_setting_is_named_with_its_value():
    raw = _raw("ctrl_vilbert_base")
    raw["fusion_method"] = "sum"
    with pytest.raises(CheckpointError, match=r"ctrl_vilbert_base.json: fusion_method = 'sum'; .*'mul' only"):
        volta.config_from(raw, {}, "ctrl_vilbert_base.json", {})


def _fixture(name: str):
    return read_fixture(next(f for f in fixture_dirs() if read_fixture(f).meta["source"] == f"volta/{name}"))


def test_only_checked_shared_twins_are_ignored():
    """ctrl_lxmert's shared cross-attention lists each tensor under its v_* name too: those are reported
    as ignored; nothing else is."""
    fx = _fixture("ctrl_lxmert")
    report = mmbert.load_pretraining(fx.checkpoint, config=fx.config).source_report
    shared = json.loads(fx.config.read_text())["shared_sublayers"]
    twins = {k for k in report.ignored if ".v_" in k}
    assert twins and all(int(k.split(".")[3]) in shared for k in twins)


@pytest.mark.parametrize("name", ["ctrl_lxmert", "ctrl_vilbert_base"])
def test_an_unmapped_v_key_of_an_unshared_sublayer_fails_the_load(name, tmp_path):
    """A v_* key outside the shared sublayers is not a checked twin: left unmapped, the load names it."""
    fx = _fixture(name)
    state = torch.load(fx.checkpoint, weights_only=True)
    shared = set(json.loads(fx.config.read_text()).get("shared_sublayers", []))
    layer = next(
        n
        for n in range(100)
        if n not in shared and f"bert.encoder.layer.{n}.attention_self.query.weight" in state
    )
    stray = f"bert.encoder.layer.{layer}.attention_self.v_extra.weight"
    state[stray] = torch.zeros(2)
    f = tmp_path / fx.checkpoint.name
    torch.save(state, f)
    with pytest.raises(CheckpointError, match=re.escape(stray)):
        mmbert.load_pretraining(f, config=fx.config)


def test_vl_bert_region_slots_default_option_and_report():
    """The files do not record VOLTA's max_region_num: the load takes the pre-training 36 + 1 unless told,
    and says so in the report; the option is refused for a layout it does not apply to."""
    fx = _fixture("ctrl_vl-bert_base")
    model = mmbert.load_pretraining(fx.checkpoint, config=fx.config)
    assert model.encoder.config.volta_region_slots == 37
    assert any("volta_region_slots=37" in n for n in model.source_report.notes)
    six = mmbert.load_pretraining(fx.checkpoint, config=fx.config, volta_region_slots=6)
    assert six.encoder.config.volta_region_slots == 6
    other = _fixture("ctrl_vilbert_base")
    with pytest.raises(CheckpointError, match="volta_region_slots applies to VOLTA's VL-BERT only"):
        mmbert.load_pretraining(other.checkpoint, config=other.config, volta_region_slots=6)
