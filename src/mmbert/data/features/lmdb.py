"""LMDB stores: VOLTA/ViLBERT's pickled convention (read only, opt-in) and mmbert's safe encoding.

VOLTA/ViLBERT: key = image id bytes -> ``pickle.dumps(dict)``; the special key ``b"keys"`` -> pickled list
of all ids. VOLTA's ``convert_*_lmdb.py`` pickles the raw TSV row (every value a string: base64 arrays,
decimal sizes: ``img_id, img_h, img_w, objects_id, objects_conf, attrs_id, attrs_conf, num_boxes, boxes,
features, cls_prob, ...``); ViLBERT's ``convert_to_lmdb.py`` pickles numpy arrays under ``image_h,
image_w, num_boxes, boxes, features, cls_prob``. Both are read. Unpickling runs whatever code the file
asks for, so it needs ``trust_pickle=True``; without it opening such a store raises
:class:`PickleRefusedError` saying why and how to convert.

mmbert's encoding (what :class:`LMDBWriter` writes): a marker key ``b"__mmbert__"`` -> JSON, and per
image ``MMRF`` + a little-endian u32 header length + a JSON header (image id, size, and per array its
dtype, shape and offset) + the raw little-endian array bytes. Decoding is ``np.frombuffer`` only. The ids
are also kept in a named sub-database ``__ids__`` so that ``keys()``/``in`` never read record pages.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import struct
from collections.abc import Collection
from pathlib import Path
from typing import Any

import lmdb
import numpy as np

from mmbert.data.batch import RegionFeatures
from mmbert.data.features.base import (
    DTYPES,
    FeatureStoreError,
    PickleRefusedError,
    StoreReader,
    StoreWriter,
    make_record,
    record_arrays,
    shape_field,
)
from mmbert.data.features.tsv import b64decode

META_KEY = b"__mmbert__"
# A named sub-database holding only the image ids (empty values): listing or testing ids never touches
# the records' pages (iterating the main database's keys faulted in ~25 % of the file through readahead).
IDS_DB = b"__ids__"
RESERVED = (META_KEY, b"keys", IDS_DB)
META = {"format": "mmbert-region-features", "version": 1}
MAGIC = b"MMRF"
_ALIGN = 16
_SHARED_ENVS: dict[tuple[str, int], list] = {}  # (path, pid) -> [read-only Environment, users]


def _drop_inherited_envs() -> None:
    """In a forked child (a DataLoader worker): LMDB handles must not be used across fork, and py-lmdb
    would refuse to re-open a path the parent had open. Close the child's copies (read-only, no lock
    file: nothing of the parent's is touched) so that each reader re-opens its own."""
    for env, _ in _SHARED_ENVS.values():
        try:
            env.close()
        except lmdb.Error:
            pass
    _SHARED_ENVS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_drop_inherited_envs)
# Field name -> the names VOLTA / ViLBERT / LXMERT pickles use for it, in order of preference.
PICKLE_ALIASES = {
    "image_h": ("img_h", "image_h", "image_height"),
    "image_w": ("img_w", "image_w", "image_width"),
    "num_boxes": ("num_boxes",),
    "feats": ("features",),
    "boxes": ("boxes", "bbox"),
    "cls_prob": ("cls_prob",),
    "obj_id": ("objects_id", "obj_id", "objects"),
    "obj_conf": ("objects_conf", "obj_conf"),
    "attr_id": ("attrs_id", "attr_id"),
    "attr_conf": ("attrs_conf", "attr_conf"),
}


