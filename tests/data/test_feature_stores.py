"""Feature stores: exact round trips between all four backends, the reference TSV layouts, the offset
index, flat memory on random access, errors that name the file and image, and the pickle opt-in."""

from __future__ import annotations

import base64
import csv
import itertools
import json
import os
import pickle
import tracemalloc
from dataclasses import replace

import h5py
import lmdb
import numpy as np
import pytest
from data.feature_fixtures import assert_same_record, make_region_record

import mmbert.features
from mmbert.data import features
from mmbert.data.features import FeatureStoreError, MissingImageError, PickleRefusedError
from mmbert.data.features.tsv import TSVReader

STORE_NAMES = {"tsv": "feats.tsv", "hdf5": "feats.h5", "lmdb": "feats.lmdb", "npz": "feats_npz"}
LXMERT_FIELDS = ["img_id", "img_h", "img_w", "objects_id", "objects_conf", "attrs_id", "attrs_conf", "num_boxes",
                 "boxes", "features"]  # fmt: skip


def write_store(path, records, **kwargs):
    with features.open(path, "w", **kwargs) as out:
        for rec in records:
            out.write(rec)
    return path


def b64(array, dtype) -> str:
    return base64.b64encode(np.ascontiguousarray(array, dtype=dtype).tobytes()).decode("ascii")


