"""What every feature store shares: the protocol, the errors, the reader/writer base classes and the one
place where raw arrays become a :class:`RegionFeatures`.

Readers are lazy and fork-safe: nothing is opened until the first access, the open handle is remembered
together with the process id, and pickling drops it. A ``DataLoader`` worker therefore opens its own
handle on first use instead of sharing (and corrupting) its parent's HDF5/LMDB handle.
"""

from __future__ import annotations

import binascii
import os
import sys
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from mmbert.data.batch import RegionFeatures

# Optional per-region detector outputs a store may hold, besides features, boxes and image size.
OPTIONAL_FIELDS = ("cls_prob", "obj_id", "obj_conf", "attr_id", "attr_conf")
# On-disk dtypes, as the bottom-up-attention TSV and VOLTA's H5 store them.
DTYPES = {
    "feats": np.dtype("<f4"),
    "boxes": np.dtype("<f4"),
    "cls_prob": np.dtype("<f4"),
    "obj_id": np.dtype("<i8"),
    "obj_conf": np.dtype("<f4"),
    "attr_id": np.dtype("<i8"),
    "attr_conf": np.dtype("<f4"),
}


# Array names inside HDF5 groups and .npz files (VOLTA's tsv_to_h5 names), by our field name.
STORED_NAMES = {
    "feats": "features",
    "boxes": "boxes",
    "cls_prob": "cls_prob",
    "obj_id": "obj_id",
    "obj_conf": "obj_conf",
    "attr_id": "attr_id",
    "attr_conf": "attr_conf",
}


class FeatureStoreError(ValueError):
    """A store or record that cannot be read or written. The message names the file and the image id."""


class MissingImageError(FeatureStoreError, KeyError):
    """``store[image_id]`` for an id the store does not hold (still a ``KeyError`` for dict-like code)."""

    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0]) if self.args else ""


class PickleRefusedError(FeatureStoreError):
    """A pickled store (VOLTA/ViLBERT LMDB) opened without ``trust_pickle=True``."""


@runtime_checkable
class FeatureStore(Protocol):
    """Random access to region features by image id: ``store[image_id] -> RegionFeatures``."""

    path: Path

    def __getitem__(self, image_id: str) -> RegionFeatures: ...

    def __contains__(self, image_id: object) -> bool: ...

    def __len__(self) -> int: ...

    def keys(self) -> list[str]: ...

    def close(self) -> None: ...


class StoreReader:
    """Base class of the readers. Subclasses implement ``_open``, ``_close``, ``_keys``, ``_has`` and
    ``_read``; this class adds laziness, fork-safety, pickling, the context manager and error wrapping."""

    format = "?"

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path}: feature store not found")
        self._handle: Any = None
        self._pid: int | None = None
        self._key_list: list[str] | None = None

    # subclass hooks ---------------------------------------------------------------------------------
    def _open(self) -> Any:
        raise NotImplementedError

    def _close(self, handle: Any) -> None:
        pass

    def _keys(self) -> list[str]:
        raise NotImplementedError

    def _has(self, image_id: str) -> bool:
        raise NotImplementedError

    def _read(self, image_id: str, fields: Collection[str]) -> RegionFeatures:
        """Read one record; raise :class:`MissingImageError` when absent. Other errors are wrapped."""
        raise NotImplementedError

    # handle management ------------------------------------------------------------------------------
    @property
    def handle(self) -> Any:
        """The open file/environment of *this* process (re-opened after a fork)."""
        if self._handle is None or self._pid != os.getpid():
            self._handle = self._open()
            self._pid = os.getpid()
        return self._handle

    def close(self) -> None:
        if self._handle is not None and self._pid == os.getpid():
            self._close(self._handle)
        self._handle = None
        self._pid = None

    def __enter__(self) -> StoreReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: modules may already be gone
            pass

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_handle"] = None
        state["_pid"] = None
        return state

    # mapping interface ------------------------------------------------------------------------------
    def keys(self) -> list[str]:
        """All image ids, in storage order (cached: ids only, never records)."""
        if self._key_list is None:
            self._key_list = self._keys()
        return self._key_list

    def __len__(self) -> int:
        return len(self.keys())

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __contains__(self, image_id: object) -> bool:
        return isinstance(image_id, str) and self._has(image_id)

    def __getitem__(self, image_id: str) -> RegionFeatures:
        return self.read(image_id)

    def get(self, image_id: str, default: RegionFeatures | None = None) -> RegionFeatures | None:
        try:
            return self.read(image_id)
        except MissingImageError:
            return default

    def read(self, image_id: str, fields: Collection[str] | None = None) -> RegionFeatures:
        """One image's record. ``fields`` limits the optional detector arrays read (a subset of
        ``OPTIONAL_FIELDS``; None = all the store has); features, boxes and image size are always read."""
        if not isinstance(image_id, str):
            raise TypeError(f"{self.path}: image ids are strings, got {type(image_id).__name__} {image_id!r}")
        wanted = OPTIONAL_FIELDS if fields is None else tuple(fields)
        unknown = set(wanted) - set(OPTIONAL_FIELDS)
        if unknown:
            raise ValueError(f"unknown optional fields {sorted(unknown)}; choose from {OPTIONAL_FIELDS}")
        try:
            return self._read(image_id, wanted)
        except FeatureStoreError:
            raise
        except (ValueError, KeyError, TypeError, IndexError, OSError, EOFError, binascii.Error) as e:
            raise FeatureStoreError(f"{self.path}: image {image_id!r}: {type(e).__name__}: {e}") from e

    @property
    def incomplete(self) -> bool:
        """True when a write into this store started and never finished (a killed conversion)."""
        return is_incomplete(self.path)

    def missing(self, image_id: str) -> MissingImageError:
        return MissingImageError(f"{self.path}: image {image_id!r} is not in this {self.format} store")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"


