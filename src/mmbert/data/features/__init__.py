"""Region-feature stores: one protocol over the formats the field uses, random access, never loaded whole.

::

    from mmbert.data import features            # or: import mmbert.features as features
    with features.open("train2014_obj36.tsv") as store:   # TSV, .h5/.hdf5, LMDB dir/.lmdb, npz directory
        rec = store["COCO_train2014_000000000009"]       # RegionFeatures(feats (R, F), boxes (R, 4) px, ...)
        "COCO_train2014_000000000009" in store, len(store), store.keys()
    with features.open("out.h5", mode="w") as out:       # writers: write(record), `image_id in out`
        out.write(rec)

The backend comes from the path: an existing directory holding ``data.mdb`` (or a ``.lmdb`` path) is
LMDB, another directory is npz, ``.tsv`` is TSV, ``.h5``/``.hdf5`` is HDF5 (files without a known
suffix are recognised by their first bytes); ``format=`` overrides. Readers open lazily and re-open in
each ``DataLoader`` worker. Pickled (VOLTA/ViLBERT) LMDB stores need ``trust_pickle=True``.
"""

from __future__ import annotations

import builtins
import os
from pathlib import Path
from typing import Literal

from mmbert.data.batch import RegionFeatures
from mmbert.data.features.base import (
    OPTIONAL_FIELDS,
    FeatureStore,
    FeatureStoreError,
    MissingImageError,
    PickleRefusedError,
    StoreReader,
    StoreWriter,
    is_incomplete,
)
from mmbert.data.features.hdf5 import HDF5Reader, HDF5Writer
from mmbert.data.features.lmdb import LMDBReader, LMDBWriter
from mmbert.data.features.npz import NPZReader, NPZWriter
from mmbert.data.features.tsv import TSVReader, TSVWriter

FORMATS = ("tsv", "hdf5", "lmdb", "npz")
READERS = {"tsv": TSVReader, "hdf5": HDF5Reader, "lmdb": LMDBReader, "npz": NPZReader}
WRITERS = {"tsv": TSVWriter, "hdf5": HDF5Writer, "lmdb": LMDBWriter, "npz": NPZWriter}
SUFFIXES = {".tsv": "tsv", ".h5": "hdf5", ".hdf5": "hdf5", ".lmdb": "lmdb", ".mdb": "lmdb", ".npz": "npz"}
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"

__all__ = [
    "FORMATS",
    "OPTIONAL_FIELDS",
    "FeatureStore",
    "FeatureStoreError",
    "MissingImageError",
    "PickleRefusedError",
    "RegionFeatures",
    "StoreReader",
    "StoreWriter",
    "detect_format",
    "open",
]


def detect_format(path: str | os.PathLike) -> str:
    """Which backend a path is (existing stores by content, new ones by suffix; a bare new name = npz)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if path.is_dir():
        if (path / "data.mdb").exists():
            return "lmdb"
        return "npz"
    if path.is_file():
        if suffix in SUFFIXES and suffix != ".npz":
            return SUFFIXES[suffix]
        with builtins.open(path, "rb") as f:
            head = f.read(8)
        if head == _HDF5_SIGNATURE:
            return "hdf5"
        if suffix == ".npz":
            raise FeatureStoreError(
                f"{path}: a single .npz file is not a store; an npz store is a directory of "
                "per-image <image_id>.npz files"
            )
        return "tsv"
    if suffix in SUFFIXES:
        return SUFFIXES[suffix]
    return "npz"


def open(
    path: str | os.PathLike,
    mode: Literal["r", "w", "a"] = "r",
    *,
    format: str | None = None,
    trust_pickle: bool = False,
    **kwargs,
) -> StoreReader | StoreWriter:
    """Open a feature store. ``mode="r"``: a reader (``store[image_id]``, ``in``, ``len``, ``keys()``);
    ``"w"``: a writer for a new store (refuses to replace an existing, non-empty one); ``"a"``: a writer
    that adds to an existing store (``image_id in writer`` tells what is already there). Extra keyword
    arguments go to the backend (e.g. ``layout="bottomup"`` for TSV, ``compression="gzip"`` for HDF5)."""
    fmt = format or detect_format(path)
    if fmt not in FORMATS:
        raise ValueError(f"unknown feature store format {fmt!r}; choose from {', '.join(FORMATS)}")
    if mode == "r":
        if not Path(path).exists():
            if is_incomplete(path):  # a first write (HDF5: into its side file) was stopped before it swapped in
                raise FileNotFoundError(
                    f"{path}: feature store not written yet: a conversion into it started and did not finish "
                    "(killed or failed); run the same command again to resume it"
                )
            raise FileNotFoundError(f"{path}: feature store not found")
        if fmt == "lmdb":
            return LMDBReader(path, trust_pickle=trust_pickle, **kwargs)
        return READERS[fmt](path, **kwargs)
    if mode not in ("w", "a"):
        raise ValueError(f"mode must be 'r', 'w' or 'a', got {mode!r}")
    if mode == "w" and _non_empty(Path(path)):
        raise FeatureStoreError(
            f"{path}: already exists; open it with mode='a' to add to it, or remove it first"
        )
    return WRITERS[fmt](path, mode=mode, **kwargs)


def _non_empty(path: Path) -> bool:
    if path.is_dir():
        return any(path.iterdir())
    return path.exists() and path.stat().st_size > 0
