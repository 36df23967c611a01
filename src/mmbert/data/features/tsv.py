"""Bottom-up-attention TSV stores: one image per line, arrays as base64 of raw little-endian buffers.

Layouts, told apart by the number of tab-separated fields on each line:

- 6 fields (peteanderson80 ``generate_tsv.py``): ``image_id, image_w, image_h, num_boxes, boxes, features``
  (note width before height);
- 10 fields (LXMERT ``src/utils.py``): ``img_id, img_h, img_w, objects_id, objects_conf, attrs_id,
  attrs_conf, num_boxes, boxes, features``;
- 11 fields: the 10 above + ``cls_prob`` (what mmbert writes when records carry the detector's class
  distribution; LXMERT's ``DictReader`` ignores the extra column, VOLTA's reads it by name);
- 13 fields (VOLTA ``extract_*_image.py``): the 11 above + ``attrs, classes`` (score matrices we skip).

dtypes: ids int64, confidences float32, boxes float32 (N, 4) pixels x1 y1 x2 y2, features float32 (N, F).

Random access without loading the file: the first open streams the file once and records the byte
offset of every line; that index is cached beside the file (``<file>.idx``, keyed by the file's size,
mtime and a content fingerprint: a hash of the start of up to 4096 indexed lines and of the file's head
and tail, so a copy that keeps size and mtime, ``cp -p`` or ``rsync -a``, still invalidates it) and
reused by later opens. A read is one ``pread`` of one line, and checks that the line holds the id asked
for (a stale index is rebuilt, never trusted). Lines are split on tabs directly,
so Python's ``csv.field_size_limit`` (which the csv-module readers must raise to ``sys.maxsize`` for
these 400 kB fields) never comes into play.
"""

from __future__ import annotations

import binascii
import hashlib
import json
import os
import warnings
from collections.abc import Collection
from pathlib import Path

import numpy as np
import pybase64  # SIMD base64: ~35x faster than binascii, which alone capped TSV reads near 2000 records/s

from mmbert.atomic import atomic_write
from mmbert.data.batch import RegionFeatures
from mmbert.data.features.base import (
    DTYPES,
    FeatureStoreError,
    StoreReader,
    StoreWriter,
    make_record,
    record_arrays,
    shape_field,
)

# LXMERT's 10 columns; its cls_prob variant adds one, the full bottom-up dump two more.
_LXMERT = (
    "image_id",
    "image_h",
    "image_w",
    "obj_id",
    "obj_conf",
    "attr_id",
    "attr_conf",
    "num_boxes",
    "boxes",
    "feats",
)
LAYOUTS = {
    6: ("image_id", "image_w", "image_h", "num_boxes", "boxes", "feats"),
    10: _LXMERT,
    11: (*_LXMERT, "cls_prob"),
    13: (*_LXMERT, "cls_prob", "attr_scores", "class_scores"),
}
# The field names as the reference code spells them (for messages).
PUBLISHED_NAMES = {
    6: ["image_id", "image_w", "image_h", "num_boxes", "boxes", "features"],
    10: [
        "img_id",
        "img_h",
        "img_w",
        "objects_id",
        "objects_conf",
        "attrs_id",
        "attrs_conf",
        "num_boxes",
        "boxes",
        "features",
    ],
}
WRITE_LAYOUTS = {"bottomup": 6, "lxmert": 10, "lxmert+cls_prob": 11}
INDEX_VERSION = 2
FINGERPRINT_LINES = 4096  # indexed lines whose first bytes enter the fingerprint
MAX_ID_BYTES = 1024  # longer first fields mean the file is not a feature TSV


def b64decode(data: bytes | memoryview, dtype: np.dtype) -> np.ndarray:
    """base64 -> flat little-endian array. Tolerates the ``b'...'`` wrapper that Python 3 csv writers
    leave around bytes values; raises ``binascii.Error``/``ValueError`` on corrupt or truncated input."""
    if data[:2] == b"b'" and data[-1:] == b"'":  # memoryview == bytes compares contents
        data = data[2:-1]
    raw = pybase64.b64decode(data, validate=True)
    if len(raw) % dtype.itemsize:
        raise ValueError(f"{len(raw)} decoded bytes are not a whole number of {dtype} values (truncated?)")
    return np.frombuffer(raw, dtype=dtype)


