"""A directory of per-image ``.npz`` files: ``<image_id>.npz`` with the arrays ``features (N, F)``,
``boxes (N, 4)``, ``img_h``, ``img_w`` and, when present, ``obj_id``, ``obj_conf``, ``attr_id``,
``attr_conf``, ``cls_prob`` (the HDF5 group layout, one file per image).

Image ids are percent-encoded into file names (``urllib.parse.quote``), so any id is safe on disk and the
common ids (``COCO_val2014_000000000042``, ``42``) are their own file names. Files are read whole (one
image) and parsed without pickle: uncompressed members are viewed in place, compressed ones go through
``np.load(allow_pickle=False)``. Each write goes to a hidden temporary file renamed into place: an interrupted
conversion never leaves a half-written image.
"""

from __future__ import annotations

import ast
import functools
import io
import math
import os
import struct
import zipfile
from collections.abc import Collection
from pathlib import Path
from urllib.parse import quote, unquote

import numpy as np

from mmbert.atomic import atomic_write, fsync_dir
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
    """A file name that is safe for any id and decodes back to it: percent-encoding (``/`` included),
    and a leading ``.`` encoded too, so ``.hidden`` and ``..`` are neither hidden nor special."""
    name = quote(image_id, safe="")
    if name.startswith("."):
        name = "%2E" + name[1:]
    return name + SUFFIX


def image_id_of(name: str) -> str | None:
    if not name.endswith(SUFFIX) or name.startswith("."):
        return None  # hidden names are temporary files, never records
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
            with open(file, "rb") as f:
                # into a bytearray: the arrays viewed in it are writable, so nothing downstream copies them
                buf = bytearray(os.fstat(f.fileno()).st_size)
                f.readinto(buf)
        except FileNotFoundError:
            raise self.missing(image_id) from None
        try:
            archive = read_npz_bytes(buf)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, SyntaxError, KeyError, struct.error) as e:
            raise FeatureStoreError(
                f"{file}: image {image_id!r}: unreadable npz ({type(e).__name__}: {e})"
            ) from e
        missing = [k for k in ("features", "boxes", "img_h", "img_w") if k not in archive]
        if missing:
            raise FeatureStoreError(
                f"{file}: image {image_id!r}: missing arrays {missing} (has {sorted(archive)})"
            )
        arrays = {k: archive[STORED_NAMES[k]] for k in fields if STORED_NAMES[k] in archive}
        size = (int(archive["img_h"]), int(archive["img_w"]))
        return make_record(self.path, image_id, size, archive["features"], archive["boxes"], arrays)


# numpy's own cap on a .npy header (``np.lib.format``'s max_header_size): a crafted file with a larger one
# could make parsing it exhaust memory.
MAX_HEADER_SIZE = 10000


@functools.lru_cache(maxsize=256)
def _npy_header(header: bytes) -> tuple[np.dtype, tuple[int, ...], bool]:
    """Parse a .npy header dict (a Python literal; never evaluated as code). Cached: stores repeat them."""
    if len(header) > MAX_HEADER_SIZE:
        raise ValueError(f".npy header of {len(header)} bytes exceeds the {MAX_HEADER_SIZE}-byte limit")
    try:
        meta = ast.literal_eval(header.decode("latin1"))
    except (RecursionError, MemoryError) as e:
        raise ValueError(f"unparseable .npy header ({type(e).__name__})") from None
    if not isinstance(meta, dict) or not {"descr", "shape", "fortran_order"} <= set(meta):
        raise ValueError(f"not a .npy header: {header[:80]!r}")
    dtype = np.dtype(meta["descr"])
    if dtype.hasobject:
        raise ValueError("object arrays need pickle; refused")
    shape = meta["shape"]
    if not isinstance(shape, tuple) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise ValueError(f"bad .npy shape {shape!r}")
    return dtype, shape, bool(meta["fortran_order"])


def _header_bounds(buf: bytes | bytearray, start: int) -> tuple[int, int]:
    """(header start, header length) of the .npy member beginning at ``start``; refuses oversized headers
    before reading them."""
    if buf[start : start + 6] != b"\x93NUMPY":
        raise ValueError("not a .npy array")
    if buf[start + 6] == 1:
        (header_len,) = struct.unpack_from("<H", buf, start + 8)
        header_start = start + 10
    else:
        (header_len,) = struct.unpack_from("<I", buf, start + 8)
        header_start = start + 12
    if header_len > MAX_HEADER_SIZE:
        raise ValueError(f".npy header of {header_len} bytes exceeds the {MAX_HEADER_SIZE}-byte limit")
    return header_start, header_len


