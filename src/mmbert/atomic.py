"""Atomic file writes: the one place where mmbert puts bytes on disk that a user could lose.

Every writer goes through a temporary file in the target's directory, fsyncs it, renames it over
the target and fsyncs the directory, so a crash or a kill at any moment leaves either the old file
or the new one, never half of one — and the rename itself survives a power loss.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_torch_save",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_csv",
    "atomic_write_json",
    "atomic_write_text",
    "fsync_dir",
]


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename or a new file in ``path`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(target: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` on a fresh temporary file beside ``target``, then swap it in.

    ``write`` receives a path (so libraries that only take file names, like safetensors, work). The
    temporary name is unique per call, so concurrent writers never collide on it; on any error the
    temporary file is removed and the old target stays as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(target.parent)
    return target


def atomic_write_bytes(target: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(target, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_text(target: str | os.PathLike, text: str) -> Path:
    return atomic_write(target, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def atomic_write_json(target: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    """JSON with a trailing newline, the way every mmbert config, record and result file is written."""
    return atomic_write_text(target, json.dumps(obj, indent=indent) + "\n")


def atomic_write_csv(target: str | os.PathLike, rows: Iterable[Sequence[Any]]) -> Path:
    """CSV rows with ``\\n`` line ends (the official submission files of NLVR2 and VCR)."""
    out = io.StringIO(newline="")
    csv.writer(out, lineterminator="\n").writerows(rows)
    return atomic_write_text(target, out.getvalue())


def atomic_torch_save(obj: Any, target: str | os.PathLike) -> Path:
    """``torch.save`` through :func:`atomic_write` (checkpoints, trainer state)."""
    import torch

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: torch.save streams into it
            torch.save(obj, f)

    return atomic_write(target, write)