class TSVIndex:
    """Byte offsets of every line, by image id. ``offsets`` has N + 1 entries (the last is the end)."""

    def __init__(self, ids: list[str], offsets: np.ndarray, duplicates: list[str]) -> None:
        self.ids = ids
        self.offsets = offsets
        self.row = {image_id: i for i, image_id in enumerate(ids)}
        self.duplicates = duplicates

    @classmethod
    def build(cls, path: Path) -> TSVIndex:
        """Stream the file once (never holding more than one line)."""
        ids: list[str] = []
        starts: list[int] = []
        duplicates: list[str] = []
        seen: set[str] = set()
        pos = 0
        with open(path, "rb", buffering=1 << 20) as f:
            for number, line in enumerate(f, 1):
                start, pos = pos, pos + len(line)
                if not line.strip():
                    continue
                tab = line.find(b"\t")
                _check_shape(line, tab, number, path)
                image_id = _decode_id(line[:tab], path)
                if image_id in seen:
                    duplicates.append(image_id)
                    continue
                seen.add(image_id)
                ids.append(image_id)
                starts.append(start)
        offsets = np.array(starts + [pos], dtype=np.int64)
        # A duplicate's later line is not indexed; the end of each indexed line is found by scanning
        # to its newline at read time only when the next offset is not its own end (rare).
        return cls(ids, offsets, duplicates)

    def fingerprint(self, path: Path) -> str:
        """A hash of the file's head and tail and of the first bytes of up to ``FINGERPRINT_LINES``
        indexed lines (evenly spread): cheap, and it changes when lines move."""
        digest = hashlib.blake2b(digest_size=16)
        n = len(self.ids)
        rows = range(n) if n <= FINGERPRINT_LINES else np.linspace(0, n - 1, FINGERPRINT_LINES).astype(int)
        with open(path, "rb") as f:
            fd = f.fileno()
            size = os.fstat(fd).st_size
            digest.update(os.pread(fd, 4096, 0))
            digest.update(os.pread(fd, 4096, max(0, size - 4096)))
            for row in rows:
                digest.update(os.pread(fd, 80, int(self.offsets[row])))
        return digest.hexdigest()

    def save(self, index_path: Path, size: int, mtime_ns: int, fingerprint: str) -> None:
        header = {
            "format": "mmbert-tsv-index",
            "version": INDEX_VERSION,
            "size": size,
            "mtime_ns": mtime_ns,
            "fingerprint": fingerprint,
            "count": len(self.ids),
            "duplicates": self.duplicates,
        }
        def write(tmp: str) -> None:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(json.dumps(header) + "\n")
                for image_id, offset in zip(self.ids, self.offsets[:-1].tolist()):
                    f.write(f"{offset}\t{image_id}\n")
                f.write(f"{int(self.offsets[-1])}\n")

        atomic_write(index_path, write, fsync=False)  # a cache: rebuilt when lost

    @classmethod
    def load(cls, index_path: Path, size: int, mtime_ns: int, path: Path | None = None) -> TSVIndex | None:
        """The cached index, or None when it is missing, unreadable or stale (the TSV changed: size,
        mtime or, given the TSV's ``path``, the content fingerprint)."""
        try:
            with open(index_path, encoding="utf-8") as f:
                header = json.loads(f.readline())
                if (
                    header.get("format") != "mmbert-tsv-index"
                    or header.get("version") != INDEX_VERSION
                    or header.get("size") != size
                    or header.get("mtime_ns") != mtime_ns
                ):
                    return None
                ids: list[str] = []
                offsets: list[int] = []
                for line in f:
                    offset, _, image_id = line.rstrip("\n").partition("\t")
                    offsets.append(int(offset))
                    if image_id:
                        ids.append(image_id)
        except (OSError, ValueError):
            return None
        if len(offsets) != len(ids) + 1 or len(ids) != header.get("count"):
            return None
        index = cls(ids, np.array(offsets, dtype=np.int64), list(header.get("duplicates", [])))
        if path is not None:
            try:
                if index.fingerprint(path) != header.get("fingerprint"):
                    return None
            except OSError:
                return None
        return index