# mmbert record encoding --------------------------------------------------------------------------------
def encode_record(record: RegionFeatures) -> bytes:
    """Record -> bytes (no pickle: JSON header + raw little-endian buffers, 16-byte aligned)."""
    arrays = record_arrays(record)
    entries, chunks, offset = [], [], 0
    for name, value in arrays.items():
        entries.append([name, value.dtype.str, list(value.shape), offset])
        data = value.tobytes()
        pad = -len(data) % _ALIGN
        chunks.append(data + b"\0" * pad)
        offset += len(data) + pad
    header = json.dumps({"id": record.image_id, "size": list(record.image_size), "arrays": entries}).encode()
    header += b" " * (-(len(MAGIC) + 4 + len(header)) % _ALIGN)
    return b"".join([MAGIC, struct.pack("<I", len(header)), header, *chunks])


def decode_record(
    buf: bytes | memoryview,
    path: Path | str,
    image_id: str,
    fields: Collection[str] = DTYPES,
    copy: bool = False,
) -> RegionFeatures:
    """Bytes from :func:`encode_record` -> record; errors name the file and the image. ``copy=True``
    copies each array out of ``buf`` (for a view into LMDB's memory map, valid only inside its
    transaction): the arrays are then writable and ``buf`` is never copied whole."""
    if buf[:4] != MAGIC:
        raise FeatureStoreError(f"{path}: image {image_id!r}: value is not an mmbert record (bad magic)")
    try:
        (length,) = struct.unpack_from("<I", buf, 4)
        header = json.loads(bytes(buf[8 : 8 + length]))
        base = 8 + length
        arrays = {}
        for name, dtype, shape, offset in header["arrays"]:
            if name in ("feats", "boxes") or name in fields:
                array = np.frombuffer(
                    buf, dtype=np.dtype(dtype), count=math.prod(shape), offset=base + offset
                )
                arrays[name] = (array.copy() if copy else array).reshape(shape)
        h, w = header["size"]
    except (struct.error, ValueError, KeyError, TypeError) as e:
        raise FeatureStoreError(
            f"{path}: image {image_id!r}: corrupt mmbert record ({type(e).__name__}: {e})"
        ) from e
    if "feats" not in arrays or "boxes" not in arrays:
        raise FeatureStoreError(f"{path}: image {image_id!r}: record has no feats or boxes array")
    feats, boxes = arrays.pop("feats"), arrays.pop("boxes")
    return make_record(path, image_id, (h, w), feats, boxes, arrays)


MIN_FILE_BYTES = 2 * 4096  # LMDB's two meta pages


def _data_file(path: Path) -> Path:
    return path / "data.mdb" if path.is_dir() else path


def _check_not_truncated(env: lmdb.Environment, path: Path) -> None:
    """Refuse a data file shorter than its last used page before anything maps it: LMDB reads records
    through a memory map, and touching a page past the end of a truncated file kills the process with
    SIGBUS (no Python exception, no message)."""
    size = _data_file(path).stat().st_size
    needed = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
    if size < needed:
        env.close()
        raise FeatureStoreError(
            f"{_data_file(path)}: truncated LMDB file: {size} bytes, but its pages run to {needed} bytes "
            "(an interrupted copy or download?); restore it or convert the store again"
        )


def _open_env(path: Path, readonly: bool, map_size: int = 1 << 30) -> lmdb.Environment:
    subdir = path.is_dir() or not path.exists()
    data = _data_file(path)
    existing = data.exists() and data.stat().st_size > 0
    if existing and data.stat().st_size < MIN_FILE_BYTES:
        raise FeatureStoreError(f"{data}: {data.stat().st_size} bytes, too short to be an LMDB file (truncated?)")
    try:
        if readonly:
            env = lmdb.open(str(path), subdir=subdir, readonly=True, lock=False, readahead=False, meminit=False,
                            max_readers=2048, max_dbs=2)  # fmt: skip
        else:
            env = lmdb.open(str(path), subdir=subdir, map_size=map_size, readahead=False, meminit=False, max_dbs=2)
    except lmdb.Error as e:
        raise FeatureStoreError(f"{path}: cannot open as LMDB ({e})") from e
    if existing:
        _check_not_truncated(env, path)
    return env


