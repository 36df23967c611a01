"""A directory of per-image ``.npz`` files: ``<image_id>.npz`` with the arrays ``features (N, F)``,
``boxes (N, 4)``, ``img_h``, ``img_w`` and, when present, ``obj_id``, ``obj_conf``, ``attr_id``,
``attr_conf``, ``cls_prob`` (the HDF5 group layout, one file per image).

Image ids are percent-encoded into file names (``urllib.parse.quote``), so any id is safe on disk and the
common ids (``COCO_val2014_000000000042``, ``42``) are their own file names. Files are loaded with
``allow_pickle=False``. Each write goes to a hidden temporary file renamed into place: an interrupted
conversion never leaves a half-written image.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Collection
from pathlib import Path
from urllib.parse import quote, unquote

import numpy as np

from mmbert.data.batch import RegionFeatures
from mmbert.data.features.base import (
    STORED_NAMES,
    FeatureStoreError,
    StoreReader,
    StoreWriter,
    make_record,
    record_arrays,
)

SUFFIX = ".npz"


def file_name(image_id: str) -> str:
    return quote(image_id, safe="") + SUFFIX


def image_id_of(name: str) -> str | None:
    if not name.endswith(SUFFIX) or name.startswith("."):
        return None
    return unquote(name[: -len(SUFFIX)])


class NPZReader(StoreReader):
    """Reads ``<dir>/<image_id>.npz``; ``keys()`` lists the directory once (ids only)."""

    format = "npz"

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__(path)
        if not self.path.is_dir():
            raise FeatureStoreError(f"{self.path}: an npz store is a directory of <image_id>.npz files")

    def _open(self) -> Path:
        return self.path  # no handle: every read opens its own file

    def _keys(self) -> list[str]:
        with os.scandir(self.path) as it:
            ids = [image_id_of(e.name) for e in it if e.is_file()]
        return sorted(i for i in ids if i is not None)

    def _has(self, image_id: str) -> bool:
        return bool(image_id) and (self.path / file_name(image_id)).is_file()

    def _read(self, image_id: str, fields: Collection[str]) -> RegionFeatures:
        file = self.path / file_name(image_id)
        try:
            archive = np.load(file, allow_pickle=False)
        except FileNotFoundError:
            raise self.missing(image_id) from None
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
            raise FeatureStoreError(
                f"{file}: image {image_id!r}: unreadable npz ({type(e).__name__}: {e})"
            ) from e
        with archive:
            try:
                names = set(archive.files)
                missing = [k for k in ("features", "boxes", "img_h", "img_w") if k not in names]
                if missing:
                    raise FeatureStoreError(
                        f"{file}: image {image_id!r}: missing arrays {missing} (has {sorted(names)})"
                    )
                arrays = {k: archive[STORED_NAMES[k]] for k in fields if STORED_NAMES[k] in names}
                feats, boxes = archive["features"], archive["boxes"]
                size = (int(archive["img_h"]), int(archive["img_w"]))
            except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
                raise FeatureStoreError(
                    f"{file}: image {image_id!r}: corrupt npz ({type(e).__name__}: {e})"
                ) from e
        return make_record(self.path, image_id, size, feats, boxes, arrays)


class NPZWriter(StoreWriter):
    """Writes ``<dir>/<image_id>.npz`` (uncompressed: ``compress=True`` uses ``np.savez_compressed``)."""

    format = "npz"

    def __init__(self, path: str | os.PathLike, mode: str = "w", compress: bool = False) -> None:
        super().__init__(path)
        if mode not in ("w", "a"):
            raise ValueError(f"mode must be 'w' or 'a', got {mode!r}")
        if self.path.exists() and not self.path.is_dir():
            raise FeatureStoreError(f"{self.path}: exists and is not a directory")
        self.path.mkdir(parents=True, exist_ok=True)
        self.compress = compress
        with os.scandir(self.path) as it:
            for e in it:  # leftovers of an interrupted run
                if e.name.startswith(".tmp-") and e.name.endswith(SUFFIX):
                    os.unlink(e.path)

    def __contains__(self, image_id: object) -> bool:
        return isinstance(image_id, str) and bool(image_id) and (self.path / file_name(image_id)).is_file()

    def __len__(self) -> int:
        with os.scandir(self.path) as it:
            return sum(1 for e in it if image_id_of(e.name) is not None)

    def _write(self, record: RegionFeatures) -> None:
        name = file_name(record.image_id)
        if len(name) > 255:
            raise FeatureStoreError(
                f"{self.path}: image id {record.image_id[:60]!r}... is too long for a file name"
            )
        arrays = {STORED_NAMES[k]: v for k, v in record_arrays(record).items()}
        arrays["img_h"] = np.int64(record.image_size[0])
        arrays["img_w"] = np.int64(record.image_size[1])
        tmp = self.path / f".tmp-{os.getpid()}{SUFFIX}"
        (np.savez_compressed if self.compress else np.savez)(tmp, **arrays)
        os.replace(tmp, self.path / name)
