"""VOLTA's loader (mmbert.convert.volta): which settings it reads from a VOLTA config file and how it
refuses those mmbert does not reproduce."""

from __future__ import annotations

import json

import pytest
from authors_fixtures import fixture_dirs, read_fixture

from mmbert.convert import CheckpointError, volta


def _raw(name: str) -> dict:
    """The tiny VOLTA config of the authors' fixture ``volta/<name>``."""
    fx = read_fixture(next(f for f in fixture_dirs() if read_fixture(f).meta["source"] == f"volta/{name}"))
    return json.loads(fx.config.read_text())


@pytest.mark.parametrize("name", ["ctrl_vilbert_base", "ctrl_visualbert_base", "ctrl_lxmert", "ctrl_vl-bert_base"])
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
