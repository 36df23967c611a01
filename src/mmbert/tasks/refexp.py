"""Referring expressions (RefCOCO, RefCOCO+, RefCOCOg): pick the region an expression describes.

Reads the refs file of ``tools/refer`` (``refs(unc).p`` / ``refs(umd).p``: a list of ``{ref_id, ann_id,
image_id, split, sentences: [{sent, raw, sent_id}]}``) and COCO ``instances.json`` (``annotations`` with
``bbox`` [x, y, w, h] pixels). The refs file is a Python pickle: loading one runs whatever code it
holds, so it is read only with ``trust_pickle=True`` (``--trust-pickle``), i.e. when the user trusts
the file; a JSON export of the same list is read without that flag.

Head: ``Linear(Dv, 1)`` per input region (VOLTA's V-logit); padded regions get -10000. Targets: IoU of
each detected region with the ground-truth box; loss BCE over the real regions (summed, divided by
the batch size: VOLTA's mean x num_regions without counting padding). Metric: accuracy of the top
region at IoU >= 0.5, for the split loaded (val, testA, testB, test). Predictions: a JSON list of
``{"ref_id", "sent_id", "box": [x, y, w, h], "iou"}``.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmbert.data.batch import Batch
from mmbert.models.base import Encoded, EncoderModel
from mmbert.objectives.base import LossOutput
from mmbert.tasks.base import Task, TaskOptions
from mmbert.tasks.features import check_images, open_features, region_lookup
from mmbert.tasks.fields import text_field, xywh_box
from mmbert.tasks.files import read_json, require_fields, write_json
from mmbert.tasks.metrics import box_iou, grounding_accuracy, xywh_to_xyxy
from mmbert.tasks.model import input_regions, probe_encoder
from mmbert.tasks.records import Example, LoadReport, TaskDataError, TaskDataset, View, encode_text

PAD_LOGIT = -10000.0


def read_refs(path: str | os.PathLike, trust_pickle: bool = False) -> list[dict]:
    """The refs list from a JSON export, or from the original pickle when ``trust_pickle``."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        data = read_json(path)
    else:
        if not trust_pickle:
            raise TaskDataError(
                f"{path}: refs files are Python pickles, and loading a pickle runs code from the file. "
                "Pass trust_pickle=True (--trust-pickle) if you trust this file, or use a JSON export of the refs"
            )
        with open(path, "rb") as f:
            data = pickle.load(f)  # noqa: S301 - explicit user opt-in above
    if not isinstance(data, list):
        raise TaskDataError(f"{path}: expected a list of refs, got {type(data).__name__}")
    return data


class RegionScoreHead(nn.Module):
    """Vision states -> one logit per input region (B, R); padded regions at -10000."""

    def __init__(self, vision_dim: int, region_offset: int = 0) -> None:
        super().__init__()
        self.score = nn.Linear(vision_dim, 1)
        self.region_offset = region_offset

    def forward(self, enc: Encoded, batch: Batch) -> Tensor:
        if enc.vision is None:
            raise ValueError("referring expressions need a model with a vision stream")
        states = input_regions(enc.vision, self.region_offset, batch.region_mask.shape[1])  # (B, R, Dv)
        logits = self.score(states).squeeze(-1)
        return logits.masked_fill(~batch.region_mask, PAD_LOGIT)


@dataclass
class RefExpOptions(TaskOptions):
    """Referring-expression settings (defaults: 20 tokens, up to 100 regions, IoU >= 0.5 is a hit)."""

    split: str = "train"
    max_text_len: int = 20
    max_regions: int | None = 100
    iou_threshold: float = 0.5


