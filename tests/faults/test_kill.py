"""Item 1: `features convert` killed (SIGKILL) at several moments, into a new and into an existing store
of every format: the records the destination had stay readable, and the next run resumes and finishes
with every record bit-identical to the source."""

from __future__ import annotations

import os
import signal

import pytest
from data.feature_fixtures import assert_same_record, make_region_record
from faults.injection import STORE_NAMES, build_store

from mmbert.data import features
from mmbert.data.features import WRITERS
from mmbert.data.features.convert import convert

SOURCE = [make_region_record(f"img{i:02d}", n=2 + i % 3, seed=i) for i in range(8)]
BEFORE = SOURCE[:3]  # what an existing destination already holds
# moments: before the first record, half-way (for HDF5 right after a flush), after the last record while
# closing (for HDF5 just before the side file is swapped in)
MOMENTS = {"first": ("write", 0), "middle": ("write", 2), "closing": ("finish", 0)}


def _killed_convert(src, dst, fmt: str, where: str, at: int) -> None:
    """Fork; in the child, convert with the writer patched to SIGKILL itself at the moment; wait."""
    pid = os.fork()
    if pid == 0:  # child: never returns
        try:
            cls = WRITERS[fmt]
            count = {"n": 0}
            real_write, real_finish = cls._write, cls._finish

            def write(self, record):
                if where == "write" and count["n"] == at:
                    os.kill(os.getpid(), signal.SIGKILL)
                count["n"] += 1
                real_write(self, record)

            def finish(self):
                if where == "finish":
                    if fmt == "hdf5":
                        self._file.flush()
                    if fmt == "lmdb":
                        self.flush()
                    os.kill(os.getpid(), signal.SIGKILL)
                real_finish(self)

            cls._write, cls._finish = write, finish
            convert(src, dst, progress=False, dst_options={"flush_every": 2} if fmt == "hdf5" else None)
        finally:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status


@pytest.mark.filterwarnings("ignore:.*stale lock")
@pytest.mark.parametrize("moment", list(MOMENTS))
@pytest.mark.parametrize("existing", [False, True], ids=["new", "existing"])
@pytest.mark.parametrize("fmt", list(STORE_NAMES))
def test_a_killed_convert_keeps_the_old_records_and_resumes(tmp_path, fmt, existing, moment):
    src = build_store(tmp_path / "src.h5", "hdf5", SOURCE)
    dst = tmp_path / STORE_NAMES[fmt]
    if existing:
        build_store(dst, fmt, BEFORE)
    _killed_convert(src, dst, fmt, *MOMENTS[moment])
    if existing or dst.exists():
        with features.open(dst, format=fmt) as store:  # readable after the kill
            for rec in BEFORE if existing else []:
                assert_same_record(store[rec.image_id], rec)
            assert store.incomplete or fmt == "hdf5"
    report = convert(src, dst, progress=False)
    assert report.written + report.skipped == len(SOURCE)
    with features.open(dst, format=fmt) as store:
        assert not store.incomplete
        assert sorted(store.keys()) == [r.image_id for r in SOURCE]
        for rec in SOURCE:
            assert_same_record(store[rec.image_id], rec)