INCOMPLETE_NAME = ".mmbert-incomplete"


def incomplete_marker(path: str | os.PathLike, directory: bool) -> Path:
    """The file that says "a write into this store started and has not finished": inside a directory
    store, beside a file store. A writer creates it on open and removes it only on a clean close."""
    path = Path(path)
    return path / INCOMPLETE_NAME if directory else path.with_name(f".{path.name}.incomplete")


def is_incomplete(path: str | os.PathLike) -> bool:
    """Whether a conversion (or any writer) into ``path`` started and did not finish."""
    path = Path(path)
    return (path / INCOMPLETE_NAME).exists() if path.is_dir() else incomplete_marker(path, False).exists()


class StoreWriter:
    """Base class of the writers. ``write(record)`` adds one image; ``image_id in writer`` tells whether
    it is already there (so that an interrupted conversion resumes). Writing an id twice replaces it
    where the backend can (HDF5, LMDB, npz) and is refused where it cannot (TSV).

    A writer holds an exclusive lock on its store (a second writer is refused, naming the holder's pid)
    and marks the store incomplete until it is closed cleanly: leaving the ``with`` block through an
    exception (or a kill) keeps the mark, so ``check`` reports the store as unfinished and the next
    conversion resumes it. Subclasses implement ``_write``, ``_finish`` (make everything durable) and
    optionally ``_abort`` (stop, keeping what is safely written)."""

    format = "?"
    directory = False  # a directory store (npz, LMDB) or a single file (TSV, HDF5)

    def __init__(self, path: str | os.PathLike) -> None:
        from mmbert.lock import PathLock

        self.path = Path(path)
        # Not re-entrant: a second writer on this store, even in this process, is refused.
        self._lock = PathLock(self.path, f"{self.format} feature store", inside=self.directory, reentrant=False)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.directory:
            if self.path.exists() and not self.path.is_dir():
                raise FeatureStoreError(f"{self.path}: exists and is not a directory")
            self.path.mkdir(parents=True, exist_ok=True)
        self._lock.acquire()
        self._closed = False
        self.marker = incomplete_marker(self.path, self.directory)
        self._marked_before = self.marker.exists()
        try:
            self.marker.touch()
        except OSError:
            self._lock.release()
            raise

    def _fail_open(self) -> None:
        """A subclass could not open its store: undo the mark (if this writer made it) and the lock."""
        self._closed = True
        if not self._marked_before:
            self.marker.unlink(missing_ok=True)
        self._lock.release()

    def write(self, record: RegionFeatures) -> None:
        check_writable(record, self.path)
        self._write(record)

    def _write(self, record: RegionFeatures) -> None:
        raise NotImplementedError

    def _finish(self) -> None:
        """Flush and close the backend so that every written record is durable."""

    def _abort(self) -> None:
        """Stop after an error: keep what is safely written (the store stays marked incomplete)."""
        self._finish()

    def __contains__(self, image_id: object) -> bool:
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    def close(self) -> None:
        """Finish, then mark the store complete and release the lock.

        Called while an exception is on its way out (from a ``finally`` or an ``except`` block, e.g. a
        Ctrl-C during the writes) it does what ``abort()`` does instead: what is written stays and is
        resumed by the next writer, but the store stays marked incomplete, so ``check`` refuses it. The
        mark comes off only on a close with no exception in flight."""
        if self._closed:
            return
        if sys.exc_info()[1] is not None:
            self.abort()
            return
        self._closed = True
        try:
            self._finish()
            self.marker.unlink(missing_ok=True)
            from mmbert.atomic import fsync_dir

            fsync_dir(self.marker.parent)
        finally:
            self._lock.release()

    def abort(self) -> None:
        """Close without marking the store complete (what ``with`` does when its block raised)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._abort()
        finally:
            self._lock.release()

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"


# records --------------------------------------------------------------------------------------------
def record_arrays(record: RegionFeatures) -> dict[str, np.ndarray]:
    """The record's arrays under our canonical names, cast to the on-disk dtypes (absent ones left out)."""
    out = {"feats": np.ascontiguousarray(record.feats, DTYPES["feats"])}
    out["boxes"] = np.ascontiguousarray(record.boxes, DTYPES["boxes"])
    for name in OPTIONAL_FIELDS:
        value = getattr(record, name)
        if value is not None:
            out[name] = np.ascontiguousarray(value, DTYPES[name])
    return out