class RefExpTask(Task):
    name = "refexp"
    files = {
        "refs": "refs(unc).p / refs(umd).p (pickle: needs --trust-pickle) or a JSON export of the refs list",
        "instances": "COCO instances.json with the ground-truth boxes",
    }
    prediction_file = "refexp_predictions.json"
    main_metric = "accuracy"

    options_class = RefExpOptions
    options: RefExpOptions

    def load(self, files: Mapping[str, Any], tokenizer: Any, features: Any = None) -> TaskDataset:
        paths = self.require_files(files, "refs", "instances")
        refs = read_refs(paths["refs"], self.options.trust_pickle)
        inst = read_json(paths["instances"])
        if not isinstance(inst, dict) or "annotations" not in inst:
            raise TaskDataError(f"{paths['instances']}: not a COCO instances file (no 'annotations')")
        boxes = {}
        for i, a in enumerate(inst["annotations"]):
            where = f"{paths['instances']}: annotations[{i}]"
            require_fields(a, ("id", "bbox"), where)
            boxes[a["id"]] = xywh_to_xyxy(xywh_box(a["bbox"], where))
        split = self.options.split
        records = []
        for i, r in enumerate(refs):
            where = f"{paths['refs']}: refs[{i}]"
            require_fields(r, ("ref_id", "ann_id", "image_id", "split", "sentences"), where)
            if r["split"] != split:
                continue
            if r["ann_id"] not in boxes:
                raise TaskDataError(f"{where}: ann_id {r['ann_id']} is not in {paths['instances']}")
            for j, s in enumerate(r["sentences"]):
                text = s.get("sent", s.get("raw")) if isinstance(s, Mapping) else None
                if text is None:
                    raise TaskDataError(f"{where}.sentences[{j}]: missing field 'sent' (or 'raw')")
                text = text_field({"sent": text}, "sent", f"{where}.sentences[{j}]")
                records.append(
                    {
                        "ref_id": r["ref_id"],
                        "sent_id": s.get("sent_id", f"{r['ref_id']}-{j}"),
                        "sentence": text,
                        "image": str(r["image_id"]),
                        "gt": boxes[r["ann_id"]],
                    }
                )
        if not records:
            raise TaskDataError(f"{paths['refs']}: no referring expressions in split {split!r}")
        report = LoadReport()
        if features is None:
            raise TaskDataError("referring expressions need a feature store (the candidate regions)")
        store = open_features(features, self.options.trust_pickle)
        missing = check_images([r["image"] for r in records], store, report, "refexp")
        records = [r for r in records if r["image"] not in missing]
        max_len, max_regions = self.options.max_text_len, self.options.max_regions

        def build(r: dict) -> Example:
            ids, segs = encode_text(tokenizer, r["sentence"], max_length=max_len)
            regions = region_lookup(store, r["image"], max_regions)
            det = torch.tensor(regions.boxes, dtype=torch.float32)
            iou = box_iou(det, torch.tensor(r["gt"], dtype=torch.float32).expand_as(det))
            meta = {"ref_id": r["ref_id"], "sent_id": r["sent_id"], "boxes": det}
            return Example([View(ids, segs, regions)], iou, meta)

        return TaskDataset(records, build, report, {"labelled": True, "split": split})

    def build_head(self, encoder: EncoderModel) -> nn.Module:
        dims = probe_encoder(encoder)
        if dims.vision is None:
            raise ValueError(f"{type(encoder).__name__} has no vision stream: referring expressions need one")
        return RegionScoreHead(dims.vision, dims.region_offset)

    def loss(self, logits: Tensor, batch: Batch) -> LossOutput:
        real = batch.region_mask
        targets = batch.labels
        per_region = F.binary_cross_entropy_with_logits(logits.float(), targets, reduction="none")
        loss = (per_region * real).sum() / logits.shape[0]
        with torch.no_grad():
            chosen = targets.gather(1, logits.argmax(1, keepdim=True)).squeeze(1)
            acc = (chosen >= self.options.iou_threshold).float().mean()
        return LossOutput(loss, {"refexp_loss": float(loss.detach()), "refexp_acc": float(acc)})

    def predict(self, logits: Tensor, batch: Batch) -> list[dict]:
        out = []
        for b, (m, k) in enumerate(zip(batch.meta["items"], logits.argmax(1).tolist())):
            x1, y1, x2, y2 = m["boxes"][k].tolist()
            iou = float(batch.labels[b, k]) if batch.labels is not None else None
            out.append(
                {
                    "ref_id": m["ref_id"],
                    "sent_id": m["sent_id"],
                    "box": [x1, y1, x2 - x1, y2 - y1],
                    "iou": iou,
                }
            )
        return out

    def score(self, predictions: list[dict], dataset: TaskDataset) -> dict[str, Any]:
        t = self.options.iou_threshold
        return {
            "accuracy": grounding_accuracy([p["iou"] for p in predictions], t),
            "split": dataset.info["split"],
            "iou_threshold": t,
            "num_expressions": len(predictions),
        }

    def write_predictions(self, predictions: list[dict], path: str | os.PathLike) -> Path:
        return write_json(predictions, path)
