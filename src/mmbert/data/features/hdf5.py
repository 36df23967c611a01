"""HDF5 stores in VOLTA's ``tsv_to_h5.py`` layout: one group per image id holding the datasets
``features (N, F)``, ``boxes (N, 4)``, ``img_h``, ``img_w`` (scalars) and, when present, ``obj_id``,
``obj_conf``, ``attr_id``, ``attr_conf`` (N,) and ``cls_prob (N, C)``.

Reads go through h5py's low-level API (group and dataset ids, ``read`` into a fresh array): half the
Python overhead of ``group[name][()]``, which matters at thousands of images per second. Only the
requested arrays are read; the file is never loaded whole.
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Collection
from pathlib import Path

import h5py
import numpy as np
from h5py import h5d, h5s, h5t

from mmbert.atomic import fsync_dir
from mmbert.data.batch import RegionFeatures
from mmbert.data.features.base import (
    DTYPES,
    OPTIONAL_FIELDS,
    STORED_NAMES,
    FeatureStoreError,
    StoreReader,
    StoreWriter,
    make_record,
    record_arrays,
)

_PARTIAL = "__partial__"  # a group being written; renamed to its image id once complete
_METADATA_ROOM = 1 << 20  # bytes kept free for HDF5's metadata when a write is checked to fit


# Memory types to read into: our canonical dtypes (HDF5 converts on read if a file stores another).
# Built once: letting h5py derive them from the file and the output array costs a quarter of a read.
_MEMORY_TYPES = {
    name: (dtype, h5t.py_create(dtype)) for name, dtype in {**DTYPES, "size": np.dtype("<i8")}.items()
}


def _read_dataset(fid: h5py.h5f.FileID, path: bytes, kind: str) -> np.ndarray:
    dset = h5d.open(fid, path)
    dtype, mtype = _MEMORY_TYPES[kind]
    out = np.empty(dset.shape, dtype=dtype)
    if out.size:
        dset.read(h5s.ALL, h5s.ALL, out, mtype=mtype)
    return out


class HDF5Reader(StoreReader):
    """Random-access reader: ``store[image_id]`` reads that one group's datasets.

    Datasets are opened by their full path from the file (``<image_id>/features``), never relative to an
    open group handle: with HDF5 2.0 / h5py 3.16 the latter leaves a few kB per image behind after the
    handles are closed, so RSS grew with every image read (+200 MB over 10k images, measured), while
    full-path opens keep it flat."""

    format = "hdf5"

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__(path)
        self._optional: set[str] | None = None

    def _open(self) -> h5py.File:
        try:
            return h5py.File(self.path, "r")
        except OSError as e:
            raise FeatureStoreError(f"{self.path}: cannot open as HDF5 ({e})") from e

    def _close(self, handle: h5py.File) -> None:
        handle.close()

    def _keys(self) -> list[str]:
        return [k for k in self.handle.keys() if not k.startswith("__")]

    def _has(self, image_id: str) -> bool:
        return (
            bool(image_id)
            and "/" not in image_id
            and not image_id.startswith("__")
            and image_id in self.handle
        )

    def _read(self, image_id: str, fields: Collection[str]) -> RegionFeatures:
        if not self._has(image_id):
            raise self.missing(image_id)
        fid = self.handle.id
        prefix = image_id.encode("utf-8") + b"/"
        if self._optional is None:
            # Which optional datasets this store has, from its first group read: a store is written by one
            # tool, and asking every group would add to the cost of every read.
            group = self.handle[image_id]
            self._optional = {k for k in OPTIONAL_FIELDS if STORED_NAMES[k] in group}
        arrays: dict[str, np.ndarray] = {}
        for name in ("feats", "boxes", *fields):
            if name not in ("feats", "boxes") and name not in self._optional:
                continue
            stored = STORED_NAMES[name]
            try:
                arrays[name] = _read_dataset(fid, prefix + stored.encode(), name)
            except (KeyError, ValueError):  # h5py raises either for an absent link, depending on version
                if stored in self.handle[image_id]:
                    raise
                if name in ("feats", "boxes"):
                    raise FeatureStoreError(
                        f"{self.path}: image {image_id!r}: group has no {stored!r} dataset"
                    ) from None
        size = []
        for key in ("img_h", "img_w"):
            try:
                size.append(int(_read_dataset(fid, prefix + key.encode(), "size")))
            except (KeyError, ValueError):
                group = self.handle[image_id]
                if key in group:
                    raise
                if key not in group.attrs:
                    raise FeatureStoreError(
                        f"{self.path}: image {image_id!r}: group has no {key!r} dataset"
                    ) from None
                size.append(int(group.attrs[key]))
        feats, boxes = arrays.pop("feats"), arrays.pop("boxes")
        if boxes.ndim == 1 and boxes.size % 4 == 0:
            boxes = boxes.reshape(-1, 4)
        return make_record(self.path, image_id, (size[0], size[1]), feats, boxes, arrays)


def side_file(path: str | os.PathLike) -> Path:
    """Where an unfinished write into the HDF5 store ``path`` lives until it is swapped in."""
    path = Path(path)
    return path.with_name(f".{path.name}.partial")


class HDF5Writer(StoreWriter):
    """Writes one group per image (uncompressed unless ``compression`` is given, e.g. "gzip").

    HDF5 is not safe against a kill: a process killed while the library holds unflushed metadata leaves
    a file that does not open. So nothing is written into the store itself. The writer works on a side
    file (``.<name>.partial``: a copy of the existing store with ``mode="a"``, else a new file), flushed
    every ``flush_every`` images, and swaps it over the store atomically on ``close()``. A kill at any
    moment leaves the store exactly as it was; the next writer resumes from the side file when it opens
    and every group in it is whole, and otherwise starts again from the store (with a warning). Inside
    the side file each image is written to a scratch group and renamed when complete.

    The cost of that safety: with ``mode="a"`` on an existing store the side file starts as a full copy
    of it (``shutil.copyfile``), so every append or resume reads and writes the whole store once and needs
    free space for a second copy of it beside the first. LMDB and npz stores append in place."""

    format = "hdf5"

    def __init__(
        self, path: str | os.PathLike, mode: str = "w", compression: str | None = None, flush_every: int = 256
    ) -> None:
        if mode not in ("w", "a"):
            raise ValueError(f"mode must be 'w' or 'a', got {mode!r}")
        super().__init__(path)
        self.side = side_file(self.path)
        self.compression = compression
        self.flush_every = flush_every
        self._since_flush = 0
        try:
            self._file = self._open_side(mode)
        except BaseException:
            self._fail_open()
            raise
        if _PARTIAL in self._file:
            del self._file[_PARTIAL]

    def _open_side(self, mode: str) -> h5py.File:
        if mode == "w":
            self.side.unlink(missing_ok=True)  # a new store: a killed earlier write is not resumed
        if self.side.exists():
            resumed = _reopen_whole(self.side)
            if resumed is not None:
                return resumed
            warnings.warn(
                f"{self.path}: the unfinished write in {self.side} is damaged (killed mid-flush); "
                "starting again from the store",
                stacklevel=3,
            )
            self.side.unlink()
        if mode == "a" and self.path.exists() and self.path.stat().st_size:
            try:  # refuse a non-HDF5 file before copying it
                h5py.File(self.path, "r").close()
            except OSError as e:
                raise FeatureStoreError(f"{self.path}: cannot open as HDF5 for appending ({e})") from e
            shutil.copyfile(self.path, self.side)
        try:
            return h5py.File(self.side, "a" if self.side.exists() else "w")
        except OSError as e:
            raise FeatureStoreError(f"{self.side}: cannot open as HDF5 for writing ({e})") from e

    def __contains__(self, image_id: object) -> bool:
        return isinstance(image_id, str) and "/" not in image_id and image_id in self._file

    def __len__(self) -> int:
        return sum(1 for k in self._file.keys() if not k.startswith("__"))

    def _write(self, record: RegionFeatures) -> None:
        image_id = record.image_id
        if "/" in image_id or image_id.startswith("__") or image_id in (".",):
            raise FeatureStoreError(
                f"{self.path}: image id {image_id!r} cannot name an HDF5 group ('/' or '__')"
            )
        arrays = record_arrays(record)
        self._check_room(sum(a.nbytes for a in arrays.values()))
        group = self._file.create_group(_PARTIAL)
        for name, value in arrays.items():
            group.create_dataset(
                STORED_NAMES[name], data=value, compression=self.compression if value.size else None
            )
        group.create_dataset("img_h", data=np.int64(record.image_size[0]))
        group.create_dataset("img_w", data=np.int64(record.image_size[1]))
        if image_id in self._file:
            del self._file[image_id]
        self._file.move(_PARTIAL, image_id)
        self._since_flush += 1
        if self._since_flush >= self.flush_every:
            self._file.flush()
            self._since_flush = 0

    def _check_room(self, nbytes: int) -> None:
        """Refuse a write that would not fit (disk space, ``ulimit -f``) before HDF5 attempts it: the
        library does not survive a failed write (it segfaults flushing its metadata)."""
        import errno
        import resource

        needed = self.side.stat().st_size + 2 * nbytes + _METADATA_ROOM
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if limit != resource.RLIM_INFINITY and needed > limit:
            raise OSError(errno.EFBIG, os.strerror(errno.EFBIG), str(self.side))
        fs = os.statvfs(self.side.parent)
        if fs.f_bavail * fs.f_frsize < 2 * nbytes + _METADATA_ROOM:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.side))

    def _abort(self) -> None:
        if self._file.id.valid:
            self._file.close()  # the side file stays: the next writer resumes from it

    def _finish(self) -> None:
        if self._file.id.valid:
            self._file.close()
        with open(self.side, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(self.side, self.path)
        fsync_dir(self.path.parent)


def _reopen_whole(path: Path) -> h5py.File | None:
    """The side file of a killed writer, opened for appending, if it opens and every group in it has
    its four datasets readable; None when any of it is damaged."""
    try:
        f = h5py.File(path, "a")
    except Exception:  # noqa: BLE001 - HDF5 reports a damaged file through several error types
        return None
    try:
        for key in list(f.keys()):
            if key == _PARTIAL:
                continue
            group = f[key]
            for name in ("features", "boxes", "img_h", "img_w"):
                if name not in group.attrs:
                    _ = group[name].shape
        return f
    except Exception:  # noqa: BLE001
        f.close()
        return None
