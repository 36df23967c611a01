"""The fault-injection campaign as data: one table of faults per feature-store format and one per command.

Each fault is a :class:`Fault`: a name, the issue item it reproduces, a function that damages a healthy
setup (a store, a checkpoint, an output path) and what the command must answer: its exit status and a
phrase of its one-line message. ``test_store_faults.py`` and ``test_command_faults.py`` run every row;
a new format or command plugs in by adding a table here. Run the whole campaign with::

    PYTHONPATH=$PWD/src python -m pytest -q tests/faults

Faults that kill the process in the broken code (SIGBUS) run in a subprocess with a timeout
(``subprocess=True``), so a regression fails the test instead of taking pytest down.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from data.feature_fixtures import make_region_record

from mmbert.data import features

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Fault:
    name: str
    item: int  # the issue-12 item it reproduces
    inject: Callable[[Path], None]  # damage the store / setup at this path
    expect: str  # a phrase of the one-line error (or of the output, for rc 0)
    rc: int = 1
    subprocess: bool = False  # the unfixed code killed the process: run it at arm's length
    args: list[str] = field(default_factory=list)  # extra command-line arguments


# --- helpers that damage files -------------------------------------------------------------------------
def truncate(path: Path, keep: float) -> None:
    size = path.stat().st_size
    with open(path, "rb+") as f:
        f.truncate(int(size * keep))


def flip(path: Path, at: float, count: int = 64) -> None:
    """XOR ``count`` bytes from the fraction ``at`` of the file (a bad sector, a bit-rotten copy)."""
    data = bytearray(path.read_bytes())
    start = int(len(data) * at)
    for i in range(start, min(start + count, len(data))):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def swap_tsv_lines_keeping_stat(path: Path) -> None:
    """Swap two equally long lines and restore size and mtime, as ``cp -p``/``rsync -a`` of an edited file."""
    st = path.stat()
    lines = path.read_bytes().split(b"\n")
    lines[0], lines[1] = lines[1], lines[0]
    path.write_bytes(b"\n".join(lines))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def mark_incomplete(path: Path) -> None:
    """What a killed conversion leaves: the store plus its incomplete mark."""
    from mmbert.data.features.base import incomplete_marker

    incomplete_marker(path, path.is_dir()).touch()


def records(n: int = 4, dim: int = 16) -> list:
    """Records whose lines are equally long in TSV (same regions, same width): swapping two keeps the size."""
    return [make_region_record(f"img{i}", n=3, seed=i, dim=dim) for i in range(n)]


def build_store(path: Path, fmt: str, recs: list | None = None) -> Path:
    with features.open(path, mode="w", format=fmt) as out:
        for rec in recs or records():
            out.write(rec)
    return path


STORE_NAMES = {"tsv": "s.tsv", "hdf5": "s.h5", "lmdb": "s.lmdb", "npz": "s_npz"}


def _lmdb_data(path: Path) -> Path:
    return path / "data.mdb"


def _first_npz(path: Path) -> Path:
    return sorted(path.glob("*.npz"))[0]


# --- one table per store format: what `mmbert features check STORE` must say ---------------------------
STORE_FAULTS: dict[str, list[Fault]] = {
    "tsv": [
        Fault("killed conversion (incomplete mark)", 1, mark_incomplete, "incomplete"),
        Fault("stale index: lines swapped, size and mtime kept", 4, swap_tsv_lines_keeping_stat, "", rc=0),
        Fault("a JSON file passed as a TSV", 10,
              lambda p: p.write_text(json.dumps({"images": ["x" * 100] * 400})), "not a bottom-up-attention"),
        Fault("truncated mid-line", 10, lambda p: truncate(p, 0.6), "img"),
    ],
    "hdf5": [
        Fault("killed conversion (incomplete mark)", 1, mark_incomplete, "incomplete"),
        Fault("truncated file", 1, lambda p: truncate(p, 0.5), "cannot open as HDF5"),
    ],
    "lmdb": [
        Fault("killed conversion (incomplete mark)", 1, mark_incomplete, "incomplete"),
        Fault("truncated data.mdb (SIGBUS before the fix)", 7, lambda p: truncate(_lmdb_data(p), 0.5),
              "truncated LMDB file", subprocess=True),
        Fault("data.mdb cut to one page", 7, lambda p: truncate(_lmdb_data(p), 0.0001), "too short",
              subprocess=True),
        Fault("bit-flipped record pages", 7, lambda p: flip(_lmdb_data(p), 0.05, 4096 * 8), "s.lmdb",
              subprocess=True),
    ],
    "npz": [
        Fault("killed conversion (incomplete mark)", 1, mark_incomplete, "incomplete"),
        Fault("crafted .npy header larger than numpy's cap", 9, lambda p: _huge_header(_first_npz(p)),
              "exceeds the 10000-byte limit"),
        Fault("an empty directory", 10, lambda p: [f.unlink() for f in p.iterdir()], "not a feature store"),
        Fault("a directory of other files", 10,
              lambda p: [f.rename(f.with_suffix(".txt")) for f in p.glob("*.npz")], "not an npz feature store"),
    ],
}


def _huge_header(path: Path) -> None:
    """Rewrite the first member's .npy header length to 4 GB (a crafted file asking parsers to read it)."""
    import struct

    data = bytearray(path.read_bytes())
    start = data.index(b"\x93NUMPY")
    data[start + 6] = 2
    struct.pack_into("<I", data, start + 8, 0xFFFFFFF0)
    path.write_bytes(bytes(data))


def run_cli(argv: list[str], timeout: float = 60, limit_file_bytes: int | None = None) -> subprocess.CompletedProcess:
    """``python -m mmbert ARGV`` in a subprocess (optionally under ``ulimit -f``)."""
    def limits() -> None:
        if limit_file_bytes is not None:
            import resource

            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_file_bytes, limit_file_bytes))

    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "mmbert", *argv], capture_output=True, text=True, env=env,
                          timeout=timeout, preexec_fn=limits)  # fmt: skip


def assert_one_line_error(rc: int, err: str, expect: str, want_rc: int = 1) -> None:
    """The contract: the expected exit status, no traceback, and the message on one line."""
    assert rc == want_rc, (rc, err)
    assert "Traceback" not in err, err
    if want_rc:
        lines = [line for line in err.splitlines() if line.strip() and "Warning" not in line and "warn" not in line]
        assert lines and expect in err, err
