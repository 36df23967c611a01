"""Caption corpora for pre-training: each reader yields ``Caption(image_id, caption)`` records.

Formats:

- COCO captions JSON (``captions_train2014.json``): ``{"images": [{"id", "file_name"}], "annotations":
  [{"image_id", "id", "caption"}]}``. ``image_key="id"`` gives ``"9"`` (VOLTA's LMDB keys),
  ``"file_name"`` the file stem ``"COCO_train2014_000000000009"`` (LXMERT's TSV ids).
- Conceptual Captions TSV (``Train_GCC-training.tsv``): ``caption<TAB>url`` per line, no header; ids are
  the 0-based row (``image_key="row"``, the usual naming of CC feature extractions) or the URL. A file
  whose first line is a header naming a ``caption`` column (img2dataset-style) is read by column name
  and ``image_key`` may name any column (e.g. ``"image_id"``, ``"key"``).
- Karpathy split JSON (``dataset_coco.json``, ``dataset_flickr30k.json``): ``{"images": [{"filename",
  "imgid", "split", "sentences": [{"raw", ...}], "cocoid"?}]}``, filtered by ``splits`` (train/restval/
  val/test). ``image_key="auto"``: ``cocoid`` when present (COCO), else the file stem (Flickr30k).
- JSONL: one ``{"image_id": ..., "caption": ...}`` object per line.

``read_captions(path)`` picks the reader from the suffix and content. ``join_with_store`` keeps the
captions whose image the feature store holds and returns a :class:`MissingImages` report for the rest:
nothing is dropped silently.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
from collections.abc import Container, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

CAPTION_FORMATS = ("coco", "cc", "karpathy", "jsonl")
KARPATHY_SPLITS = ("train", "restval", "val", "test")


class Caption(NamedTuple):
    image_id: str
    caption: str


class CaptionFormatError(ValueError):
    """A caption file that does not follow its format; the message names the file and the record."""


def _text(value: object, where: str) -> str:
    """A caption must be text: an int or null would pass loading and fail (or mislead) later."""
    if not isinstance(value, str):
        raise CaptionFormatError(f"{where}: the caption must be a string, got {type(value).__name__} {value!r:.80}")
    return value.strip()


def read_coco_captions(path: str | os.PathLike, image_key: str = "id") -> Iterator[Caption]:
    """COCO captions JSON -> captions in annotation order. ``image_key``: "id" or "file_name" (stem)."""
    path = Path(path)
    data = _load_json(path)
    if not isinstance(data, dict) or "annotations" not in data:
        raise CaptionFormatError(f"{path}: not a COCO captions file (no 'annotations' list)")
    if image_key not in ("id", "file_name"):
        raise ValueError(f"image_key must be 'id' or 'file_name', got {image_key!r}")
    names = {}
    if image_key == "file_name":
        for img in data.get("images", []):
            names[img["id"]] = Path(img["file_name"]).stem
    for i, ann in enumerate(data["annotations"]):
        try:
            raw_id, text = ann["image_id"], ann["caption"]
        except (KeyError, TypeError):
            raise CaptionFormatError(
                f"{path}: annotations[{i}] lacks 'image_id' or 'caption': {ann!r:.200}"
            ) from None
        if image_key == "file_name":
            if raw_id not in names:
                raise CaptionFormatError(
                    f"{path}: annotations[{i}] refers to image {raw_id!r}, absent from 'images'"
                )
            yield Caption(names[raw_id], _text(text, f"{path}: annotations[{i}]"))
        else:
            yield Caption(str(raw_id), _text(text, f"{path}: annotations[{i}]"))


def read_conceptual_captions(path: str | os.PathLike, image_key: str = "row") -> Iterator[Caption]:
    """Conceptual Captions TSV, streamed. ``image_key``: "row" (0-based data row), "url", or a header column."""
    path = Path(path)
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        first = next(reader, None)
        if first is None:
            return
        header = [c.strip().lower() for c in first]
        if "caption" in header:
            columns, rows = header, reader
            start = 2
        else:
            columns, rows = ["caption", "url"], itertools.chain([first], reader)
            start = 1
        if image_key != "row" and image_key not in columns:
            raise ValueError(
                f"{path}: image_key {image_key!r} is not a column (columns: {columns}) nor 'row'"
            )
        text_col = columns.index("caption")
        key_col = None if image_key == "row" else columns.index(image_key)
        for row_no, row in enumerate(rows):
            if not row or not any(row):
                continue
            if len(row) <= max(text_col, key_col or 0):
                raise CaptionFormatError(
                    f"{path}: line {row_no + start}: {len(row)} fields, expected {len(columns)}"
                )
            image_id = str(row_no) if key_col is None else row[key_col]
            yield Caption(image_id, row[text_col].strip())


def read_karpathy(
    path: str | os.PathLike, splits: Sequence[str] | None = ("train", "restval"), image_key: str = "auto"
) -> Iterator[Caption]:
    """Karpathy split JSON (COCO or Flickr30k). ``splits=None`` keeps every split.
    ``image_key``: "auto", "cocoid", "imgid" or "filename" (stem)."""
    path = Path(path)
    data = _load_json(path)
    if not isinstance(data, dict) or "images" not in data:
        raise CaptionFormatError(f"{path}: not a Karpathy split file (no 'images' list)")
    if splits is not None:
        unknown = set(splits) - set(KARPATHY_SPLITS)
        if unknown:
            raise ValueError(f"unknown Karpathy splits {sorted(unknown)}; choose from {KARPATHY_SPLITS}")
    for i, img in enumerate(data["images"]):
        if splits is not None and img.get("split") not in splits:
            continue
        key = image_key
        if key == "auto":
            key = "cocoid" if "cocoid" in img else "filename"
        try:
            raw = img[key]
            sentences = img["sentences"]
        except KeyError as e:
            raise CaptionFormatError(f"{path}: images[{i}] has no {e.args[0]!r}") from None
        image_id = Path(raw).stem if key == "filename" else str(raw)
        for sent in sentences:
            text = sent.get("raw") if isinstance(sent, dict) else None
            if text is None:
                text = " ".join(sent.get("tokens", [])) if isinstance(sent, dict) else None
            if text is None:
                raise CaptionFormatError(f"{path}: images[{i}] has a sentence without 'raw' or 'tokens'")
            yield Caption(image_id, _text(text, f"{path}: images[{i}]"))


def read_jsonl(path: str | os.PathLike) -> Iterator[Caption]:
    """JSONL with one ``{"image_id", "caption"}`` object per line, streamed."""
    path = Path(path)
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                image_id, text = item["image_id"], item["caption"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise CaptionFormatError(
                    f"{path}: line {line_no}: expected {{'image_id', 'caption'}} ({e})"
                ) from None
            yield Caption(str(image_id), _text(text, f"{path}: line {line_no}"))


def detect_caption_format(path: str | os.PathLike) -> str:
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return "jsonl"
    if suffix in (".tsv", ".txt"):
        return "cc"
    if suffix == ".json":
        with open(path, encoding="utf-8") as f:
            head = f.read(1 << 16)
        if '"annotations"' in head:
            return "coco"
        if '"sentences"' in head or '"dataset"' in head:
            return "karpathy"
        data = _load_json(path)  # keys far into the file: parse it (caption files are small)
        if isinstance(data, dict) and "annotations" in data:
            return "coco"
        if isinstance(data, dict) and "images" in data:
            return "karpathy"
    raise CaptionFormatError(
        f"{path}: cannot tell the caption format; pass format= one of {CAPTION_FORMATS} "
        "(.json COCO/Karpathy, .tsv Conceptual Captions, .jsonl {image_id, caption})"
    )


def read_captions(path: str | os.PathLike, format: str | None = None, **kwargs) -> Iterator[Caption]:
    """Any supported caption file; ``format`` in ``CAPTION_FORMATS`` overrides the detection. A file that
    is not UTF-8 is refused naming it (the decoder's own error names no file)."""
    try:
        fmt = format or detect_caption_format(path)
    except UnicodeDecodeError as e:
        raise CaptionFormatError(_not_utf8(path, e)) from None
    readers = {
        "coco": read_coco_captions,
        "cc": read_conceptual_captions,
        "karpathy": read_karpathy,
        "jsonl": read_jsonl,
    }
    if fmt not in readers:
        raise ValueError(f"unknown caption format {fmt!r}; choose from {CAPTION_FORMATS}")
    return _naming_encoding_errors(readers[fmt](path, **kwargs), path)


def _not_utf8(path: object, e: UnicodeDecodeError) -> str:
    return f"{path}: not UTF-8 text ({e.reason}: byte {e.object[e.start : e.start + 1]!r}); re-encode it as UTF-8"


def _naming_encoding_errors(captions: Iterator[Caption], path: object) -> Iterator[Caption]:
    try:
        yield from captions
    except UnicodeDecodeError as e:
        raise CaptionFormatError(_not_utf8(path, e)) from None


@dataclass
class MissingImages:
    """Captions whose image the feature store does not hold."""

    num_captions: int = 0
    num_images: int = 0
    total_captions: int = 0
    examples: list[str] = field(default_factory=list)  # up to 10 missing image ids

    def __bool__(self) -> bool:
        return self.num_captions > 0

    def __str__(self) -> str:
        if not self.num_captions:
            return f"all {self.total_captions} captions have their image in the feature store"
        shown = ", ".join(repr(i) for i in self.examples)
        return (
            f"{self.num_captions} of {self.total_captions} captions skipped: their {self.num_images} images are "
            f"not in the feature store (e.g. {shown}); check the caption file's image ids against the store's "
            "(`mmbert features info`), e.g. COCO image_key='id' vs 'file_name'"
        )


def join_with_store(
    captions: Iterable[Caption], image_ids: Container[str]
) -> tuple[list[Caption], MissingImages]:
    """Keep the captions whose image is in ``image_ids`` (a store or a set of its keys); report the rest."""
    kept: list[Caption] = []
    report = MissingImages()
    missing: set[str] = set()
    for cap in captions:
        report.total_captions += 1
        if cap.image_id in image_ids:
            kept.append(cap)
            continue
        report.num_captions += 1
        if cap.image_id not in missing:
            missing.add(cap.image_id)
            if len(report.examples) < 10:
                report.examples.append(cap.image_id)
    report.num_images = len(missing)
    return kept, report


def _load_json(path: Path) -> object:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise CaptionFormatError(f"{path}: invalid JSON ({e})") from None
