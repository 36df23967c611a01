"""Exclusive locks on run directories and feature stores, so that two processes never write one place.

A lock is an ``fcntl.flock`` on a small file (``<run>/.lock``, or ``.<store>.lock`` beside a file store)
holding the holder's pid, host, start time and command. The kernel releases the flock when the holder
exits for any reason (a crash, SIGKILL), so a lock never outlives its process; a lock file that still
names a pid but is no longer locked is the trace of a crash, reported as stale and taken over. A second
process is refused at once with a message naming the holder's pid. A run-directory lock is re-entrant
within its process (the command and the trainer inside it both ask for it): every ``PathLock`` object that
acquired it holds one share, and the flock goes only when the last share is released. A feature-store lock
is not (``reentrant=False``): a second writer in the same process is refused like one in another process.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
import warnings
from pathlib import Path

__all__ = ["LockedError", "PathLock", "lock_file_for", "lock_run_directory"]

LOCK_NAME = ".lock"

_HELD: dict[tuple[str, int], PathLock] = {}  # (resolved lock-file path, pid) -> the lock held on it


class LockedError(RuntimeError):
    """Another live process holds the lock; the message names its pid and command."""


def lock_file_for(path: str | os.PathLike, inside: bool = True) -> Path:
    """Where the lock of ``path`` lives: inside a directory (``inside``), beside a file otherwise."""
    path = Path(path)
    return path / LOCK_NAME if inside else path.with_name(f".{path.name}.lock")


class PathLock:
    """``with PathLock(run_dir, "run directory"):`` — exclusive for the duration, released on exit."""

    def __init__(
        self, path: str | os.PathLike, what: str = "directory", *, inside: bool = True, reentrant: bool = True
    ) -> None:
        self.path = Path(path)
        self.what = what
        self.file = lock_file_for(self.path, inside)
        self.reentrant = reentrant
        self.stale_holder: dict | None = None  # what a crashed previous holder left in the lock file
        self._fd: int | None = None
        self._depth = 0  # shares held on this object's flock (the owner's count)
        self._owner: PathLock | None = None  # the lock this object shares, when it re-entered one
        self._holding = False  # whether this object holds a share not yet released

    def acquire(self) -> PathLock:
        """Take the lock (one share of it if this process holds it already); returns ``self``."""
        if self._holding:
            raise RuntimeError(f"{self.path}: this {self.what} lock object is already acquired")
        key = (str(self.file.resolve()), os.getpid())  # the pid: a forked child holds nothing
        held = _HELD.get(key)
        if held is not None:
            if not (self.reentrant and held.reentrant):
                raise LockedError(
                    f"{self.path}: this {self.what} is already open for writing in this process "
                    f"(pid {os.getpid()}); close the other writer first, or choose another path"
                )
            held._depth += 1
            self._owner = held
            self._holding = True
            return self
        self._created_dir = not self.file.parent.exists()
        self.file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise LockedError(
                f"{self.path}: this {self.what} is in use by process {holder.get('pid', '?')}"
                f"{_describe(holder)}; wait for it to finish, stop it, or choose another path"
            ) from None
        previous = _read_holder(fd)
        if previous.get("pid") is not None:
            self.stale_holder = previous
            warnings.warn(
                f"{self.path}: taking over a stale lock left by process {previous['pid']}{_describe(previous)}, "
                "which ended without releasing it (killed or crashed)",
                stacklevel=2,
            )
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                  "command": " ".join(sys.argv)[:500]}  # fmt: skip
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        os.fsync(fd)
        self._fd = fd
        self._depth = 1
        self._holding = True
        _HELD[key] = self
        return self

    def release(self) -> None:
        """Give back this object's share; the flock goes with the last share. Releasing twice is a no-op."""
        if not self._holding:
            return
        self._holding = False
        owner, self._owner = self._owner or self, None
        owner._drop_share()

    def _drop_share(self) -> None:
        if self._fd is None:
            return
        self._depth -= 1
        if self._depth > 0:
            return
        _HELD.pop((str(self.file.resolve()), os.getpid()), None)
        try:
            os.ftruncate(self._fd, 0)  # empty = released cleanly (a pid left behind marks a crash)
        except OSError:
            pass
        if getattr(self, "_created_dir", False) and os.listdir(self.file.parent) == [self.file.name]:
            # the lock made the directory and nothing else was written (a refused run): leave no trace
            self.file.unlink(missing_ok=True)
            try:
                self.file.parent.rmdir()
            except OSError:
                pass
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> PathLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(fd: int) -> dict:
    try:
        data = os.pread(fd, 4096, 0)
        return json.loads(data) if data.strip() else {}
    except (OSError, ValueError):
        return {}


def _describe(holder: dict) -> str:
    parts = []
    if holder.get("host") and holder.get("host") != socket.gethostname():
        parts.append(f"on {holder['host']}")
    if holder.get("started"):
        parts.append("since " + time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder["started"])))
    if holder.get("command"):
        parts.append(f"running {holder['command'][:120]!r}")
    return f" ({', '.join(parts)})" if parts else ""


def lock_run_directory(path: str | os.PathLike) -> PathLock | contextlib.nullcontext:
    """The lock of a training run directory, taken by the main process only (``RANK`` 0 under torchrun:
    the other ranks of the same job write nothing there)."""
    if int(os.environ.get("RANK", "0")) != 0:
        return contextlib.nullcontext()
    return PathLock(path, "run directory")
