"""``mmbert features check|info|convert``: every planted fault found and named, exit codes, resumption."""

from __future__ import annotations

import json
import pickle

import h5py
import lmdb
import numpy as np
from data.feature_fixtures import FEAT_DIM, make_region_record

from mmbert import cli
from mmbert.data import features


def write_store(path, records):
    with features.open(path, "w") as out:
        for r in records:
            out.write(r)
    return path


def three_records():
    """img0, img1, img2: three good 3-region records."""
    return [make_region_record(f"img{i}", 3, seed=i) for i in range(3)]


def hdf5_without(path, records, image_id: str, key: str):
    """An HDF5 store of ``records`` whose ``image_id`` group lacks its ``key`` dataset."""
    write_store(path, records)
    with h5py.File(path, "a") as f:
        del f[image_id][key]
    return path


def run(capsys, *argv):
    code = cli.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def planted_records():
    good = [make_region_record(f"good{i}", 4, seed=i) for i in range(3)]
    wrong_width = make_region_record("bad_width", 4, seed=10, dim=FEAT_DIM + 3)
    outside = make_region_record("bad_box", 4, seed=11)
    outside.boxes[2] = [5, 5, outside.image_size[1] + 40, 20]  # x2 far beyond the image width
    nan = make_region_record("bad_nan", 4, seed=12)
    nan.feats[1, 3] = np.nan
    flipped = make_region_record("bad_flip", 4, seed=13)
    flipped.boxes[0] = [30, 10, 20, 15]  # x2 < x1
    mismatch = make_region_record("bad_lengths", 4, seed=14)
    mismatch.obj_conf = mismatch.obj_conf[:3]
    return good, [wrong_width, outside, nan, flipped, mismatch]


def test_check_finds_every_planted_fault_in_a_tsv(tmp_path, capsys):
    good, bad = planted_records()
    path = write_store(
        tmp_path / "feats.tsv", good[:2] + bad + [make_region_record("bad_b64", 4, seed=15)] + good[2:]
    )
    lines = path.read_bytes().split(b"\n")
    victim = next(i for i, line in enumerate(lines) if line.startswith(b"bad_b64\t"))
    fields = lines[victim].split(b"\t")
    fields[9] = fields[9][:-7]  # truncated base64 of the features
    lines[victim] = b"\t".join(fields)
    path.write_bytes(b"\n".join(lines))

    code, out, err = run(capsys, "features", "check", str(path))
    assert code == 1
    reported = {line.split(":")[0] for line in out.splitlines()}
    assert reported == {"bad_width", "bad_box", "bad_nan", "bad_flip", "bad_lengths", "bad_b64"}
    assert "feature width 19, expected 16" in out
    assert "box outside the 80x60" in out and "features contain NaN" in out and "x2 <= x1" in out
    assert "obj_conf has 3 entries for 4 regions" in out and "base64" in out
    assert "6 of 9 records have problems" in err
    # wrong number of boxes, by option
    code, out, _ = run(capsys, "features", "check", str(path), "--max-boxes", "3")
    assert code == 1 and "good0: 4 boxes, expected at most 3" in out


