"""HDF5 stores in VOLTA's ``tsv_to_h5.py`` layout: one group per image id holding the datasets
``features (N, F)``, ``boxes (N, 4)``, ``img_h``, ``img_w`` (scalars) and, when present, ``obj_id``,
``obj_conf``, ``attr_id``, ``attr_conf`` (N,) and ``cls_prob (N, C)``.

Reads go through h5py's low-level API (group and dataset ids, ``read`` into a fresh array): half the
Python overhead of ``group[name][()]``, which matters at thousands of images per second. Only the
requested arrays are read; the file is never loaded whole.
"""

from __future__ import annotations

import os
from collections.abc import Collection

import h5py
import numpy as np
from h5py import h5d, h5s, h5t

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


class HDF5Writer(StoreWriter):
    """Writes one group per image (uncompressed unless ``compression`` is given, e.g. "gzip").

    Each image is written to a scratch group and renamed when complete, so a run killed mid-write never
    leaves a half-written image behind; ``mode="a"`` adds to an existing file."""

    format = "hdf5"

    def __init__(self, path: str | os.PathLike, mode: str = "w", compression: str | None = None) -> None:
        super().__init__(path)
        if mode not in ("w", "a"):
            raise ValueError(f"mode must be 'w' or 'a', got {mode!r}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._file = h5py.File(self.path, mode)
        except OSError as e:
            raise FeatureStoreError(f"{self.path}: cannot open as HDF5 for writing ({e})") from e
        if _PARTIAL in self._file:
            del self._file[_PARTIAL]
        self.compression = compression

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
        group = self._file.create_group(_PARTIAL)
        for name, value in record_arrays(record).items():
            group.create_dataset(
                STORED_NAMES[name], data=value, compression=self.compression if value.size else None
            )
        group.create_dataset("img_h", data=np.int64(record.image_size[0]))
        group.create_dataset("img_w", data=np.int64(record.image_size[1]))
        if image_id in self._file:
            del self._file[image_id]
        self._file.move(_PARTIAL, image_id)

    def close(self) -> None:
        if self._file.id.valid:
            self._file.close()