def _check_shape(line: bytes, tab: int, number: int, path: Path) -> None:
    """Refuse, at indexing, a line that cannot be a feature record (a JSON or text file passed as a TSV),
    quoting only its start."""
    fields = line.count(b"\t") + 1
    if tab < 0 or tab > MAX_ID_BYTES or fields not in LAYOUTS:
        what = "has no tab" if tab < 0 else (
            f"starts with a {tab}-byte first field" if tab > MAX_ID_BYTES else f"has {fields} tab-separated fields"
        )  # fmt: skip
        raise FeatureStoreError(
            f"{path}: line {number} {what}, so this is not a bottom-up-attention feature TSV (expected 6, 10, "
            f"11 or 13 fields, the first an image id); the line starts {line[:60]!r}"
        )


def _decode_id(raw: bytes, path: Path) -> str:
    if raw[:1] == b'"' and raw[-1:] == b'"':  # a csv writer quoted it
        raw = raw[1:-1].replace(b'""', b'"')
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FeatureStoreError(f"{path}: image id {raw[:80]!r} is not UTF-8") from e


class TSVReader(StoreReader):
    """Random-access reader over a bottom-up-attention TSV (any of the 6/10/11/13-field layouts).

    ``index_path`` (default ``<file>.idx``) caches the offset index; ``index_reused`` tells whether this
    open found a valid cached index. If the cache cannot be written (read-only directory), the index is
    kept in memory only, with a warning."""

    format = "tsv"

    def __init__(self, path: str | os.PathLike, index_path: str | os.PathLike | None = None) -> None:
        super().__init__(path)
        if self.path.is_dir():
            raise FeatureStoreError(f"{self.path}: is a directory, not a TSV file")
        self.index_path = Path(index_path) if index_path else self.path.with_name(self.path.name + ".idx")
        self._index: TSVIndex | None = None
        self.index_reused = False

    @property
    def index(self) -> TSVIndex:
        if self._index is None:
            st = self.path.stat()
            index = TSVIndex.load(self.index_path, st.st_size, st.st_mtime_ns, self.path)
            self.index_reused = index is not None
            if index is None:
                index = TSVIndex.build(self.path)
                try:
                    index.save(self.index_path, st.st_size, st.st_mtime_ns, index.fingerprint(self.path))
                except OSError as e:
                    warnings.warn(
                        f"{self.path}: could not cache the offset index at {self.index_path} ({e}); "
                        "it will be rebuilt on the next open",
                        stacklevel=2,
                    )
            self._index = index
        return self._index

    def _open(self) -> int:
        return os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))

    def _close(self, handle: int) -> None:
        os.close(handle)

    def _keys(self) -> list[str]:
        return list(self.index.ids)

    def _has(self, image_id: str) -> bool:
        return image_id in self.index.row

    def line(self, image_id: str) -> bytes:
        """The raw line of one image (one positioned read), checked to hold ``image_id``: when it does
        not, the index is stale (the file changed under it) and is rebuilt once, never trusted."""
        data = self._line_at_index(image_id)
        if self._id_of(data) != image_id:
            self._index = None
            self._key_list = None
            self.index_path.unlink(missing_ok=True)
            data = self._line_at_index(image_id)
            if self._id_of(data) != image_id:
                raise FeatureStoreError(
                    f"{self.path}: image {image_id!r}: the line at its offset holds "
                    f"{self._id_of(data)[:80]!r} even after re-indexing (is the file being written?)"
                )
        return data

    def _id_of(self, line: bytes) -> str:
        tab = line.find(b"\t")
        return _decode_id(line[: tab if tab >= 0 else len(line)].rstrip(b"\r"), self.path)

    def _line_at_index(self, image_id: str) -> bytes:
        row = self.index.row.get(image_id)
        if row is None:
            raise self.missing(image_id)
        start, end = int(self.index.offsets[row]), int(self.index.offsets[row + 1])
        if hasattr(os, "pread"):
            data = os.pread(self.handle, end - start, start)
        else:  # pragma: no cover - Windows
            os.lseek(self.handle, start, os.SEEK_SET)
            data = os.read(self.handle, end - start)
        newline = data.find(b"\n")  # lines skipped as duplicates/blank sit between two indexed offsets
        return data[:newline] if newline >= 0 else data

    def _read(self, image_id: str, fields: Collection[str]) -> RegionFeatures:
        return parse_line(self.line(image_id).rstrip(b"\r"), self.path, image_id, fields)


