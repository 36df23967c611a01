"""Every row of the store-fault tables: ``mmbert features check`` answers with its exit status and one
line, never a traceback or a signal; plus the specific store defects of issue 12 (4, 5, 7, 10, 12)."""

from __future__ import annotations

import multiprocessing
import os
import shutil

import numpy as np
import pytest
from data.feature_fixtures import assert_same_record, make_region_record
from faults.injection import STORE_FAULTS, STORE_NAMES, assert_one_line_error, build_store, records, run_cli

from mmbert.cli import main
from mmbert.data import features
from mmbert.data.features.base import FeatureStoreError, is_incomplete
from mmbert.lock import LockedError

ROWS = [(fmt, fault) for fmt, table in STORE_FAULTS.items() for fault in table]


@pytest.mark.parametrize(("fmt", "fault"), ROWS, ids=[f"{f}-{x.name}" for f, x in ROWS])
def test_store_fault_table(fmt, fault, tmp_path, capsys):
    store = build_store(tmp_path / STORE_NAMES[fmt], fmt)
    for idx in tmp_path.glob("*.idx"):  # a first open indexes the TSV: the faults hit an indexed store
        idx.unlink()
    with features.open(store):
        pass
    fault.inject(store)
    if fault.subprocess:
        done = run_cli(["features", "check", str(store)], timeout=60)
        assert done.returncode >= 0, f"killed by signal {-done.returncode}: {done.stderr}"
        rc, text = done.returncode, done.stdout + done.stderr
    else:
        rc = main(["features", "check", str(store)])
        captured = capsys.readouterr()
        text = captured.out + captured.err
    assert_one_line_error(rc, text, fault.expect, fault.rc)
    assert not list(tmp_path.glob("*.json.idx")), "an .idx was left beside a file that is not a store"


def test_stale_tsv_index_never_returns_another_images_features(tmp_path):
    """Item 4: swapped lines with size and mtime restored (cp -p, rsync -a): every read is the right image."""
    from faults.injection import swap_tsv_lines_keeping_stat

    recs = records()
    path = build_store(tmp_path / "s.tsv", "tsv", recs)
    with features.open(path) as store:
        assert store["img0"].image_id == "img0"
    swap_tsv_lines_keeping_stat(path)
    with features.open(path) as store:
        assert not store.index_reused  # the fingerprint in the index caught the change
        for rec in recs:
            assert_same_record(store[rec.image_id], rec)
    # and the per-read check alone, with a fingerprint that cannot see the swap (the index forced stale)
    with features.open(path) as store:
        store.index  # noqa: B018 - build
        store.index.row["img0"], store.index.row["img1"] = store.index.row["img1"], store.index.row["img0"]
        assert_same_record(store["img0"], recs[0])
        assert_same_record(store["img1"], recs[1])


@pytest.mark.parametrize("image_id", [".hidden", "..", "a/b", ".", "../escape", "~user", "%2E"])
def test_npz_ids_that_are_not_file_names_round_trip_inside_the_store(tmp_path, image_id):
    """Item 5: ids that are not plain file names are encoded into safe names, listed and read back."""
    root = tmp_path / "store"
    rec = make_region_record(image_id, n=2, seed=0)
    with features.open(root, mode="w", format="npz") as out:
        out.write(rec)
    with features.open(root, format="npz") as store:
        assert store.keys() == [image_id]
        assert_same_record(store[image_id], rec)
    inside = {p.name for p in root.iterdir()} - {".lock"}
    assert len(inside) == 1 and not next(iter(inside)).startswith(".")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]  # nothing written outside


def test_a_second_writer_into_one_store_is_refused_naming_the_holder(tmp_path):
    """Item 12 (and 3 for stores): two converts into one npz directory do not collide; the second is refused."""
    root = tmp_path / "store"
    with features.open(root, mode="w", format="npz") as first:
        first.write(make_region_record("a", n=2, seed=0))
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        child = ctx.Process(target=_try_open, args=(root, queue))
        child.start()
        child.join(30)
        message = queue.get(timeout=5)
    assert f"in use by process {os.getpid()}" in message
    with features.open(root, mode="a", format="npz") as again:  # released on close
        again.write(make_region_record("b", n=2, seed=1))
    assert sorted(features.open(root).keys()) == ["a", "b"]