def _encoding(env: lmdb.Environment) -> str | None:
    with env.begin() as txn:
        meta = txn.get(META_KEY)
        if meta is not None:
            info = json.loads(meta)
            if info.get("format") != META["format"]:
                return "unknown"
            return "mmbert"
        if txn.get(b"keys") is not None:
            return "pickle"
        return None if env.stat()["entries"] == 0 else "unknown"


def refusal(path: Path) -> PickleRefusedError:
    return PickleRefusedError(
        f"{path}: this LMDB store follows the VOLTA/ViLBERT convention, where every record is a Python pickle. "
        "Unpickling can run arbitrary code embedded in the file, so mmbert does not do it by default. If you "
        "trust where the file came from, open it with trust_pickle=True (CLI: --trust-pickle), or convert it "
        f"once to mmbert's pickle-free encoding: mmbert features convert --trust-pickle {path} OUT.lmdb"
    )


class LMDBReader(StoreReader):
    """Reads mmbert-encoded LMDB stores, and VOLTA/ViLBERT pickled ones when ``trust_pickle=True``."""

    format = "lmdb"

    def __init__(self, path: str | os.PathLike, trust_pickle: bool = False) -> None:
        super().__init__(path)
        self.trust_pickle = trust_pickle
        try:
            self.encoding = _encoding(self.handle)
        except (lmdb.Error, ValueError) as e:
            self.close()
            raise FeatureStoreError(f"{self.path}: corrupt LMDB store ({type(e).__name__}: {e})") from e
        if self.encoding is None:
            raise FeatureStoreError(f"{self.path}: empty LMDB store (no records, no keys entry)")
        if self.encoding == "unknown":
            raise FeatureStoreError(
                f"{self.path}: LMDB store in an unknown convention (neither mmbert's {META_KEY!r} marker nor "
                "VOLTA/ViLBERT's b'keys' entry)"
            )
        if self.encoding == "pickle" and not trust_pickle:
            self.close()
            raise refusal(self.path)

    def _open(self) -> lmdb.Environment:
        # py-lmdb allows one Environment per path and process: readers of the same store share it.
        key = (str(self.path.resolve()), os.getpid())
        entry = _SHARED_ENVS.get(key)
        if entry is None:
            entry = _SHARED_ENVS[key] = [_open_env(self.path, readonly=True), 0]
        entry[1] += 1
        return entry[0]

    def _close(self, handle: lmdb.Environment) -> None:
        key = (str(self.path.resolve()), os.getpid())
        entry = _SHARED_ENVS.get(key)
        if entry is None or entry[0] is not handle:
            return
        entry[1] -= 1
        if entry[1] <= 0:
            del _SHARED_ENVS[key]
            handle.close()

    def _ids_db(self) -> Any:
        """The ids sub-database of this process's environment (None: a pickled or older store)."""
        env = self.handle
        if getattr(self, "_ids_env", None) is not env:
            try:
                self._ids = env.open_db(IDS_DB, create=False) if self.encoding == "mmbert" else None
            except lmdb.NotFoundError:
                self._ids = None
            self._ids_env = env
        return self._ids

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state.pop("_ids", None)
        state.pop("_ids_env", None)
        return state

    def _keys(self) -> list[str]:
        try:
            return self._list_keys()
        except lmdb.Error as e:
            raise FeatureStoreError(
                f"{self.path}: corrupt LMDB store: cannot list its ids ({type(e).__name__}: {e})"
            ) from e

    def _list_keys(self) -> list[str]:
        ids_db = self._ids_db()
        with self.handle.begin() as txn:
            if self.encoding == "pickle":
                ids = self._unpickle(txn.get(b"keys"), "keys")
                return [i.decode("utf-8") if isinstance(i, bytes) else str(i) for i in ids]
            cursor = txn.cursor(db=ids_db) if ids_db is not None else txn.cursor()
            return [k.decode("utf-8") for k in cursor.iternext(keys=True, values=False) if k not in RESERVED]

    def _has(self, image_id: str) -> bool:
        try:
            return self._has_key(image_id)
        except lmdb.Error as e:
            raise FeatureStoreError(
                f"{self.path}: image {image_id!r}: corrupt LMDB store ({type(e).__name__}: {e})"
            ) from e

    def _has_key(self, image_id: str) -> bool:
        key = image_id.encode("utf-8")
        if key in RESERVED:
            return False
        ids_db = self._ids_db()
        with self.handle.begin() as txn:
            if ids_db is not None:
                return txn.get(key, db=ids_db) is not None
            with txn.cursor() as cursor:
                return cursor.set_key(key)

    def _read(self, image_id: str, fields: Collection[str]) -> RegionFeatures:
        try:
            return self._read_record(image_id, fields)
        except lmdb.Error as e:
            raise FeatureStoreError(
                f"{self.path}: image {image_id!r}: corrupt LMDB record ({type(e).__name__}: {e})"
            ) from e

    def _read_record(self, image_id: str, fields: Collection[str]) -> RegionFeatures:
        key = image_id.encode("utf-8")
        if key in RESERVED:
            raise self.missing(image_id)
        if self.encoding == "mmbert":
            # buffers=True: a view into the memory map; the arrays are copied out once, inside the txn.
            with self.handle.begin(buffers=True) as txn:
                buf = txn.get(key)
                if buf is None:
                    raise self.missing(image_id)
                return decode_record(buf, self.path, image_id, fields, copy=True)
        with self.handle.begin() as txn:
            buf = txn.get(key)
        if buf is None:
            raise self.missing(image_id)
        return self._from_pickle(image_id, self._unpickle(buf, image_id), fields)

    def _unpickle(self, buf: bytes | None, what: str) -> Any:
        if not self.trust_pickle:  # never reached through the constructor, kept as a second guard
            raise refusal(self.path)
        if buf is None:
            raise FeatureStoreError(f"{self.path}: the pickled store has no {what!r} entry")
        try:
            return pickle.loads(buf, encoding="latin1")  # latin1: Python 2 pickles of numpy arrays
        except Exception as e:  # a corrupt pickle can raise nearly anything
            raise FeatureStoreError(
                f"{self.path}: image {what!r}: cannot unpickle ({type(e).__name__}: {e})"
            ) from e

    def _from_pickle(self, image_id: str, item: Any, fields: Collection[str]) -> RegionFeatures:
        if not isinstance(item, dict):
            raise FeatureStoreError(
                f"{self.path}: image {image_id!r}: pickled value is a {type(item).__name__}, expected a dict"
            )

        def get(name: str) -> Any:
            for alias in PICKLE_ALIASES[name]:
                if alias in item and item[alias] is not None:
                    return item[alias]
            return None

        try:
            h, w = int(get("image_h")), int(get("image_w"))
        except TypeError:
            raise FeatureStoreError(
                f"{self.path}: image {image_id!r}: record has no image height/width (keys: {sorted(item)})"
            ) from None
        arrays: dict[str, np.ndarray] = {}
        n = None if get("num_boxes") is None else int(get("num_boxes"))
        for name in (
            "boxes",
            "feats",
            *fields,
        ):  # boxes first: they give the row count when num_boxes is absent
            value = get(name)
            if value is None:
                if name in ("feats", "boxes"):
                    raise FeatureStoreError(
                        f"{self.path}: image {image_id!r}: record has no {PICKLE_ALIASES[name][0]!r}"
                        f" (keys: {sorted(item)})"
                    )
                continue
            if isinstance(value, str):
                value = value.encode("ascii")
            if isinstance(value, bytes):
                flat = b64decode(value, DTYPES[name])
            elif np.ndim(value) == 2 and name != "boxes":
                arrays[name] = np.asarray(value)
                continue
            else:
                flat = np.asarray(value).reshape(-1)
            arrays[name] = shape_field(
                self.path, image_id, name, flat, n if n is not None else len(arrays["boxes"])
            )
        feats, boxes = arrays.pop("feats"), arrays.pop("boxes")
        return make_record(self.path, image_id, (h, w), feats, boxes, arrays)