def write_lxmert_tsv(path, records):
    """A writer that follows LXMERT's published field order and dtypes (csv.DictWriter, as in the
    bottom-up-attention extraction scripts), independent of mmbert's writer."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, delimiter="\t", fieldnames=LXMERT_FIELDS)
        for r in records:
            writer.writerow({
                "img_id": r.image_id, "img_h": r.image_size[0], "img_w": r.image_size[1],
                "objects_id": b64(r.obj_id, "<i8"), "objects_conf": b64(r.obj_conf, "<f4"),
                "attrs_id": b64(r.attr_id, "<i8"), "attrs_conf": b64(r.attr_conf, "<f4"),
                "num_boxes": len(r.boxes), "boxes": b64(r.boxes, "<f4"), "features": b64(r.feats, "<f4"),
            })  # fmt: skip


def test_open_picks_backend_from_path(tmp_path, feature_records):
    for fmt, name in STORE_NAMES.items():
        path = write_store(tmp_path / name, feature_records)
        assert features.detect_format(path) == fmt
        with mmbert.features.open(path) as store:  # the public re-export
            assert store.format == fmt
            assert len(store) == len(feature_records)
            assert store.keys() == [r.image_id for r in feature_records] or fmt == "npz"
            assert sorted(store.keys()) == sorted(r.image_id for r in feature_records)
            assert feature_records[2].image_id in store and "nope" not in store and 3 not in store
            assert isinstance(store, features.FeatureStore)


@pytest.mark.parametrize("src_fmt,dst_fmt", list(itertools.permutations(STORE_NAMES, 2)))
def test_round_trip_between_backends_is_exact(tmp_path, feature_records, src_fmt, dst_fmt):
    src = write_store(tmp_path / STORE_NAMES[src_fmt], feature_records)
    dst = tmp_path / ("out_" + STORE_NAMES[dst_fmt])
    report = mmbert.features.convert(src, dst, progress=False)
    assert report.written == len(feature_records) and not report.failed
    # and back again: nothing lost in either direction
    back = tmp_path / ("back_" + STORE_NAMES[src_fmt])
    mmbert.features.convert(dst, back, progress=False)
    with features.open(dst) as a, features.open(back) as b:
        for rec in feature_records:
            assert_same_record(rec, a[rec.image_id])
            assert_same_record(rec, b[rec.image_id])


def test_reads_lxmert_10_field_tsv_from_reference_writer(tmp_path, feature_records):
    path = tmp_path / "train2014_obj36.tsv"
    write_lxmert_tsv(path, feature_records)
    with features.open(path) as store:
        for rec in feature_records:
            assert_same_record(
                rec, store[rec.image_id], fields=("obj_id", "obj_conf", "attr_id", "attr_conf")
            )
            assert store[rec.image_id].cls_prob is None
    # and mmbert's own writer produces lines that the reference field order reads back
    ours = write_store(tmp_path / "ours.tsv", [_without_cls_prob(r) for r in feature_records])
    with open(ours, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", fieldnames=LXMERT_FIELDS))
    for rec, row in zip(feature_records, rows):
        assert row["img_id"] == rec.image_id and int(row["img_h"]) == rec.image_size[0]
        n = int(row["num_boxes"])
        feats = np.frombuffer(base64.b64decode(row["features"]), dtype=np.float32).reshape(n, -1)
        assert np.array_equal(feats, rec.feats)
        assert np.array_equal(np.frombuffer(base64.b64decode(row["objects_id"]), dtype=np.int64), rec.obj_id)


def _without_cls_prob(rec):
    return replace(rec, cls_prob=None)


def test_reads_6_field_bottom_up_layout_width_before_height(tmp_path, feature_records):
    path = tmp_path / "bu.tsv"
    with open(path, "w") as f:
        for r in feature_records:  # image_id, image_w, image_h, num_boxes, boxes, features
            f.write("\t".join([r.image_id, str(r.image_size[1]), str(r.image_size[0]), str(len(r.boxes)),
                               b64(r.boxes, "<f4"), b64(r.feats, "<f4")]) + "\n")  # fmt: skip
    with features.open(path) as store:
        for rec in feature_records:
            got = store[rec.image_id]
            assert got.image_size == rec.image_size
            assert_same_record(rec, got, fields=())
    # mmbert writes the same layout on request
    bare = replace(
        feature_records[0], cls_prob=None, obj_id=None, obj_conf=None, attr_id=None, attr_conf=None
    )
    out = write_store(tmp_path / "bu_ours.tsv", [bare], layout="bottomup")
    assert out.read_bytes() == path.read_bytes().split(b"\n")[0] + b"\n"


def test_reads_volta_13_field_layout_with_cls_prob(tmp_path, feature_records):
    path = tmp_path / "volta.tsv"
    with open(path, "w") as f:
        for r in feature_records:
            fields = [r.image_id, str(r.image_size[0]), str(r.image_size[1]), b64(r.obj_id, "<i8"),
                      b64(r.obj_conf, "<f4"), b64(r.attr_id, "<i8"), b64(r.attr_conf, "<f4"), str(len(r.boxes)),
                      b64(r.boxes, "<f4"), b64(r.feats, "<f4"), b64(r.cls_prob, "<f4"),
                      b64(np.zeros((len(r.boxes), 3)), "<f4"), b64(np.zeros((len(r.boxes), 4)), "<f4")]  # fmt: skip
            f.write("\t".join(fields) + "\n")
    with features.open(path) as store:
        for rec in feature_records:
            assert_same_record(rec, store[rec.image_id])


def test_tsv_index_is_cached_reused_and_invalidated(tmp_path, feature_records, monkeypatch):
    from mmbert.data.features.tsv import TSVIndex

    path = tmp_path / "feats.tsv"
    write_lxmert_tsv(path, feature_records)
    builds = []
    original_build = TSVIndex.build.__func__
    monkeypatch.setattr(
        TSVIndex, "build", classmethod(lambda cls, p: builds.append(p) or original_build(cls, p))
    )
    first = TSVReader(path)
    assert first.keys() and not first.index_reused and builds == [path]  # built by streaming, then cached
    assert (tmp_path / "feats.tsv.idx").exists()
    second = TSVReader(path)
    assert_same_record(feature_records[3], second[feature_records[3].image_id], fields=())
    assert second.index_reused and builds == [path]  # the second open does not rescan
    # the TSV changes (size and mtime): the cached index is stale and rebuilt
    r = make_region_record("extra", 2, seed=9)
    with open(path, "a") as f:
        f.write("\t".join(["extra", "60", "80", b64(r.obj_id, "<i8"), b64(r.obj_conf, "<f4"), b64(r.attr_id, "<i8"),
                           b64(r.attr_conf, "<f4"), "2", b64(r.boxes, "<f4"), b64(r.feats, "<f4")]) + "\n")  # fmt: skip
    third = TSVReader(path)
    assert "extra" in third and not third.index_reused and builds == [path, path]
    assert_same_record(r, third["extra"], fields=("obj_id", "attr_conf"))


def test_writer_index_lets_the_first_reader_skip_the_scan(tmp_path, feature_records):
    path = write_store(tmp_path / "w.tsv", feature_records)
    reader = TSVReader(path)
    reader.keys()
    assert reader.index_reused


@pytest.mark.parametrize("fmt", list(STORE_NAMES))
def test_random_access_memory_stays_flat(tmp_path, fmt):
    """The reader holds at most a few records: peak traced memory (numpy and Python allocations) while
    reading every record of a 30-record store twice, in random order, stays under 5 records' worth
    (the line/zip buffer, the decoded arrays and the previous record), never the store's size."""
    records = [make_region_record(f"img{i}", 36, seed=i, dim=1024, full=False) for i in range(30)]
    record_bytes = records[0].feats.nbytes
    path = write_store(tmp_path / STORE_NAMES[fmt], records)
    del records
    store = features.open(path)
    ids = store.keys()
    store[ids[0]]  # open the handle and build the index outside the measurement
    order = np.random.default_rng(0).permutation(len(ids) * 2) % len(ids)
    tracemalloc.start()
    base, _ = tracemalloc.get_traced_memory()
    for i in order:
        rec = store[ids[i]]
        assert rec.feats.shape == (36, 1024)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak - base < 5 * record_bytes, f"{fmt}: peak {peak - base} bytes for records of {record_bytes}"
    store.close()


