"""NLVR2: is a sentence true of a pair of images? Accuracy and consistency, as the official script.

Reads the official JSONL (``identifier`` "split-set-pair-sentence", ``sentence``, ``label`` "True" /
"False"). The two images are derived from the identifier as LXMERT and VOLTA do: stem = identifier
minus its last "-k"; images ``stem-img0`` and ``stem-img1``. Each example is two views (sentence,
image); the head concatenates both pooled outputs: ``MLPClassifier(2P, 2P, 2)`` (VOLTA's
VL-binary-classifier), cross-entropy. Predictions: the official CSV, one ``identifier,True|False`` line
per example (what ``nlvr2/eval/metrics.py`` reads).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmbert.atomic import atomic_write_csv
from mmbert.data.batch import Batch
from mmbert.models.base import Encoded, EncoderModel
from mmbert.nn.heads import MLPClassifier
from mmbert.objectives.base import LossOutput
from mmbert.tasks.base import Task, TaskOptions
from mmbert.tasks.features import check_images, open_features, region_lookup
from mmbert.tasks.files import read_jsonl, require_fields
from mmbert.tasks.metrics import nlvr2_scores, nlvr2_sentence_key
from mmbert.tasks.model import probe_encoder
from mmbert.tasks.records import Example, LoadReport, TaskDataError, TaskDataset, View, encode_text

LABELS = {"true": 1, "false": 0}


def image_ids(identifier: str) -> tuple[str, str]:
    """ "dev-850-0-0" -> ("dev-850-0-img0", "dev-850-0-img1"). Malformed identifiers are an error."""
    nlvr2_sentence_key(identifier)  # validates the four-part form
    stem = identifier.rsplit("-", 1)[0]
    return f"{stem}-img0", f"{stem}-img1"


def parse_label(value: Any, where: str) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, str) and value.lower() in LABELS:
        return LABELS[value.lower()]
    raise TaskDataError(f"{where}: label must be 'True' or 'False', got {value!r}")


class NLVR2Head(nn.Module):
    """Pooled (2B, P) of the (sentence, left) and (sentence, right) views -> logits (B, 2); 1 = True."""

    def __init__(self, pooled_dim: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.classifier = MLPClassifier(2 * pooled_dim, 2 * pooled_dim, 2, dropout=dropout)

    def forward(self, enc: Encoded, batch: Batch) -> Tensor:
        pooled = enc.pooled.reshape(-1, 2 * enc.pooled.shape[-1])  # rows 2b, 2b+1 -> row b
        return self.classifier(pooled)


@dataclass
class NLVR2Options(TaskOptions):
    """NLVR2 settings."""

    dropout: float = 0.1


class NLVR2Task(Task):
    name = "nlvr2"
    files = {"data": "official NLVR2 JSONL (train.json / dev.json / test1.json)"}
    prediction_file = "predictions.csv"
    main_metric = "accuracy"

    options_class = NLVR2Options
    options: NLVR2Options

    def load(self, files: Mapping[str, Any], tokenizer: Any, features: Any = None) -> TaskDataset:
        path = self.require_files(files, "data")["data"]
        report = LoadReport()
        records = []
        for line, d in read_jsonl(path):
            where = f"{path}:{line}"
            require_fields(d, ("identifier", "sentence"), where)
            try:
                left, right = image_ids(d["identifier"])
            except ValueError as e:
                raise TaskDataError(f"{where}: {e}") from None
            label = parse_label(d["label"], where) if "label" in d else None
            records.append(
                {
                    "identifier": d["identifier"],
                    "sentence": d["sentence"],
                    "label": label,
                    "images": (left, right),
                }
            )
        labelled = [r["label"] is not None for r in records]
        if any(labelled) and not all(labelled):
            raise TaskDataError(
                f"{path}: {labelled.count(False)} examples lack a 'label' while others have one"
            )
        store = open_features(features, self.options.trust_pickle) if features is not None else None
        missing = check_images([i for r in records for i in r["images"]], store, report, "nlvr2")
        records = [r for r in records if not (set(r["images"]) & missing)]
        max_len, max_regions = self.options.max_text_len, self.options.max_regions

        def build(r: dict) -> Example:
            ids, segs = encode_text(tokenizer, r["sentence"], max_length=max_len)
            views = [
                View(ids, segs, region_lookup(store, i, max_regions) if store is not None else None)
                for i in r["images"]
            ]
            target = None if r["label"] is None else torch.tensor(r["label"])
            return Example(views, target, {"identifier": r["identifier"]})

        labels = {r["identifier"]: bool(r["label"]) for r in records if r["label"] is not None}
        return TaskDataset(
            records, build, report, {"labelled": all(labelled) and bool(records), "labels": labels}
        )

    def build_head(self, encoder: EncoderModel) -> nn.Module:
        return NLVR2Head(probe_encoder(encoder).pooled, self.options.dropout)

    def loss(self, logits: Tensor, batch: Batch) -> LossOutput:
        loss = F.cross_entropy(logits.float(), batch.labels)
        with torch.no_grad():
            acc = (logits.argmax(1) == batch.labels).float().mean()
        return LossOutput(loss, {"nlvr2_loss": float(loss.detach()), "nlvr2_acc": float(acc)})

    def predict(self, logits: Tensor, batch: Batch) -> list[dict]:
        return [
            {"identifier": m["identifier"], "prediction": bool(p)}
            for m, p in zip(batch.meta["items"], logits.argmax(1).tolist())
        ]

    def score(self, predictions: list[dict], dataset: TaskDataset) -> dict[str, Any]:
        return nlvr2_scores({p["identifier"]: p["prediction"] for p in predictions}, dataset.info["labels"])

    def write_predictions(self, predictions: list[dict], path: str | os.PathLike) -> Path:
        rows = [[p["identifier"], "True" if p["prediction"] else "False"] for p in predictions]
        return atomic_write_csv(path, rows)


def read_predictions(path: str | os.PathLike) -> dict[str, bool]:
    """The official predictions CSV -> {identifier: bool}; clear errors for malformed lines."""
    out = {}
    with open(path, encoding="utf-8") as f:
        for n, row in enumerate(csv.reader(f), 1):
            if not row:
                continue
            if len(row) != 2:
                raise TaskDataError(f"{path}:{n}: expected 'identifier,True|False', got {row}")
            out[row[0]] = bool(parse_label(row[1], f"{path}:{n}"))
    return out