def split_fields(line: bytes) -> list[memoryview]:
    """Tab-separated fields as zero-copy views (``bytes.split`` would copy the 400 kB feature field)."""
    view = memoryview(line)
    out, start = [], 0
    while True:
        tab = line.find(b"\t", start)
        if tab < 0:
            out.append(view[start:])
            return out
        out.append(view[start:tab])
        start = tab + 1


def parse_line(line: bytes, path: Path, image_id: str, fields: Collection[str]) -> RegionFeatures:
    """One TSV line -> record (errors name the file, the image and the field)."""
    parts = split_fields(line)
    layout = LAYOUTS.get(len(parts))
    if layout is None:
        raise FeatureStoreError(
            f"{path}: image {image_id!r}: line has {len(parts)} tab-separated fields; expected 6 "
            f"({', '.join(PUBLISHED_NAMES[6])}), 10 ({', '.join(PUBLISHED_NAMES[10])}), "
            "11 (+ cls_prob) or 13 (+ cls_prob, attrs, classes)"
        )
    values = dict(zip(layout, parts))
    try:
        h, w, n = (int(bytes(values[k])) for k in ("image_h", "image_w", "num_boxes"))
    except ValueError as e:
        raise FeatureStoreError(
            f"{path}: image {image_id!r}: image_h/image_w/num_boxes are not integers ({e})"
        ) from e
    arrays = {}
    for name in ("feats", "boxes", *fields):
        if name not in values:
            continue
        try:
            flat = b64decode(values[name], DTYPES[name])
        except (binascii.Error, ValueError) as e:
            raise FeatureStoreError(
                f"{path}: image {image_id!r}: field {name!r} is not valid base64 ({e})"
            ) from e
        arrays[name] = shape_field(path, image_id, name, flat, n)
    feats, boxes = arrays.pop("feats"), arrays.pop("boxes")
    if feats.shape[0] != n:
        raise FeatureStoreError(
            f"{path}: image {image_id!r}: num_boxes={n} but features hold {feats.shape[0]} rows"
        )
    return make_record(path, image_id, (h, w), feats, boxes, arrays)