def test_tsv_reads_one_line_by_positioned_read(tmp_path, feature_records, monkeypatch):
    path = write_store(tmp_path / "feats.tsv", feature_records)
    lines = path.read_bytes().split(b"\n")
    store = TSVReader(path)
    store.keys()
    reads = []
    real_pread = os.pread
    monkeypatch.setattr(os, "pread", lambda fd, n, off: reads.append((n, off)) or real_pread(fd, n, off))
    rec = store[feature_records[3].image_id]
    assert rec.image_id == feature_records[3].image_id
    offset = sum(len(line) + 1 for line in lines[:3])
    assert reads == [(len(lines[3]) + 1, offset)]


def test_errors_name_file_and_image(tmp_path, feature_records):
    path = tmp_path / "bad.tsv"
    write_lxmert_tsv(path, feature_records)
    text = path.read_text().split("\n")
    victim = feature_records[1].image_id
    cols = text[1].split("\t")
    cols[9] = cols[9][: len(cols[9]) // 2 - 3]  # truncated base64 of the features
    text[1] = "\t".join(cols)
    path.write_text("\n".join(text))
    with features.open(path) as store:
        with pytest.raises(FeatureStoreError) as err:
            store[victim]
        assert str(path) in str(err.value) and victim in str(err.value)
        assert not type(err.value).__module__.startswith("binascii")
        with pytest.raises(KeyError) as missing:
            store["COCO_nope"]
        assert isinstance(missing.value, MissingImageError)
        assert str(path) in str(missing.value) and "COCO_nope" in str(missing.value)
        assert store.get("COCO_nope") is None
        assert_same_record(feature_records[0], store[feature_records[0].image_id], fields=())


@pytest.mark.parametrize("fmt", ["hdf5", "lmdb", "npz"])
def test_missing_image_error_names_store(tmp_path, feature_records, fmt):
    path = write_store(tmp_path / STORE_NAMES[fmt], feature_records)
    with features.open(path) as store, pytest.raises(MissingImageError, match="'absent'") as err:
        store["absent"]
    assert str(path) in str(err.value)


def test_hdf5_missing_dataset_names_image(tmp_path, feature_records):
    path = write_store(tmp_path / "f.h5", feature_records)
    with h5py.File(path, "a") as f:
        del f[feature_records[2].image_id]["boxes"]
    with features.open(path) as store, pytest.raises(FeatureStoreError, match="'boxes'") as err:
        store[feature_records[2].image_id]
    assert feature_records[2].image_id in str(err.value) and str(path) in str(err.value)


def write_pickled_lmdb(path, items: dict[bytes, dict], keys: list[bytes]):
    env = lmdb.open(str(path), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for key, item in items.items():
            txn.put(key, pickle.dumps(item))
        txn.put(b"keys", pickle.dumps(keys))
    env.close()


def test_pickled_lmdb_refused_unless_trusted(tmp_path, feature_records):
    """VOLTA's convert_*_lmdb.py pickles the raw TSV row (strings); ViLBERT pickles numpy arrays."""
    volta = {}
    for r in feature_records[:3]:
        volta[r.image_id.encode()] = {
            "img_id": r.image_id, "img_h": str(r.image_size[0]), "img_w": str(r.image_size[1]),
            "objects_id": b64(r.obj_id, "<i8"), "objects_conf": b64(r.obj_conf, "<f4"),
            "attrs_id": b64(r.attr_id, "<i8"), "attrs_conf": b64(r.attr_conf, "<f4"),
            "num_boxes": str(len(r.boxes)), "boxes": b64(r.boxes, "<f4"), "features": b64(r.feats, "<f4"),
            "cls_prob": b64(r.cls_prob, "<f4"),
        }  # fmt: skip
    for r in feature_records[3:]:
        volta[r.image_id.encode()] = {
            "image_id": r.image_id, "image_h": r.image_size[0], "image_w": r.image_size[1],
            "num_boxes": len(r.boxes), "boxes": r.boxes, "features": r.feats, "cls_prob": r.cls_prob,
        }  # fmt: skip
    path = tmp_path / "volta_feat.lmdb"
    write_pickled_lmdb(path, volta, list(volta))
    with pytest.raises(PickleRefusedError) as err:
        features.open(path)
    message = str(err.value)
    assert "pickle" in message and "arbitrary code" in message and "trust_pickle=True" in message
    with features.open(path, trust_pickle=True) as store:
        assert store.keys() == [r.image_id for r in feature_records]
        for r in feature_records[:3]:
            assert_same_record(r, store[r.image_id])
        for r in feature_records[3:]:
            assert_same_record(r, store[r.image_id], fields=("cls_prob",))
    # converting once gives a pickle-free store that opens without the flag
    out = tmp_path / "safe.lmdb"
    mmbert.features.convert(path, out, trust_pickle=True, progress=False)
    with features.open(out) as store:
        assert store.encoding == "mmbert"
        assert_same_record(feature_records[0], store[feature_records[0].image_id])


def test_lmdb_map_grows_as_needed(tmp_path):
    records = [make_region_record(f"i{i}", 36, seed=i, dim=512, full=False) for i in range(8)]  # ~600 kB
    with features.open(tmp_path / "small.lmdb", "w", map_size=1 << 16, commit_bytes=1 << 17) as out:
        for r in records:
            out.write(r)
    with features.open(tmp_path / "small.lmdb") as store:
        assert len(store) == 8
        assert_same_record(records[5], store["i5"], fields=())


def test_writers_refuse_to_replace_and_resume_on_append(tmp_path, feature_records):
    for fmt, name in STORE_NAMES.items():
        path = write_store(tmp_path / name, feature_records[:2])
        with pytest.raises(FeatureStoreError, match="already exists"):
            features.open(path, "w")
        with features.open(path, "a") as out:
            assert feature_records[0].image_id in out and feature_records[3].image_id not in out
            for r in feature_records[2:]:
                out.write(r)
        with features.open(path) as store:
            assert sorted(store.keys()) == sorted(r.image_id for r in feature_records), fmt


def test_tsv_append_cuts_a_torn_last_line(tmp_path, feature_records):
    path = write_store(tmp_path / "t.tsv", feature_records[:3])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])  # killed while writing the third line
    with features.open(path, "a") as out:
        assert feature_records[2].image_id not in out
        out.write(feature_records[2])
    with features.open(path) as store:
        assert len(store) == 3
        assert_same_record(feature_records[2], store[feature_records[2].image_id])