def check_writable(record: RegionFeatures, path: Path) -> None:
    """The minimum a record needs before any writer stores it (full checks live in ``validate``)."""
    if not isinstance(record.image_id, str) or not record.image_id:
        raise FeatureStoreError(f"{path}: image ids must be non-empty strings, got {record.image_id!r}")
    feats = np.asarray(record.feats)
    boxes = np.asarray(record.boxes)
    if feats.ndim != 2:
        raise FeatureStoreError(f"{path}: image {record.image_id!r}: feats must be (R, F), got {feats.shape}")
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise FeatureStoreError(f"{path}: image {record.image_id!r}: boxes must be (R, 4), got {boxes.shape}")
    if len(record.image_size) != 2:
        raise FeatureStoreError(f"{path}: image {record.image_id!r}: image_size must be (height, width)")


def make_record(
    path: Path | str,
    image_id: str,
    image_size: tuple[int, int],
    feats: np.ndarray,
    boxes: np.ndarray,
    optional: Mapping[str, np.ndarray | None] | None = None,
) -> RegionFeatures:
    """Assemble a record, with the dtypes every backend returns (float32 arrays, int64 labels)."""
    opt = {k: (None if v is None else np.asarray(v, DTYPES[k])) for k, v in (optional or {}).items()}
    return RegionFeatures(
        image_id=image_id,
        feats=np.asarray(feats, DTYPES["feats"]),
        boxes=np.asarray(boxes, DTYPES["boxes"]),
        image_size=(int(image_size[0]), int(image_size[1])),
        **opt,
    )


def shape_field(path: Path | str, image_id: str, name: str, flat: np.ndarray, num_rows: int) -> np.ndarray:
    """Give a flat decoded buffer its shape: boxes (-1, 4), feats/cls_prob (num_rows, -1), per-region
    labels and confidences stay 1-D (their length is checked by ``validate``, not here)."""
    if name == "boxes":
        if flat.size % 4:
            raise FeatureStoreError(
                f"{path}: image {image_id!r}: boxes has {flat.size} values, not a multiple of 4 (truncated or corrupt)"
            )
        return flat.reshape(-1, 4)
    if name in ("feats", "cls_prob"):
        if num_rows <= 0:
            if flat.size:
                raise FeatureStoreError(
                    f"{path}: image {image_id!r}: {name} has {flat.size} values but 0 boxes"
                )
            return flat.reshape(0, 0)
        if flat.size % num_rows:
            raise FeatureStoreError(
                f"{path}: image {image_id!r}: {name} has {flat.size} values, not a multiple of num_boxes={num_rows} "
                "(truncated or corrupt record)"
            )
        return flat.reshape(num_rows, -1)
    return flat.reshape(-1)