def test_check_finds_missing_keys_in_hdf5_lmdb_and_npz(tmp_path, capsys):
    good = three_records()
    h5 = hdf5_without(tmp_path / "f.h5", good, "img1", "boxes")
    code, out, _ = run(capsys, "features", "check", str(h5))
    assert code == 1 and out.startswith("img1: group has no 'boxes' dataset")

    npz = write_store(tmp_path / "f_npz", good)
    with np.load(npz / "img2.npz") as z:
        arrays = {k: z[k] for k in z.files if k != "features"}
    np.savez(npz / "img2.npz", **arrays)
    code, out, _ = run(capsys, "features", "check", str(npz))
    assert code == 1 and out.startswith("img2: ") and "missing arrays ['features']" in out

    # a pickled VOLTA store whose keys list an id that has no record, and a record without boxes
    path = tmp_path / "volta.lmdb"
    env = lmdb.open(str(path), map_size=1 << 22)
    with env.begin(write=True) as txn:
        for r in good[:2]:
            item = {"image_id": r.image_id, "image_h": 60, "image_w": 80, "num_boxes": 3, "features": r.feats}
            if r.image_id == "img0":
                item["boxes"] = r.boxes
            txn.put(r.image_id.encode(), pickle.dumps(item))
        txn.put(b"keys", pickle.dumps([b"img0", b"img1", b"ghost"]))
    env.close()
    code, _, err = run(capsys, "features", "check", str(path))
    assert code == 1 and "trust-pickle" in err and "arbitrary code" in err
    code, out, _ = run(capsys, "features", "check", str(path), "--trust-pickle")
    assert code == 1
    assert "img1: record has no 'boxes'" in out
    assert "ghost: listed in the store's keys but has no record" in out
    assert "img0" not in out


def test_check_passes_a_good_store(tmp_path, capsys):
    path = write_store(tmp_path / "good.lmdb", three_records())
    code, out, _ = run(capsys, "features", "check", str(path))
    assert code == 0 and "all 3 records OK" in out


def test_info_reports_count_dims_and_boxes(tmp_path, capsys):
    records = [make_region_record(f"img{i}", 3 + i, seed=i) for i in range(4)]
    path = write_store(tmp_path / "f.h5", records)
    code, out, _ = run(capsys, "features", "info", str(path), "--json")
    assert code == 0
    info = json.loads(out)
    assert info["images"] == 4 and info["format"] == "hdf5" and info["feature_width"] == {"16": 4}
    assert info["boxes_per_image"] == {"min": 3.0, "mean": 4.5, "max": 6.0}
    assert 0 < info["box_width_fraction"]["min"] <= info["box_width_fraction"]["max"] <= 1
    assert info["optional_fields"]["cls_prob classes"] == 7
    code, out, _ = run(capsys, "features", "info", str(path))
    assert code == 0 and "hdf5 store, 4 images" in out


def test_convert_is_resumable(tmp_path, capsys):
    records = [make_region_record(f"img{i}", 3, seed=i) for i in range(5)]
    src = write_store(tmp_path / "src.h5", records)
    dst = tmp_path / "dst.tsv"
    write_store(dst, records[:2])  # an interrupted earlier run
    code, out, _ = run(capsys, "features", "convert", str(src), str(dst), "--no-progress")
    assert code == 0 and "3 written, 2 already present" in out
    with features.open(dst) as store:
        assert store.keys() == [r.image_id for r in records]
    code, out, _ = run(capsys, "features", "convert", str(src), str(tmp_path / "out_npz"), "--no-progress")
    assert code == 0 and "5 written" in out


def test_convert_skip_bad_lists_unreadable_records(tmp_path, capsys):
    src = hdf5_without(tmp_path / "src.h5", three_records(), "img1", "features")
    code, _, err = run(capsys, "features", "convert", str(src), str(tmp_path / "a.lmdb"), "--no-progress")
    assert code == 1 and "img1" in err and "features" in err
    code, out, err = run(
        capsys, "features", "convert", str(src), str(tmp_path / "b.lmdb"), "--no-progress", "--skip-bad"
    )
    assert code == 1 and "skipped img1" in err and "2 written" in out


def test_check_reports_duplicate_tsv_ids(tmp_path, capsys):
    path = write_store(tmp_path / "d.tsv", three_records())
    lines = path.read_bytes().split(b"\n")
    path.write_bytes(b"\n".join([lines[0], lines[1], lines[0], lines[2], b""]))
    code, out, _ = run(capsys, "features", "check", str(path))
    assert (
        code == 1 and out.strip() == "img0: appears on more than one line of the TSV; only the first is read"
    )
    with features.open(path) as store:
        assert store.keys() == ["img0", "img1", "img2"]
        assert store["img1"].num_regions == 3 and store["img2"].image_id == "img2"