def test_store_pickles_without_handle_and_reopens(tmp_path, feature_records):
    for name in STORE_NAMES.values():
        store = features.open(write_store(tmp_path / name, feature_records))
        store[feature_records[0].image_id]
        clone = pickle.loads(pickle.dumps(store))
        assert clone._handle is None
        assert_same_record(feature_records[4], clone[feature_records[4].image_id])
        store.close()
        clone.close()


def test_npz_compressed_and_truncated_files(tmp_path, feature_records):
    path = write_store(tmp_path / "z_npz", feature_records, compress=True)
    with features.open(path) as store:
        for rec in feature_records:
            assert_same_record(rec, store[rec.image_id])
    plain = write_store(tmp_path / "p_npz", feature_records)
    victim = plain / f"{feature_records[1].image_id}.npz"
    victim.write_bytes(victim.read_bytes()[:300])
    with features.open(plain) as store, pytest.raises(FeatureStoreError, match="unreadable npz") as err:
        store[feature_records[1].image_id]
    assert feature_records[1].image_id in str(err.value)


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads RSS from /proc (Linux)")
def test_hdf5_rss_does_not_grow_with_images_read(tmp_path):
    """HDF5 handles opened relative to a group leaked a few kB per image (HDF5 2.0 / h5py 3.16): over a
    whole epoch of a large store that is gigabytes. Reading 2000 images twice must not grow RSS beyond the
    library's bounded metadata cache."""
    path = tmp_path / "many.h5"
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        for i in range(2000):
            g = f.create_group(f"img{i}")
            g["features"] = rng.standard_normal((2, 4), dtype=np.float32)
            g["boxes"] = np.array([[0, 0, 2, 2], [1, 1, 3, 3]], dtype=np.float32)
            g["img_h"], g["img_w"] = 10, 10
    with features.open(path) as store:
        ids = store.keys()
        store[ids[0]]
        start = _rss_mb()
        for image_id in ids:
            store[image_id]
        after_first = _rss_mb()
        for image_id in ids:
            store[image_id]
        end = _rss_mb()
    assert end - after_first < 2.0, f"RSS grew {end - after_first:.1f} MB re-reading the same images"
    assert end - start < 12.0, f"RSS grew {end - start:.1f} MB reading 2000 tiny images"