class LMDBWriter(StoreWriter):
    """Writes mmbert's pickle-free encoding. Records are committed in batches (``commit_bytes``); the map
    grows (doubling) whenever LMDB reports it full, so no terabyte ``map_size`` is reserved up front."""

    format = "lmdb"
    directory = True

    def __init__(
        self, path: str | os.PathLike, mode: str = "w", map_size: int = 1 << 30, commit_bytes: int = 64 << 20
    ) -> None:
        if mode not in ("w", "a"):
            raise ValueError(f"mode must be 'w' or 'a', got {mode!r}")
        self.directory = not Path(path).is_file()  # an existing single-file LMDB (subdir=False) stays one
        super().__init__(path)
        try:
            self._open(map_size)
        except BaseException:
            self._fail_open()
            raise
        self.commit_bytes = commit_bytes
        self._pending: dict[bytes, bytes] = {}
        self._pending_bytes = 0

    def _open(self, map_size: int) -> None:
        self._env = _open_env(self.path, readonly=False, map_size=map_size)
        encoding = _encoding(self._env)
        if encoding == "pickle":
            self._env.close()
            raise FeatureStoreError(
                f"{self.path}: is a pickled VOLTA/ViLBERT store; mmbert only appends to its own "
                "encoding (convert it to a new path instead)"
            )
        if encoding == "unknown":
            self._env.close()
            raise FeatureStoreError(
                f"{self.path}: LMDB store in an unknown convention; refusing to write into it"
            )
        self._ids = self._env.open_db(IDS_DB)
        if encoding is None:
            self._put([(META_KEY, json.dumps(META).encode())])
        else:
            self._backfill_ids()

    def _backfill_ids(self) -> None:
        """A store written before the ids sub-database existed: list its ids there once."""
        with self._env.begin() as txn:
            if txn.stat(self._ids)["entries"]:
                return
            keys = [k for k in txn.cursor().iternext(keys=True, values=False) if k not in RESERVED]
        for start in range(0, len(keys), 10000):
            with self._env.begin(write=True) as txn:
                for key in keys[start : start + 10000]:
                    txn.put(key, b"", db=self._ids)

    def _put(self, items: list[tuple[bytes, bytes]]) -> None:
        while True:
            try:
                with self._env.begin(write=True) as txn:
                    for key, value in items:
                        txn.put(key, value)
                        if key not in RESERVED:
                            txn.put(key, b"", db=self._ids)
                return
            except lmdb.MapFullError:
                self._env.set_mapsize(self._env.info()["map_size"] * 2)

    def flush(self) -> None:
        if self._pending:
            self._put(list(self._pending.items()))
            self._pending.clear()
            self._pending_bytes = 0

    def __contains__(self, image_id: object) -> bool:
        if not isinstance(image_id, str):
            return False
        key = image_id.encode("utf-8")
        if key in self._pending:
            return True
        with self._env.begin() as txn:
            return key not in RESERVED and txn.get(key, db=self._ids) is not None

    def __len__(self) -> int:
        self.flush()
        with self._env.begin() as txn:
            return txn.stat(self._ids)["entries"]

    def _write(self, record: RegionFeatures) -> None:
        key = record.image_id.encode("utf-8")
        if key in RESERVED or len(key) > self._env.max_key_size():
            raise FeatureStoreError(
                f"{self.path}: image id {record.image_id!r} cannot be an LMDB key "
                f"(reserved, or longer than {self._env.max_key_size()} bytes)"
            )
        value = encode_record(record)
        self._pending[key] = value
        self._pending_bytes += len(value)
        if self._pending_bytes >= self.commit_bytes:
            self.flush()

    def _finish(self) -> None:
        if self._env is None:
            return
        self.flush()
        self._env.sync()
        self._env.close()
        self._env = None
