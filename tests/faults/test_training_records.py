"""Item 10 and 11 (pretraining side): bad records found during training name the store and the image,
and ``skip_bad_records`` leaves them out (counted, reported); nonsense data settings are refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
from commands.test_pretrain import pretrain, world  # noqa: F401 - `world` is the module fixture

from mmbert.cli import main
from mmbert.data import features
from mmbert.data.batch import RegionFeatures


def _damaged(rec: RegionFeatures, how: str) -> RegionFeatures:
    feats, boxes, size = rec.feats.copy(), rec.boxes.copy(), rec.image_size
    if how == "nan":
        feats[0, 0] = np.nan
    elif how == "inf box":
        boxes[0, 2] = np.inf
    elif how == "flipped":
        boxes[0, [0, 2]] = boxes[0, [2, 0]] + np.array([1, -1], dtype=np.float32)
    elif how == "negative size":
        size = (-size[0], size[1])
    elif how == "width":
        feats = np.zeros((len(feats), feats.shape[1] * 2), np.float32)
    return RegionFeatures(rec.image_id, feats, boxes, size, cls_prob=rec.cls_prob, obj_id=rec.obj_id,
                          obj_conf=rec.obj_conf, attr_id=rec.attr_id, attr_conf=rec.attr_conf)  # fmt: skip


DAMAGE = ["nan", "inf box", "flipped", "negative size", "width"]


@pytest.fixture(scope="module")
def bad_store(world, tmp_path_factory):  # noqa: F811
    path = tmp_path_factory.mktemp("bad") / "features.h5"
    with features.open(world / "features.tsv") as src, features.open(path, mode="w") as out:
        ids = src.keys()
        damaged = dict(zip(ids[1 : 1 + len(DAMAGE)], DAMAGE))  # the first stays good: it sizes the model
        for image_id in ids:
            rec = src[image_id]
            out.write(_damaged(rec, damaged[image_id]) if image_id in damaged else rec)
    return path, damaged


def _argv(world, out, store, *extra):  # noqa: F811
    argv = pretrain(world, out, "--max-steps", "2", "save_every=1", *extra)
    argv[argv.index("--features") + 1] = str(store)
    return argv


def test_a_bad_record_in_training_names_the_store_and_the_image(world, bad_store, tmp_path, capsys):  # noqa: F811
    store, damaged = bad_store
    assert main(_argv(world, tmp_path / "run", store, "shuffle=false")) == 1
    err = capsys.readouterr().err
    assert str(store) in err and any(f"image {i!r}" in err for i in damaged), err
    assert "Traceback" not in err and "skip_bad_records" in err


def test_skip_bad_records_leaves_them_out_counted_and_reported(world, bad_store, tmp_path, capsys):  # noqa: F811
    store, damaged = bad_store
    out = tmp_path / "run"
    assert main(_argv(world, out, store, "skip_bad_records=true")) == 0
    printed = capsys.readouterr().out
    assert f"skipped {len(damaged)} images with bad features" in printed
    recorded = json.loads((out / "run.json").read_text())["bad_records_skipped"]
    assert {i for i, _ in recorded} == set(damaged)
    problems = dict(recorded)
    for image_id, how in damaged.items():
        word = {"nan": "NaN", "inf box": "boxes contain", "flipped": "x2 < x1", "negative size": "not positive",
                "width": "feature width"}[how]  # fmt: skip
        assert word in problems[image_id], (how, problems[image_id])
    # a resume sees the same store, so the same examples are skipped and the data order is the same
    assert main(_argv(world, out, store, "skip_bad_records=true", "--resume", "--max-steps", "3")) == 0


@pytest.mark.parametrize(("setting", "phrase"), [
    ("match_prob=1.5", "within [0, 1]"), ("mlm_prob=-0.1", "within [0, 1]"), ("max_regions=0", "max_regions"),
    ("weights.mlm=-1", "loss weight must be finite and >= 0"),
])  # fmt: skip
def test_nonsense_data_settings_are_refused(world, tmp_path, setting, phrase, capsys):  # noqa: F811
    assert main(pretrain(world, tmp_path / "run", setting)) == 1
    err = capsys.readouterr().err
    assert phrase in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