def _try_open(root, queue) -> None:
    try:
        features.open(root, mode="a", format="npz")
        queue.put("opened")
    except LockedError as e:
        queue.put(str(e))


def test_stale_npz_temp_files_are_removed_and_never_listed(tmp_path):
    root = build_store(tmp_path / "store", "npz")
    (root / ".img9.npz.abc123.tmp").write_bytes(b"half")
    (root / ".tmp-999.npz").write_bytes(b"half")
    with features.open(root, mode="a", format="npz"):
        pass
    assert not [p for p in root.iterdir() if p.name.endswith(".tmp") or p.name.startswith(".tmp-")]


def test_check_refuses_an_empty_store_and_a_directory_that_is_no_store(tmp_path, capsys):
    """Item 10: `features check` on nothing says so and exits 1."""
    (tmp_path / "empty").mkdir()
    assert main(["features", "check", str(tmp_path / "empty")]) == 1
    assert "not a feature store" in capsys.readouterr().err
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "readme.txt").write_text("hello")
    assert main(["features", "check", str(tmp_path / "docs")]) == 1
    assert "not an npz feature store" in capsys.readouterr().err


def test_a_json_file_as_a_tsv_is_named_briefly_and_leaves_no_index(tmp_path, capsys):
    """Item 10: the message quotes the line's start, not its 40 kB, and no .idx is written."""
    path = tmp_path / "captions.json"
    path.write_text('{"annotations": [' + ", ".join(['{"caption": "a dog"}'] * 2000) + "]}")
    assert main(["features", "info", str(path), "--sample", "2"]) == 1
    err = capsys.readouterr().err
    assert "not a bottom-up-attention feature TSV" in err and len(err) < 600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["captions.json"]


def test_a_bit_flipped_lmdb_record_names_the_image(tmp_path):
    """Item 7: corruption inside a record's value is reported with the store and the image id."""
    path = build_store(tmp_path / "s.lmdb", "lmdb")
    data = (path / "data.mdb").read_bytes()
    (path / "data.mdb").write_bytes(data.replace(b"MMRF", b"XXXX"))  # every record's header damaged
    with features.open(path) as store:
        with pytest.raises(FeatureStoreError, match=r"s\.lmdb: image 'img\d'"):
            [store[i] for i in store.keys()]


def test_crafted_compressed_npz_declaring_a_huge_array_is_refused_before_allocation(tmp_path):
    """Item 9: a compressed member whose header declares terabytes fails with a message, not a MemoryError."""
    import io
    import zipfile

    root = tmp_path / "store"
    root.mkdir()
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000, 1000000), }"
    header = header + " " * (63 - len(header) % 64) + "\n"
    npy = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + b"\0" * 64
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name in ("features", "boxes", "img_h", "img_w"):
            z.writestr(f"{name}.npy", npy)
    (root / "x.npz").write_bytes(buf.getvalue())
    with features.open(root) as store:
        with pytest.raises(FeatureStoreError, match="declares"):
            store["x"]


def test_partial_stores_fail_check_until_the_conversion_finishes(tmp_path, capsys):
    """Item 1: a store is marked complete only by a finished conversion (TSV / npz / LMDB / HDF5)."""
    src = build_store(tmp_path / "src.h5", "hdf5")
    for fmt, name in STORE_NAMES.items():
        dst = tmp_path / name
        with pytest.raises(RuntimeError, match="boom"):
            with features.open(dst, mode="w", format=fmt) as out:
                out.write(features.open(src)["img0"])
                raise RuntimeError("boom")
        capsys.readouterr()
        assert main(["features", "check", str(dst)]) == 1, fmt
        err = capsys.readouterr().err
        assert "did not finish" in err and "OK" not in err, (fmt, err)
        if fmt == "hdf5":  # it wrote into its side file only: no store yet, and check says why
            assert not dst.exists() and "not written yet" in err, err
        assert main(["features", "convert", str(src), str(dst), "--no-progress"]) == 0
        assert main(["features", "check", str(dst)]) == 0, capsys.readouterr()
        capsys.readouterr()


