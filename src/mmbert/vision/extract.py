"""Extract region features from images into a feature store, batched, resumable, sharded under torchrun.

::

    from mmbert.vision.extract import ExtractOptions, extract
    report = extract("images/", "feats.h5", ExtractOptions(detector="butd", weights="frcnn/pytorch_model.bin"))

Under ``torchrun --nproc-per-node N`` each rank takes every N-th image into its own shard
(``feats.rank0ofN.h5`` ...); ``mmbert features merge`` joins them.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmbert.data import features
from mmbert.data.batch import RegionFeatures
from mmbert.data.features.base import is_incomplete
from mmbert.data.features.metadata import (
    extraction_key,
    read_metadata,
    settings_diff,
    shard_path,
    write_metadata,
)
from mmbert.vision.detections import Detections
from mmbert.vision.images import UnreadableImageError, list_images, read_rgb

DETECTORS = ("butd", "fasterrcnn_v1", "fasterrcnn_v2", "grid")
FORMAT_NAMES = {"tsv": "tsv", "h5": "hdf5", "hdf5": "hdf5", "lmdb": "lmdb", "npz": "npz"}


@dataclass
class ExtractOptions:
    """What to extract with. ``weights``: a local file, ``"random"`` (fixed-seed random init, for tests;
    the metadata says so) or ``"default"`` (torchvision's published weights, downloaded; not for butd).
    ``boxes`` fixes the count (min = max); else ``min_boxes`` / ``max_boxes`` bound it. ``conf`` is the
    score threshold of ``selection="bottomup"`` (the reference rule has none)."""

    detector: str = "butd"
    weights: str = "random"
    config: str | None = None  # butd: the reference's config.yaml (default: beside the weights)
    boxes: int | None = None
    min_boxes: int | None = None
    max_boxes: int | None = None
    conf: float | None = None
    selection: str = "reference"
    min_size: int | None = None
    max_size: int | None = None
    proposals: int | None = None  # RPN proposals kept per image (butd 300, torchvision 1000)
    channel_order: str | None = None  # butd only: "bgr" (default) or "rgb" (the reference's file-path order)
    batch: int = 1
    format: str | None = None
    device: str = "cpu"
    workers: int = 2  # image-decoding threads
    progress: bool = True
    extra: dict = field(default_factory=dict)

    def box_bounds(self, default: tuple[int, int]) -> tuple[int, int]:
        if self.boxes is not None:
            if self.min_boxes is not None or self.max_boxes is not None:
                raise ValueError("give either --boxes N or --min-boxes/--max-boxes, not both")
            lo = hi = self.boxes
        else:
            lo = default[0] if self.min_boxes is None else self.min_boxes
            hi = default[1] if self.max_boxes is None else self.max_boxes
        if lo < 1 or hi < lo:
            raise ValueError(f"box bounds must satisfy 1 <= min <= max, got min {lo}, max {hi}")
        return lo, hi


@dataclass
class ExtractReport:
    store: Path
    written: int = 0
    resumed: int = 0  # images already in the store, not redone
    skipped: dict[str, str] = field(default_factory=dict)  # image id -> reason (with path)

    def __str__(self) -> str:
        return (f"{self.store}: {self.written} images extracted, {self.resumed} already there, "
                f"{len(self.skipped)} unreadable skipped")  # fmt: skip


def build_detector(opts: ExtractOptions):
    """The detector object (``.detect(images, selection)``, ``.feature_dim``) and its settings."""
    if opts.detector not in DETECTORS:
        raise ValueError(f"unknown detector {opts.detector!r}; choose from {', '.join(DETECTORS)}")
    if opts.selection not in ("reference", "bottomup"):
        raise ValueError(f"selection must be 'reference' or 'bottomup', got {opts.selection!r}")
    if opts.conf is not None and opts.selection != "bottomup":
        raise ValueError("--conf is the score threshold of --selection bottomup; the reference rule applies none")
    if opts.channel_order is not None and opts.detector != "butd":
        raise ValueError("--channel-order applies to the butd detector only")
    weights = None if opts.weights == "random" else opts.weights
    if opts.detector == "butd":
        if weights == "default":
            raise ValueError("butd has no downloadable default here: pass --weights FILE (the reference "
                             "pytorch_model.bin of unc-nlp/frcnn-vg-finetuned) or --weights random")  # fmt: skip
        from mmbert.vision.butd import load_butd

        over: dict = {}
        for name in ("min_size", "max_size", "channel_order"):
            if getattr(opts, name) is not None:
                over[name] = getattr(opts, name)
        if opts.conf is not None:
            over["score_thresh"] = opts.conf
        if opts.proposals is not None:
            over["rpn_post_nms_topk"] = opts.proposals
        model = load_butd(weights, opts.config, **over)
        lo, hi = opts.box_bounds((model.cfg.min_boxes, model.cfg.max_boxes))
        model.cfg.min_boxes, model.cfg.max_boxes = lo, hi
        settings = model.cfg.settings()
    elif opts.detector == "grid":
        from mmbert.vision.torchvision_detectors import GridFeatures

        if opts.boxes is not None or opts.min_boxes is not None or opts.max_boxes is not None:
            raise ValueError("grid features have one region per cell; --boxes/--min-boxes/--max-boxes do not apply")
        model = GridFeatures(opts.weights, opts.min_size or 600, opts.max_size or 1000)
        settings = model.settings()
    else:
        from mmbert.vision.torchvision_detectors import TorchvisionRCNN

        lo, hi = opts.box_bounds((10, 100))
        model = TorchvisionRCNN(int(opts.detector[-1]), opts.weights, opts.min_size or 800, opts.max_size or 1333,
                                lo, hi, 0.2 if opts.conf is None else opts.conf,
                                proposals=opts.proposals or 1000)  # fmt: skip
        settings = model.settings()
    return model.to(opts.device).eval(), settings


def describe_fields(detector: str) -> dict[str, str]:
    out = {"boxes": "x1, y1, x2, y2 in pixels of the original image; image_size = (height, width) of the original"}
    if detector == "grid":
        out["features"] = "ResNet-50 C5 cell features (2048-d), cells row by row; boxes are the cells"
        return out
    classes = "1600 Visual Genome objects" if detector == "butd" else "90 COCO categories"
    out["cls_prob"] = f"softmax over background + {classes}; column 0 = background, column c + 1 = class c"
    out["obj_id"] = f"best non-background class (0-based among the {classes}); obj_conf its probability"
    if detector == "butd":
        out["attr_id"] = ("best of the 400 Visual Genome attributes (softmax over the first 400 logits); "
                          "attr_conf its probability")
        out["features"] = "res5 mean-pooled RoI features"
    else:
        out["features"] = "the box head's 1024-d representation of each kept region"
    return out


def to_record(image_id: str, image_size: tuple[int, int], det: Detections, labels: bool = True) -> RegionFeatures:
    def arr(t):
        return None if t is None or not labels else t.detach().cpu().numpy()

    return RegionFeatures(image_id=image_id, feats=det.features.detach().cpu().numpy().astype(np.float32),
                          boxes=det.boxes.detach().cpu().numpy().astype(np.float32), image_size=image_size,
                          cls_prob=arr(det.cls_prob),
                          obj_id=arr(det.obj_ids), obj_conf=arr(det.obj_probs), attr_id=arr(det.attr_ids),
                          attr_conf=arr(det.attr_probs))  # fmt: skip


def distributed_share() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment; (0, 1, 0) otherwise."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))  # fmt: skip


def _decoded(pairs: Sequence[tuple[str, Path]], batch: int, workers: int) -> Iterator[list[tuple[str, Path, object]]]:
    """Batches of (id, path, RGB array or UnreadableImageError), decoded by threads one batch ahead."""

    def load(pair):
        try:
            return pair[0], pair[1], read_rgb(pair[1])
        except UnreadableImageError as e:
            return pair[0], pair[1], e

    chunks = [pairs[i : i + batch] for i in range(0, len(pairs), batch)]
    with ThreadPoolExecutor(max(1, workers)) as pool:
        pending = [pool.map(load, chunks[0])] if chunks else []
        for k in range(len(chunks)):
            if k + 1 < len(chunks):
                pending.append(pool.map(load, chunks[k + 1]))
            yield list(pending.pop(0))


def extract(images: str | os.PathLike | Sequence[tuple[str, Path]], out: str | os.PathLike,
            opts: ExtractOptions | None = None, rank: int | None = None, world_size: int | None = None,
            model=None, settings: dict | None = None) -> ExtractReport:  # fmt: skip
    """Extract every image of ``images`` (a directory, a list file, or (id, path) pairs) into ``out``.
    Images already in ``out`` are skipped (resume); unreadable ones are reported and skipped. With
    ``world_size`` > 1 (default: torchrun's environment) this rank writes its share to its own shard."""
    opts = opts or ExtractOptions()
    env_rank, env_world, local_rank = distributed_share()
    rank = env_rank if rank is None else rank
    world_size = env_world if world_size is None else world_size
    if opts.batch < 1:
        raise ValueError(f"--batch must be >= 1, got {opts.batch}")
    if opts.device == "cuda" and world_size > 1:  # one GPU per torchrun process
        opts.device = f"cuda:{local_rank}"
    pairs = list_images(images) if isinstance(images, (str, os.PathLike)) else list(images)
    mine = pairs[rank::world_size]
    store_path = shard_path(out, rank, world_size) if world_size > 1 else Path(out)
    fmt = FORMAT_NAMES.get(opts.format or "", None) if opts.format else None
    if opts.format and fmt is None:
        raise ValueError(f"unknown --format {opts.format!r}; choose from tsv, h5, lmdb, npz")
    if model is None:
        model, settings = build_detector(opts)
    # The TSV layouts hold object labels only together with attributes, which only butd has.
    labels = opts.detector == "butd" or (fmt or features.detect_format(store_path)) != "tsv"
    fields = describe_fields(opts.detector)
    if not labels:
        fields = {k: v for k, v in fields.items() if k in ("boxes", "features")}
        fields["note"] = ("TSV store: class distributions and labels not stored "
                          "(no TSV layout holds them without attributes)")
    weights_sha = None
    if opts.weights not in ("random", "default"):
        from mmbert.vision.weights import file_sha256

        weights_sha = file_sha256(opts.weights)
    meta = {
        "detector": opts.detector,
        "weights": opts.weights if opts.weights in ("random", "default") else str(Path(opts.weights).resolve()),
        "weights_sha256": weights_sha,
        "random_weights": opts.weights == "random",
        "selection": None if opts.detector == "grid" else opts.selection,
        "settings": json.loads(json.dumps(settings)),  # as it reads back (tuples become lists)
        "feature_dim": int(model.feature_dim),
        "fields": fields,
        "shard": {"rank": rank, "world_size": world_size} if world_size > 1 else None,
        "assigned": [image_id for image_id, _ in mine],
    }
    # A stopped first run into a file store (HDF5) left no store yet, only its marked side file: resume it.
    unfinished = is_incomplete(store_path)
    old = read_metadata(store_path) if Path(store_path).exists() or unfinished else None
    exists = unfinished or (
        Path(store_path).exists() and (not Path(store_path).is_dir() or any(Path(store_path).iterdir()))
    )
    if exists and old is None:
        raise ValueError(f"{store_path}: exists but was not written by `mmbert extract` (no metadata); "
                         "choose another --out")  # fmt: skip
    if old is not None and extraction_key(old) != extraction_key(meta):
        raise ValueError(f"{store_path}: was extracted with other settings ({settings_diff(old, meta)}); "
                         "choose another --out to extract with these")  # fmt: skip
    report = ExtractReport(store=Path(store_path))
    # ``with``: an exception or Ctrl-C aborts the writer, so the store stays marked incomplete (``check``
    # refuses it) and the next run resumes from the images already written.
    with features.open(store_path, "a" if exists else "w", format=fmt) as writer:
        todo = [(i, p) for i, p in mine if i not in writer]
        report.resumed = len(mine) - len(todo)
        write_metadata(store_path, {**meta, "skipped": {}, "complete": False})
        from tqdm import tqdm

        bar = tqdm(total=len(todo), unit="img", desc=f"extract {opts.detector}", disable=not opts.progress,
                   file=sys.stderr)  # fmt: skip
        for chunk in _decoded(todo, opts.batch, opts.workers):
            good = [(i, p, a) for i, p, a in chunk if not isinstance(a, Exception)]
            for image_id, _path, err in chunk:
                if isinstance(err, Exception):
                    report.skipped[image_id] = str(err)
                    print(f"skipped {err}", file=sys.stderr)
            if good:
                dets = model.detect([a for _, _, a in good], selection=opts.selection)
                for (image_id, _path, array), det in zip(good, dets):
                    writer.write(to_record(image_id, (int(array.shape[0]), int(array.shape[1])), det, labels))
                    report.written += 1
            bar.update(len(chunk))
        bar.close()
    write_metadata(store_path, {**meta, "skipped": report.skipped, "complete": True})
    return report
