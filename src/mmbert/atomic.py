"""Atomic file writes: the one place where mmbert puts bytes on disk that a user could lose.

Every writer goes through a temporary file in the target's directory, fsyncs it, renames it over
the target and fsyncs the directory, so a crash or a kill at any moment leaves either the old file
or the new one, never half of one — and the rename itself survives a power loss.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import re
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


def atomic_write(target: str | os.PathLike, write: Callable[[str], None], *, fsync: bool = True) -> Path:
    """Call ``write(tmp_path)`` on a fresh temporary file beside ``target``, then swap it in.

    ``write`` receives a path (so libraries that only take file names, like safetensors, work). The
    temporary name is unique per call, so concurrent writers never collide on it; on any error the
    temporary file is removed and the old target stays as it was. ``fsync=False`` skips the two fsyncs
    (still safe against a kill, not against a power loss) for writers of many small files that fsync
    their directory once at the end (the npz feature store).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        disk = None if isinstance(e, OSError) else _disk_error(e, target)
        if disk is not None:  # a library's own wrapper around a failed write: report it as what it is
            raise disk from e
        raise
    if fsync:
        fsync_dir(target.parent)
    return target


_OS_ERROR_TEXTS = {
    "No space left on device": errno.ENOSPC,
    "File too large": errno.EFBIG,
    "Read-only file system": errno.EROFS,
    "Permission denied": errno.EACCES,
    "Disk quota exceeded": errno.EDQUOT,
}


def _disk_error(e: BaseException, target: Path) -> OSError | None:
    """safetensors, torch.save and h5py wrap a failed write in their own exception types (``os error 27``,
    ``PytorchStreamWriter failed writing file``); find the OS error inside so it is reported with the file."""
    inner: BaseException | None = e
    while inner is not None:  # torch.save: the OSError, then a RuntimeError from closing the zip writer
        if isinstance(inner, OSError) and inner.errno:
            return OSError(inner.errno, os.strerror(inner.errno), str(target))
        inner = inner.__cause__ or inner.__context__
    text = str(e)
    match = re.search(r"os error (\d+)", text)
    code = int(match.group(1)) if match else next((c for t, c in _OS_ERROR_TEXTS.items() if t in text), None)
    if code is None:
        return None
    return OSError(code, os.strerror(code), str(target))


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