class TSVWriter(StoreWriter):
    """Writes the 10-field LXMERT layout (11 with ``cls_prob``) or the 6-field layout.

    ``layout="auto"`` picks from the first record: LXMERT when it carries object and attribute labels,
    + cls_prob when it has one, else the 6-field layout. ``mode="a"`` appends to an existing file
    (a torn last line from an interrupted run is cut off first) and keeps its layout. The offset index
    is written on close, so the next reader does not need to rescan."""

    format = "tsv"

    def __init__(self, path: str | os.PathLike, mode: str = "w", layout: str = "auto") -> None:
        if layout != "auto" and layout not in WRITE_LAYOUTS:
            raise ValueError(f"unknown TSV layout {layout!r}; choose from auto, {', '.join(WRITE_LAYOUTS)}")
        if mode not in ("w", "a"):
            raise ValueError(f"mode must be 'w' or 'a', got {mode!r}")
        super().__init__(path)
        try:
            self._open_file(mode, layout)
        except BaseException:
            self._fail_open()
            raise

    def _open_file(self, mode: str, layout: str) -> None:
        self.num_fields = WRITE_LAYOUTS.get(layout)
        self.index_path = self.path.with_name(self.path.name + ".idx")
        ids: list[str] = []
        offsets = [0]
        duplicates: list[str] = []
        if mode == "a" and self.path.exists() and self.path.stat().st_size:
            _refuse_foreign(self.path)
            _cut_torn_tail(self.path)
            reader = TSVReader(self.path)
            index = reader.index
            ids, offsets, duplicates = list(index.ids), index.offsets.tolist(), list(index.duplicates)
            if ids:
                found = len(reader.line(ids[0]).split(b"\t"))
                if self.num_fields is not None and found != self.num_fields:
                    raise FeatureStoreError(
                        f"{self.path}: existing lines have {found} fields, not layout {layout!r}"
                    )
                self.num_fields = found if found in WRITE_LAYOUTS.values() else None
                if self.num_fields is None:
                    raise FeatureStoreError(f"{self.path}: cannot append to a {found}-field TSV")
            reader.close()
        self._file = open(self.path, "ab" if mode == "a" else "wb")
        self._ids = ids
        self._offsets = offsets
        self._duplicates = duplicates
        self._seen = set(ids)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._seen

    def __len__(self) -> int:
        return len(self._ids)

    def _write(self, record: RegionFeatures) -> None:
        if record.image_id in self._seen:
            raise FeatureStoreError(f"{self.path}: image {record.image_id!r} is already in this TSV")
        if any(c in record.image_id for c in "\t\r\n"):
            raise FeatureStoreError(f"{self.path}: image id {record.image_id!r} contains a tab or newline")
        arrays = record_arrays(record)
        if self.num_fields is None:
            labelled = all(k in arrays for k in ("obj_id", "obj_conf", "attr_id", "attr_conf"))
            self.num_fields = (11 if "cls_prob" in arrays else 10) if labelled else 6
        h, w = record.image_size
        n = arrays["feats"].shape[0]
        enc = {k: pybase64.b64encode(v.tobytes()) for k, v in arrays.items()}
        ints = {
            "image_id": record.image_id.encode("utf-8"),
            "image_h": b"%d" % h,
            "image_w": b"%d" % w,
            "num_boxes": b"%d" % n,
        }
        names = LAYOUTS[self.num_fields]
        lost = sorted(set(arrays) - set(names))
        if lost:
            raise FeatureStoreError(
                f"{self.path}: image {record.image_id!r} has {lost}, which the {self.num_fields}-field layout "
                "cannot hold (write to HDF5, LMDB or npz instead, or start the TSV with such a record)"
            )
        try:
            line = b"\t".join(ints[k] if k in ints else enc[k] for k in names) + b"\n"
        except KeyError as e:
            raise FeatureStoreError(
                f"{self.path}: image {record.image_id!r} lacks {e.args[0]!r}, needed by the {self.num_fields}-field "
                "layout of this TSV"
            ) from None
        self._file.write(line)
        self._ids.append(record.image_id)
        self._seen.add(record.image_id)
        self._offsets.append(self._offsets[-1] + len(line))

    def _abort(self) -> None:
        if not self._file.closed:
            self._file.close()

    def _finish(self) -> None:
        if self._file.closed:
            return
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        st = self.path.stat()
        if st.st_size == self._offsets[-1]:
            index = TSVIndex(self._ids, np.array(self._offsets, dtype=np.int64), self._duplicates)
            try:
                index.save(self.index_path, st.st_size, st.st_mtime_ns, index.fingerprint(self.path))
            except OSError:
                pass  # the reader rebuilds it

    def __del__(self) -> None:
        try:  # dropped without close(): not marked complete
            self.abort()
        except Exception:
            pass


def _refuse_foreign(path: Path) -> None:
    """Appending starts by cutting a torn last line: make sure the file is a feature TSV first (its first
    line, or the start of a lone torn one, looks like a record), so that no other file is cut short."""
    with open(path, "rb") as f:
        head = f.readline(1 << 20)
    tab = head.find(b"\t")
    complete = head.endswith(b"\n")
    try:
        if complete:
            _check_shape(head, tab, 1, path)
        elif tab < 0 or tab > MAX_ID_BYTES:
            raise FeatureStoreError(f"{path}: its first line has no image id and tab")
    except FeatureStoreError as e:
        raise FeatureStoreError(f"{path}: exists and is not a feature TSV ({e}); refusing to append to it") from None


def _cut_torn_tail(path: Path) -> None:
    """Drop a partial last line (a run killed mid-write) so that appending starts on a fresh line."""
    with open(path, "rb+") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        block = 1 << 16
        pos = size
        while pos > 0:
            start = max(0, pos - block)
            f.seek(start)
            chunk = f.read(pos - start)
            nl = chunk.rfind(b"\n")
            if nl >= 0:
                f.truncate(start + nl + 1)
                return
            pos = start
        f.truncate(0)