def _check_compressed_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
    """Before ``np.load`` allocates a compressed member: its header is small and its declared size fits in
    what the archive says it decompresses to (a crafted shape could otherwise ask for terabytes)."""
    with zf.open(info) as f:
        head = f.read(12 + MAX_HEADER_SIZE)
    header_start, header_len = _header_bounds(head, 0)
    dtype, shape, _ = _npy_header(bytes(head[header_start : header_start + header_len]))
    if math.prod(shape) * dtype.itemsize > info.file_size:
        raise ValueError(f"{info.filename}: declares {shape} {dtype} but holds {info.file_size} bytes")


def read_npz_bytes(buf: bytes | bytearray) -> dict[str, np.ndarray]:
    """All arrays of an .npz held in memory. Stored (uncompressed) members are viewed in place with
    ``np.frombuffer`` (3-4x faster than ``np.load``, which copies in chunks); compressed archives go
    through ``np.load``. Never unpickles."""
    zf = zipfile.ZipFile(io.BytesIO(buf))
    infos = zf.infolist()
    if any(info.compress_type != zipfile.ZIP_STORED for info in infos):
        for info in infos:
            if info.filename.endswith(".npy"):
                _check_compressed_member(zf, info)
        with np.load(io.BytesIO(buf), allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    out = {}
    for info in infos:
        if not info.filename.endswith(".npy"):
            continue
        local = info.header_offset
        if buf[local : local + 4] != b"PK\x03\x04":
            raise zipfile.BadZipFile(f"bad local header for {info.filename}")
        name_len, extra_len = struct.unpack_from("<HH", buf, local + 26)
        start = local + 30 + name_len + extra_len
        try:
            header_start, header_len = _header_bounds(buf, start)
        except ValueError as e:
            raise ValueError(f"{info.filename}: {e}") from None
        dtype, shape, fortran = _npy_header(bytes(buf[header_start : header_start + header_len]))
        data_start = header_start + header_len
        count = math.prod(shape)
        if data_start + count * dtype.itemsize > start + info.file_size:
            raise ValueError(f"{info.filename}: array data truncated")
        array = np.frombuffer(buf, dtype=dtype, count=count, offset=data_start)
        out[info.filename[:-4]] = array.reshape(shape, order="F" if fortran else "C")
    return out


class NPZWriter(StoreWriter):
    """Writes ``<dir>/<image_id>.npz`` (uncompressed: ``compress=True`` uses ``np.savez_compressed``).
    Each file goes through :func:`mmbert.atomic.atomic_write` (a unique hidden temporary name)."""

    format = "npz"
    directory = True

    def __init__(self, path: str | os.PathLike, mode: str = "w", compress: bool = False) -> None:
        if mode not in ("w", "a"):
            raise ValueError(f"mode must be 'w' or 'a', got {mode!r}")
        super().__init__(path)
        self.compress = compress
        with os.scandir(self.path) as it:
            for e in it:  # leftovers of an interrupted run (safe: this writer holds the store's lock)
                if _is_temporary(e.name):
                    os.unlink(e.path)

    def __contains__(self, image_id: object) -> bool:
        return isinstance(image_id, str) and bool(image_id) and (self.path / file_name(image_id)).is_file()

    def __len__(self) -> int:
        with os.scandir(self.path) as it:
            return sum(1 for e in it if image_id_of(e.name) is not None)

    def _write(self, record: RegionFeatures) -> None:
        name = file_name(record.image_id)
        if len(name.encode("utf-8")) > 255:
            raise FeatureStoreError(
                f"{self.path}: image id {record.image_id[:60]!r}... is too long for a file name"
            )
        arrays = {STORED_NAMES[k]: v for k, v in record_arrays(record).items()}
        arrays["img_h"] = np.int64(record.image_size[0])
        arrays["img_w"] = np.int64(record.image_size[1])
        save = np.savez_compressed if self.compress else np.savez

        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:  # a file object: numpy would append .npz to a name
                save(f, **arrays)

        atomic_write(self.path / name, write, fsync=False)  # durability: one directory fsync on close

    def _finish(self) -> None:
        fsync_dir(self.path)


def _is_temporary(name: str) -> bool:
    """A temporary file of an interrupted write: ``atomic_write``'s ``.<id>.npz.XXXX.tmp``, or the
    ``.tmp-<pid>.npz`` of older mmbert versions."""
    return name.startswith(".") and (
        (name.endswith(".tmp") and SUFFIX + "." in name) or (name.startswith(".tmp-") and name.endswith(SUFFIX))
    )
