"""Record and store checks behind ``mmbert features check``.

Per record: positive image size; features 2-D with the store's width (or ``feat_dim``); a number of
boxes within [min_boxes, max_boxes]; boxes, labels, confidences and class distributions with one row
per region; finite values everywhere; every box inside the image (with ``tolerance`` pixels of slack:
detectors overshoot by a pixel) with x2 > x1 and y2 > y1; confidences in [0, 1]. A record that cannot
even be read (corrupt base64, a missing array, a listed id with no record) is a problem too. Every
problem names its image id; a store is checked by streaming one record at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from mmbert.data.batch import RegionFeatures
from mmbert.data.features.base import OPTIONAL_FIELDS, FeatureStoreError, StoreReader

_SHOW = 5  # region indices listed per problem


@dataclass
class Problem:
    """One bad record: its image id and what is wrong."""

    image_id: str
    message: str

    def __str__(self) -> str:
        return f"{self.image_id}: {self.message}"


def _where(mask: np.ndarray) -> str:
    idx = np.flatnonzero(mask)
    shown = ", ".join(str(i) for i in idx[:_SHOW])
    return f"region{'s' if len(idx) > 1 else ''} {shown}{', ...' if len(idx) > _SHOW else ''}"


def check_record(
    record: RegionFeatures,
    feat_dim: int | None = None,
    min_boxes: int = 1,
    max_boxes: int | None = None,
    tolerance: float = 1.0,
) -> list[str]:
    """Everything wrong with one record (empty list = good)."""
    problems: list[str] = []
    h, w = record.image_size
    if not (h > 0 and w > 0):
        problems.append(f"image size (height={h}, width={w}) is not positive")
    feats, boxes = np.asarray(record.feats), np.asarray(record.boxes)
    if feats.ndim != 2:
        return problems + [f"features have shape {feats.shape}, expected (boxes, width)"]
    n = feats.shape[0]
    if feat_dim is not None and n and feats.shape[1] != feat_dim:
        problems.append(f"feature width {feats.shape[1]}, expected {feat_dim}")
    if n < min_boxes:
        problems.append(f"{n} boxes, expected at least {min_boxes}")
    if max_boxes is not None and n > max_boxes:
        problems.append(f"{n} boxes, expected at most {max_boxes}")
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        problems.append(f"boxes have shape {boxes.shape}, expected ({n}, 4)")
        boxes = None
    elif boxes.shape[0] != n:
        problems.append(f"boxes has {boxes.shape[0]} rows for {n} feature rows")
    for name in OPTIONAL_FIELDS:
        value = getattr(record, name)
        if value is not None and len(value) != n:
            problems.append(f"{name} has {len(value)} entries for {n} regions")
    bad = ~np.isfinite(feats).all(axis=1)
    if bad.any():
        problems.append(f"features contain NaN or inf in {_where(bad)}")
    for name in ("cls_prob", "obj_conf", "attr_conf"):
        value = getattr(record, name)
        if value is None:
            continue
        value = np.asarray(value, dtype=np.float64)
        bad = ~np.isfinite(value.reshape(len(value), -1)).all(axis=1)
        if bad.any():
            problems.append(f"{name} contains NaN or inf in {_where(bad)}")
        elif name != "cls_prob" and ((value < 0) | (value > 1)).any():
            problems.append(f"{name} outside [0, 1] in {_where((value < 0) | (value > 1))}")
    if boxes is not None and len(boxes):
        finite = np.isfinite(boxes).all(axis=1)
        if not finite.all():
            problems.append(f"boxes contain NaN or inf in {_where(~finite)}")
        b = np.where(finite[:, None], boxes, 0.0)
        outside = finite & (
            (b[:, 0] < -tolerance)
            | (b[:, 1] < -tolerance)
            | (b[:, 2] > w + tolerance)
            | (b[:, 3] > h + tolerance)
        )
        if outside.any():
            i = int(np.flatnonzero(outside)[0])
            problems.append(
                f"box outside the {w}x{h} (width x height) image in {_where(outside)} "
                f"(e.g. {boxes[i].tolist()})"
            )
        flipped = finite & ((b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1]))
        if flipped.any():
            i = int(np.flatnonzero(flipped)[0])
            problems.append(f"box with x2 <= x1 or y2 <= y1 in {_where(flipped)} (e.g. {boxes[i].tolist()})")
    return problems


def check_store(
    store: StoreReader,
    feat_dim: int | None = None,
    min_boxes: int = 1,
    max_boxes: int | None = None,
    tolerance: float = 1.0,
    progress: bool = False,
) -> Iterator[Problem]:
    """Stream every record of ``store`` and yield a :class:`Problem` per bad one. Without ``feat_dim``
    the width of the first readable record is the store's expected width."""
    from tqdm import tqdm

    duplicates = getattr(getattr(store, "index", None), "duplicates", [])
    for image_id in duplicates:  # TSV only: a later line with an id seen before is never read
        yield Problem(image_id, "appears on more than one line of the TSV; only the first is read")
    prefix = f"{store.path}: image "
    for image_id in tqdm(store.keys(), disable=not progress, unit="img", desc=f"check {store.path.name}"):
        try:
            record = store.read(image_id)
        except FeatureStoreError as e:
            message = str(e)
            head = f"{prefix}{image_id!r}: "
            if message.startswith(head):
                message = message[len(head) :]
            elif message.endswith("store") and "is not in this" in message:
                message = "listed in the store's keys but has no record"
            yield Problem(image_id, message)
            continue
        if feat_dim is None and record.feats.ndim == 2 and record.num_regions:
            feat_dim = int(record.feats.shape[1])
        for message in check_record(record, feat_dim, min_boxes, max_boxes, tolerance):
            yield Problem(image_id, message)


def training_problem(record: RegionFeatures, feat_dim: int | None = None) -> str | None:
    """The first defect that would break or poison training (None = usable): NaN/inf features or boxes,
    a box with x2 < x1 or y2 < y1, a non-positive image size, a feature width other than ``feat_dim``.
    Cheaper than :func:`check_record` (no per-region listing), so it runs on every record read."""
    h, w = record.image_size
    if not (h > 0 and w > 0):
        return f"image size (height={h}, width={w}) is not positive"
    feats, boxes = np.asarray(record.feats), np.asarray(record.boxes)
    if feats.ndim != 2:
        return f"features have shape {feats.shape}, expected (boxes, width)"
    if feat_dim is not None and len(feats) and feats.shape[1] != feat_dim:
        return f"feature width {feats.shape[1]}, expected {feat_dim} (a record from another detector?)"
    if not np.isfinite(feats).all():
        return f"features contain NaN or inf in {_where(~np.isfinite(feats).all(axis=1))}"
    if boxes.ndim != 2 or boxes.shape[1:] != (4,):
        return f"boxes have shape {boxes.shape}, expected ({len(feats)}, 4)"
    if not np.isfinite(boxes).all():
        return f"boxes contain NaN or inf in {_where(~np.isfinite(boxes).all(axis=1))}"
    flipped = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if flipped.any():
        example = boxes[int(np.flatnonzero(flipped)[0])].tolist()
        return f"box with x2 < x1 or y2 < y1 in {_where(flipped)} (e.g. {example})"
    return None