def test_lmdb_ids_live_in_their_own_sub_database(tmp_path, feature_records):
    """keys()/in read the ids sub-database, never the records; a store without it (written by hand, or
    by an older mmbert) is still read, and gets one when appended to."""
    from mmbert.data.features.lmdb import META, META_KEY, encode_record

    path = tmp_path / "old.lmdb"
    env = lmdb.open(str(path), map_size=1 << 24)
    with env.begin(write=True) as txn:
        txn.put(META_KEY, json.dumps(META).encode())
        for r in feature_records[:3]:
            txn.put(r.image_id.encode(), encode_record(r))
    env.close()
    with features.open(path) as store:
        assert store._ids_db() is None
        assert store.keys() == [r.image_id for r in feature_records[:3]]
        assert feature_records[1].image_id in store
    with features.open(path, "a") as out:
        assert len(out) == 3 and feature_records[2].image_id in out
        out.write(feature_records[3])
    with features.open(path) as store:
        assert store._ids_db() is not None
        assert store.keys() == [r.image_id for r in feature_records[:4]]
        assert_same_record(feature_records[3], store[feature_records[3].image_id])


def test_hdf5_written_by_other_tools_reads_with_canonical_dtypes(tmp_path, feature_records):
    """VOLTA's tsv_to_h5 layout written with h5py directly, other dtypes (float64 boxes, int32 labels,
    int32 sizes): values come back exact, as float32/int64."""
    path = tmp_path / "volta.h5"
    with h5py.File(path, "w") as f:
        for r in feature_records:
            g = f.create_group(r.image_id)
            g["features"] = r.feats
            g["boxes"] = r.boxes.astype(np.float64)
            g["obj_id"], g["attr_id"] = r.obj_id.astype(np.int32), r.attr_id.astype(np.int32)
            g["obj_conf"], g["attr_conf"] = r.obj_conf, r.attr_conf
            g["img_h"], g["img_w"] = np.int32(r.image_size[0]), np.int32(r.image_size[1])
    with features.open(path) as store:
        for r in feature_records:
            assert_same_record(r, store[r.image_id], fields=("obj_id", "obj_conf", "attr_id", "attr_conf"))