def test_a_stopped_hdf5_append_leaves_the_previous_store_refused_by_check(tmp_path, capsys):
    """Item 1 for an HDF5 append: the store on disk is still the previous complete one (the new record is
    only in the side file), and check refuses it as unfinished until the append is resumed and closed."""
    dst = build_store(tmp_path / "s.h5", "hdf5")
    before = sorted(features.open(dst).keys())
    extra = make_region_record("new", n=2, seed=5)
    with pytest.raises(KeyboardInterrupt):
        with features.open(dst, mode="a") as out:
            out.write(extra)
            raise KeyboardInterrupt
    assert sorted(features.open(dst).keys()) == before
    capsys.readouterr()
    assert main(["features", "check", str(dst)]) == 1
    assert "did not finish" in capsys.readouterr().err
    with features.open(dst, mode="a") as out:  # resumes from the side file
        assert "new" in out
    assert sorted(features.open(dst).keys()) == sorted([*before, "new"])
    assert main(["features", "check", str(dst)]) == 0, capsys.readouterr()


@pytest.mark.parametrize("fmt", list(STORE_NAMES))
def test_close_in_a_finally_after_ctrl_c_keeps_the_store_incomplete_and_resumable(fmt, tmp_path, capsys):
    """close() while an exception is on its way out acts as abort(): the mark stays, the records too."""
    dst = tmp_path / STORE_NAMES[fmt]
    with pytest.raises(KeyboardInterrupt):
        writer = features.open(dst, mode="w", format=fmt)
        try:
            writer.write(make_region_record("a", n=2, seed=0))
            raise KeyboardInterrupt
        finally:
            writer.close()
    assert is_incomplete(dst)
    capsys.readouterr()
    assert main(["features", "check", str(dst)]) == 1
    assert "did not finish" in capsys.readouterr().err
    with features.open(dst, mode="a", format=fmt) as again:
        assert "a" in again
        again.write(make_region_record("b", n=2, seed=1))
    assert not is_incomplete(dst) and sorted(features.open(dst).keys()) == ["a", "b"]


def _flocked(lock_file) -> bool:
    import fcntl

    fd = os.open(lock_file, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


@pytest.mark.parametrize("fmt", list(STORE_NAMES))
def test_a_second_writer_in_the_same_process_is_refused_and_close_frees_the_lock(fmt, tmp_path):
    """Item 12 within one process: a second writer is refused naming the store; closing releases the flock."""
    from mmbert.lock import _HELD

    dst = tmp_path / STORE_NAMES[fmt]
    first = features.open(dst, mode="w", format=fmt)
    with pytest.raises(LockedError, match=rf"{dst}: this {fmt} feature store is already open for writing in this "
                                          rf"process \(pid {os.getpid()}\)"):  # fmt: skip
        features.open(dst, mode="a", format=fmt)
    first.write(make_region_record("a", n=2, seed=0))
    first.close()
    lock_file = first._lock.file
    assert not _flocked(lock_file) and not _HELD
    with features.open(dst, mode="a", format=fmt) as again:
        assert "a" in again
    assert not _flocked(lock_file) and not _HELD


def test_writers_leave_no_stray_copy_on_success(tmp_path):
    path = build_store(tmp_path / "s.h5", "hdf5")
    shutil.copy(path, tmp_path / "copy.h5")
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["copy.h5", "s.h5"]
    with features.open(path) as store:
        assert np.array_equal(store["img1"].feats, records()[1].feats)
