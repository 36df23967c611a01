"""`mmbert features merge`: shards join into the single-process order; a missing rank, an image in two
shards, a stray image, an image neither stored nor reported, or mixed settings are refused by name."""

from __future__ import annotations

import pytest
from data.feature_fixtures import assert_same_record, make_region_record

from mmbert.cli import main
from mmbert.data import features
from mmbert.data.features.merge import merge_shards
from mmbert.data.features.metadata import read_metadata, shard_path, write_metadata

IDS = [f"img{i}" for i in range(7)]
RECORDS = {i: make_region_record(i, 3, seed=n) for n, i in enumerate(IDS)}
SETTINGS = {"detector": "butd", "weights": "random", "weights_sha256": None, "selection": "reference",
            "settings": {"min_boxes": 3}}  # fmt: skip


def make_shards(tmp_path, world=2, skip=("img3",), drop=(), extra=None, settings=None):
    paths = []
    for rank in range(world):
        path = shard_path(tmp_path / "feats.h5", rank, world)
        assigned = IDS[rank::world]
        with features.open(path, "w") as out:
            for image_id in assigned + list((extra or {}).get(rank, [])):
                if image_id not in skip and image_id not in drop:
                    out.write(RECORDS[image_id])
        meta = {**SETTINGS, **((settings or {}).get(rank, {}))}
        write_metadata(path, {**meta, "assigned": assigned, "shard": {"rank": rank, "world_size": world},
                              "skipped": {i: f"/x/{i}.jpg: cannot decode" for i in skip if i in assigned},
                              "complete": True})  # fmt: skip
        paths.append(path)
    return paths


def test_merge_restores_the_single_process_order(tmp_path):
    shards = make_shards(tmp_path, world=3)
    report = merge_shards(shards, tmp_path / "merged.h5", progress=False)
    assert report.written == 6 and list(report.skipped_images) == ["img3"]
    with features.open(tmp_path / "merged.h5") as merged:
        assert merged.keys() == [i for i in IDS if i != "img3"]
        for image_id in merged.keys():
            assert_same_record(merged[image_id], RECORDS[image_id])
    meta = read_metadata(tmp_path / "merged.h5")
    assert meta["assigned"] == IDS and meta["complete"] and meta["shard"] is None


@pytest.mark.parametrize(
    "kwargs,pick,message",
    [
        ({}, [0], "missing ranks [1]"),
        ({"drop": ("img4",)}, [0, 1], "neither stored nor reported unreadable: 'img4'"),
        ({"extra": {1: ["img0"]}}, [0, 1], "holds images it was not given: 'img0'"),
        ({"settings": {1: {"weights": "other.bin"}}}, [0, 1], "weights: 'random' -> 'other.bin'"),
    ],
)
def test_merge_refuses_what_does_not_add_up(tmp_path, capsys, kwargs, pick, message):
    shards = make_shards(tmp_path, **kwargs)
    argv = ["features", "merge", *[str(shards[i]) for i in pick], "--out", str(tmp_path / "m.h5"), "--no-progress"]
    assert main(argv) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "m.h5").exists()


def test_merge_refuses_an_image_in_two_shards_and_unfinished_or_foreign_shards(tmp_path):
    shards = make_shards(tmp_path)
    with features.open(shards[1], "a") as out:  # rank 1 also holds rank 0's image: a duplicate
        out.write(RECORDS["img0"])
    meta = read_metadata(shards[1])
    write_metadata(shards[1], {**meta, "assigned": meta["assigned"] + ["img0"]})
    with pytest.raises(ValueError, match="'img0' is in two shards"):
        merge_shards(shards, tmp_path / "m.h5", progress=False)
    write_metadata(shards[1], {**meta, "complete": False})
    with pytest.raises(ValueError, match="did not finish"):
        merge_shards(shards, tmp_path / "m.h5", progress=False)
    with features.open(tmp_path / "plain.h5", "w") as out:
        out.write(RECORDS["img0"])
    with pytest.raises(ValueError, match="no extraction metadata"):
        merge_shards([tmp_path / "plain.h5"], tmp_path / "m.h5", progress=False)


@pytest.mark.parametrize("name", ["merged", "merged.h5"])  # a directory store (npz) and a file store (HDF5)
def test_an_interrupted_merge_fails_check_and_the_next_merge_resumes(tmp_path, capsys, monkeypatch, name):
    """Ctrl-C after one record: the output stays marked incomplete (check exits 1); merging again finishes it."""
    from mmbert.data.features.hdf5 import HDF5Reader

    shards = make_shards(tmp_path)
    real, calls = HDF5Reader._read, []

    def stops_after_one(self, image_id, fields):
        calls.append(image_id)
        if len(calls) > 1:
            raise KeyboardInterrupt
        return real(self, image_id, fields)

    out = tmp_path / name
    monkeypatch.setattr(HDF5Reader, "_read", stops_after_one)
    with pytest.raises(KeyboardInterrupt):
        merge_shards(shards, out, progress=False)
    monkeypatch.setattr(HDF5Reader, "_read", real)
    capsys.readouterr()
    assert main(["features", "check", str(out)]) == 1
    err = capsys.readouterr().err
    assert "did not finish" in err and "OK" not in err, err
    report = merge_shards(shards, out, progress=False)
    assert report.written == 5  # the one record already merged is not merged again
    assert main(["features", "check", str(out)]) == 0, capsys.readouterr()
    with features.open(out) as merged:
        assert merged.keys() == [i for i in IDS if i != "img3"]
