"""`mmbert extract` on scikit-image's real photographs with randomly initialised detectors: a valid store,
boxes inside the images, resume, corrupt images skipped by path, torchrun-style shards merged == one run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from vision.vision_fixtures import TINY_CONFIG, require_vision_or_skip, write_photos

require_vision_or_skip()

from mmbert.cli import main  # noqa: E402
from mmbert.data import features  # noqa: E402
from mmbert.data.features.metadata import read_metadata, shard_path  # noqa: E402
from mmbert.vision.extract import ExtractOptions, build_detector, extract  # noqa: E402
from mmbert.vision.images import read_rgb  # noqa: E402

TINY = dict(detector="butd", weights="random", config=str(TINY_CONFIG), min_size=256, max_size=427,
            min_boxes=10, max_boxes=20, progress=False)  # fmt: skip


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    write_photos(folder)
    (folder / "zz_corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"not a jpeg" * 10)
    return folder


@pytest.fixture(scope="module")
def tiny_detector():
    return build_detector(ExtractOptions(**TINY))


def records(path) -> dict:
    with features.open(path) as store:
        return {k: store[k] for k in store.keys()}


def assert_same_records(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for k in a:
        for name in ("feats", "boxes", "cls_prob", "obj_id", "obj_conf", "attr_id", "attr_conf"):
            x, y = getattr(a[k], name), getattr(b[k], name)
            assert (x is None) == (y is None), (k, name)
            if x is not None:
                np.testing.assert_array_equal(x, y, err_msg=f"{k}.{name}")
        assert a[k].image_size == b[k].image_size


def test_extract_check_boxes_resume_and_corrupt(photos, tmp_path, capsys, tiny_detector):
    out = tmp_path / "feats.h5"
    model, settings = tiny_detector
    report = extract(photos, out, ExtractOptions(**TINY, batch=3), model=model, settings=settings)
    err = capsys.readouterr().err
    assert "zz_corrupt.jpg" in err and report.written == 4 and list(report.skipped) == ["zz_corrupt"]
    assert main(["features", "check", str(out), "--min-boxes", "10", "--max-boxes", "20"]) == 0
    recs = records(out)
    assert sorted(recs) == ["astronaut", "chelsea", "coffee", "rocket"]
    for image_id, rec in recs.items():
        h, w = read_rgb(photos / f"{image_id}.png").shape[:2]
        assert rec.image_size == (h, w) and rec.feats.shape[1] == 128 and 10 <= rec.num_regions <= 20
        b = rec.boxes
        assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all() and (b[:, 2] <= w).all() and (b[:, 3] <= h).all()
        assert (b[:, 2] >= b[:, 0]).all() and (b[:, 3] >= b[:, 1]).all()
        assert rec.cls_prob.shape == (rec.num_regions, 1601) and rec.attr_id.max() < 400
        np.testing.assert_allclose(rec.cls_prob.sum(1), 1.0, atol=1e-5)
    meta = read_metadata(out)
    assert meta["random_weights"] and meta["detector"] == "butd" and meta["complete"]
    assert meta["feature_dim"] == 128 and meta["skipped"]["zz_corrupt"].startswith(str(photos / "zz_corrupt.jpg"))
    # batched (3 per forward) == one image at a time
    single = extract(photos, tmp_path / "single.h5", ExtractOptions(**TINY, batch=1), model=model, settings=settings)
    assert single.written == 4
    assert_same_records(recs, records(tmp_path / "single.h5"))
    # resume: nothing is redone; a removed record is redone alone
    again = extract(photos, out, ExtractOptions(**TINY), model=model, settings=settings)
    assert (again.written, again.resumed) == (0, 4)
    other = ExtractOptions(**{**TINY, "max_boxes": 30})
    with pytest.raises(ValueError, match="other settings"):
        extract(photos, out, other, model=model, settings={**settings, "max_boxes": 30})


def test_same_size_batch_equals_single(tiny_detector, photos):
    model, _ = tiny_detector
    image = read_rgb(photos / "coffee.png")
    images = [image, np.ascontiguousarray(image[:, ::-1])]  # equal size: one backbone pass for both
    batched = model.detect(images)
    for det, im in zip(batched, images):
        one = model.detect([im])[0]
        assert torch.equal(det.obj_ids, one.obj_ids) and torch.equal(det.attr_ids, one.attr_ids)
        torch.testing.assert_close(det.features, one.features, rtol=0, atol=1e-5)
        torch.testing.assert_close(det.boxes, one.boxes, rtol=0, atol=1e-3)


def test_cli_shards_merge_equal_one_run(photos, tmp_path, monkeypatch, capsys):
    common = ["--images", str(photos), "--detector", "butd", "--weights", "random", "--config", str(TINY_CONFIG),
              "--min-size", "256", "--max-size", "427", "--min-boxes", "10", "--max-boxes", "20", "--no-progress",
              "--format", "npz"]  # fmt: skip
    assert main(["extract", "--out", str(tmp_path / "one"), *common]) == 0
    for rank in (0, 1):  # what torchrun --nproc-per-node 2 gives each process
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        assert main(["extract", "--out", str(tmp_path / "sharded"), *common]) == 0
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    shards = [str(shard_path(tmp_path / "sharded", r, 2)) for r in (0, 1)]
    assert main(["features", "merge", shards[0], "--out", str(tmp_path / "bad"), "--no-progress"]) == 1
    assert "missing ranks [1]" in capsys.readouterr().err
    assert main(["features", "merge", *shards, "--out", str(tmp_path / "merged"), "--format", "npz",
                 "--no-progress"]) == 0  # fmt: skip
    assert_same_records(records(tmp_path / "one"), records(tmp_path / "merged"))
    merged = read_metadata(tmp_path / "merged")
    assert merged["assigned"] == read_metadata(tmp_path / "one")["assigned"] and "zz_corrupt" in merged["skipped"]


@pytest.mark.parametrize("detector,dim", [("fasterrcnn_v1", 1024), ("fasterrcnn_v2", 1024), ("grid", 2048)])
def test_torchvision_detectors_and_grid(detector, dim, photos, tmp_path):
    box_options = {} if detector == "grid" else {"min_boxes": 5, "max_boxes": 12, "proposals": 60}
    opts = ExtractOptions(detector=detector, weights="random", min_size=128, max_size=200, progress=False,
                          **box_options)  # fmt: skip
    model, settings = build_detector(opts)
    names = ["coffee", "rocket"]
    report = extract([(n, photos / f"{n}.png") for n in names], tmp_path / "f.tsv", opts, model=model,
                     settings=settings)  # fmt: skip
    assert report.written == 2
    assert main(["features", "check", str(tmp_path / "f.tsv")]) == 0
    meta = json.loads((tmp_path / "f.tsv.extract.json").read_text())
    assert meta["feature_dim"] == dim and meta["random_weights"] and meta["detector"] == detector
    for n, rec in records(tmp_path / "f.tsv").items():
        image = read_rgb(photos / f"{n}.png")
        h, w = image.shape[:2]
        assert rec.feats.shape[1] == dim
        assert (rec.boxes >= 0).all() and (rec.boxes[:, 2] <= w + 1e-3).all() and (rec.boxes[:, 3] <= h + 1e-3).all()
        if detector != "grid":  # a TSV store cannot hold labels without attributes: features + boxes only
            assert 5 <= rec.num_regions <= 12 and rec.cls_prob is None and "note" in meta["fields"]
        single = model.detect([image])[0]
        np.testing.assert_allclose(rec.feats, single.features.numpy(), atol=1e-5)


def test_bad_options_are_named(photos, tmp_path):
    with pytest.raises(ValueError, match="--conf"):
        build_detector(ExtractOptions(**{**TINY, "conf": 0.3}))
    with pytest.raises(ValueError, match="either --boxes"):
        build_detector(ExtractOptions(**{**TINY, "boxes": 36}))
    with pytest.raises(ValueError, match="no downloadable default"):
        build_detector(ExtractOptions(detector="butd", weights="default"))
    bad = tmp_path / "bad.bin"
    torch.save({"backbone.stem.conv1.weight": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match=str(bad)):
        build_detector(ExtractOptions(detector="butd", weights=str(bad)))
    assert main(["extract", "--images", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.h5"),
                 "--weights", "random", "--config", str(TINY_CONFIG)]) == 1  # fmt: skip


class _StopsAfter:
    """A detector that is interrupted (Ctrl-C) after ``n`` calls; everything else goes to the real one."""

    def __init__(self, model, n: int) -> None:
        self.model, self.left = model, n

    def detect(self, images, **kw):
        if self.left == 0:
            raise KeyboardInterrupt
        self.left -= 1
        return self.model.detect(images, **kw)

    def __getattr__(self, name):
        return getattr(self.model, name)


@pytest.mark.parametrize("name", ["out", "feats.h5"])  # a directory store (npz) and a file store (HDF5)
def test_an_interrupted_extract_fails_check_and_resumes(photos, tmp_path, capsys, tiny_detector, name):
    """Ctrl-C after one image: the store stays marked incomplete (check exits 1), the next run resumes."""
    out = tmp_path / name
    model, settings = tiny_detector
    with pytest.raises(KeyboardInterrupt):
        extract(photos, out, ExtractOptions(**TINY, batch=1), model=_StopsAfter(model, 1), settings=settings)
    capsys.readouterr()
    assert main(["features", "check", str(out)]) == 1
    err = capsys.readouterr().err
    assert "did not finish" in err and "OK" not in err, err  # HDF5: the side file is not the store yet
    assert not read_metadata(out)["complete"]
    again = extract(photos, out, ExtractOptions(**TINY, batch=1), model=model, settings=settings)
    assert (again.written, again.resumed) == (3, 1)
    assert main(["features", "check", str(out)]) == 0, capsys.readouterr()
    assert read_metadata(out)["complete"] and sorted(records(out)) == ["astronaut", "chelsea", "coffee", "rocket"]
