"""GQA: compositional question answering over scene graphs, in LXMERT's format and with its evaluation.

Reads LXMERT's re-distributed JSON (``data/gqa/{train,valid,testdev}.json``: a list of ``{"question_id",
"img_id", "sent", "label": {answer: score}}``; ``label`` absent on the submission split) — airsplay/lxmert
``src/tasks/gqa_data.py``. The answer vocabulary comes from a file (a JSON list, or LXMERT's
``trainval_ans2label.json``) or from the training labels by frequency (``min_answer_count``). Splits are
files (train, testdev-balanced); ``split`` only names them.

Head: ``MLPClassifier(P, 2P, A)`` over the pooled output (LXMERT's logit_fc). Loss: BCE with the label
scores, x A (LXMERT's ``gqa.py``). Accuracy: the label score of the predicted answer, i.e. exact match on
GQA's single answer (LXMERT's ``GQAEvaluator``), overall and split into binary (yes/no answers) and open
questions, as the official ``eval.py`` reports them (its consistency / validity / plausibility need the
official scene-graph files and are not computed). Submission: ``[{"questionId": str, "prediction": str}]``.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mmbert.data.batch import Batch
from mmbert.tasks.base import TaskOptions
from mmbert.tasks.features import check_images, open_features, region_lookup
from mmbert.tasks.files import read_json, require_fields, write_json
from mmbert.tasks.records import Example, LoadReport, TaskDataError, TaskDataset, View, encode_text
from mmbert.tasks.vqa import AnswerTask, read_answer_vocab

BINARY_ANSWERS = ("yes", "no")


def read_lxmert_gqa(path: str | os.PathLike) -> list[dict]:
    """LXMERT's GQA JSON -> records {question_id (str), image, question, label or None}; clear errors."""
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, list):
        raise TaskDataError(
            f"{path}: LXMERT's GQA data is a JSON list of {{question_id, img_id, sent, label}}"
        )
    records, labelled = [], 0
    seen: set[str] = set()
    for i, d in enumerate(data):
        where = f"{path}[{i}]"
        require_fields(d, ("question_id", "img_id", "sent"), where)
        qid = str(d["question_id"])
        if qid in seen:
            raise TaskDataError(f"{where}: question_id {qid!r} appears twice")
        seen.add(qid)
        label = d.get("label")
        if label is not None:
            if not isinstance(label, Mapping) or not all(isinstance(v, (int, float)) for v in label.values()):
                raise TaskDataError(
                    f"{where}: 'label' must be an {{answer: score}} object, got {label!r:.80}"
                )
            labelled += 1
        records.append({"question_id": qid, "image": str(d["img_id"]), "question": str(d["sent"]),
                        "label": None if label is None else {str(k): float(v) for k, v in label.items()}})  # fmt: skip
    if labelled and labelled != len(records):
        raise TaskDataError(
            f"{path}: {len(records) - labelled} questions lack a 'label' while others have one"
        )
    return records


def build_gqa_vocab(records: list[dict], min_count: int) -> list[str]:
    """Answers labelled at least ``min_count`` times in the training split, most frequent first (ties
    alphabetical)."""
    counts = Counter(a for r in records for a in (r["label"] or {}))
    return [a for a, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if c >= min_count]


def gqa_accuracy(predictions: Mapping[str, str], labels: Mapping[str, Mapping[str, float]]) -> dict[str, Any]:
    """Percent accuracy (the label score of each prediction), overall, binary and open. Every labelled
    question needs a prediction; predictions for unknown questions are an error."""
    unknown = [q for q in predictions if q not in labels]
    if unknown:
        raise TaskDataError(f"{len(unknown)} predictions for questions not in the data, e.g. {unknown[:5]}")
    missing = [q for q in labels if q not in predictions]
    if missing:
        raise TaskDataError(
            f"{len(missing)} of {len(labels)} questions have no prediction, e.g. {missing[:5]}"
        )
    groups: dict[str, list[float]] = {"binary": [], "open": []}
    for q, label in labels.items():
        score = float(label.get(predictions[q], 0.0))
        gold = max(label, key=label.get) if label else ""
        groups["binary" if gold in BINARY_ANSWERS else "open"].append(score)
    every = groups["binary"] + groups["open"]

    def pct(xs: list[float]) -> float:
        return round(100.0 * sum(xs) / len(xs), 2) if xs else 0.0

    return {"accuracy": pct(every), "binary": pct(groups["binary"]), "open": pct(groups["open"]),
            "num_questions": len(every), "num_binary": len(groups["binary"])}  # fmt: skip


@dataclass
class GQAOptions(TaskOptions):
    """GQA settings (LXMERT's: 20 tokens, 36 regions, every answer of the training split)."""

    answer_list: list[str] | None = None  # the answer vocabulary; None = built from the training split
    split: str = "train"
    max_text_len: int = 20
    min_answer_count: int = 1
    dropout: float = 0.1


class GQATask(AnswerTask):
    name = "gqa"
    files = {
        "lxmert": "LXMERT's GQA JSON (train.json, valid.json, testdev.json, submit.json)",
        "answers": "answer vocabulary: JSON list, or {answer: label} (trainval_ans2label.json)",
    }
    prediction_file = "gqa_submission.json"
    main_metric = "accuracy"

    options_class = GQAOptions
    options: GQAOptions
    score_metric = "acc"

    def load(self, files: Mapping[str, Any], tokenizer: Any, features: Any = None) -> TaskDataset:
        path = self.require_files(files, "lxmert")["lxmert"]
        records = read_lxmert_gqa(path)
        labelled = bool(records) and records[0]["label"] is not None
        if "answers" in files:
            self.options.answer_list = read_answer_vocab(self.require_files(files, "answers")["answers"])
        elif not self.options.answer_list:
            if not labelled:
                raise TaskDataError(
                    f"{path}: no labels to build the answer vocabulary from; give an 'answers' file"
                )
            vocab = build_gqa_vocab(records, self.options.min_answer_count)
            if not vocab:
                raise TaskDataError(f"{path}: no answer occurs {self.options.min_answer_count} times")
            self.options.answer_list = vocab
        index = {a: i for i, a in enumerate(self.answers)}
        report = LoadReport()
        store = open_features(features, self.options.trust_pickle) if features is not None else None
        missing = check_images([r["image"] for r in records], store, report, "gqa")
        records = [r for r in records if r["image"] not in missing]
        for r in records:
            outside = [a for a in (r["label"] or {}) if a not in index]
            if outside and len(outside) == len(r["label"]):
                report.add(
                    "questions whose answer is outside the vocabulary (all-zero target)", r["question_id"]
                )
        max_len, max_regions, num_answers = (
            self.options.max_text_len,
            self.options.max_regions,
            len(index),
        )

        def build(r: dict) -> Example:
            ids, segs = encode_text(tokenizer, r["question"], max_length=max_len)
            regions = region_lookup(store, r["image"], max_regions) if store is not None else None
            target = None
            if r["label"] is not None:
                target = torch.zeros(num_answers)
                for a, s in r["label"].items():
                    if a in index:
                        target[index[a]] = s
            return Example([View(ids, segs, regions)], target, {"question_id": r["question_id"]})

        labels = {r["question_id"]: r["label"] for r in records} if labelled else None
        return TaskDataset(records, build, report, {"labelled": labelled, "labels": labels,
                                                    "split": self.options.split})  # fmt: skip

    def predict(self, logits: Tensor, batch: Batch) -> list[dict]:
        return [{"questionId": m["question_id"], "prediction": self.answers[i]}
                for m, i in zip(batch.meta["items"], logits.argmax(1).tolist())]  # fmt: skip

    def score(self, predictions: list[dict], dataset: TaskDataset) -> dict[str, Any]:
        out = gqa_accuracy({p["questionId"]: p["prediction"] for p in predictions}, dataset.info["labels"])
        out["split"] = dataset.info["split"]
        return out

    def write_predictions(self, predictions: list[dict], path: str | os.PathLike) -> Path:
        return write_json([{"questionId": str(p["questionId"]), "prediction": str(p["prediction"])}
                           for p in predictions], path)  # fmt: skip


def read_submission(path: str | os.PathLike) -> dict[str, str]:
    """A GQA submission ``[{"questionId": str, "prediction": str}]`` -> {question id: answer}."""
    data = read_json(Path(path))
    if not isinstance(data, list):
        raise TaskDataError(f"{path}: a GQA submission is a JSON list of {{questionId, prediction}}")
    out: dict[str, str] = {}
    for i, r in enumerate(data):
        require_fields(r, ("questionId", "prediction"), f"{path}[{i}]")
        if not isinstance(r["questionId"], str):
            raise TaskDataError(f"{path}[{i}]: questionId must be a string (the server requires it), "
                                f"got {r['questionId']!r}")  # fmt: skip
        if r["questionId"] in out:
            raise TaskDataError(f"{path}[{i}]: questionId {r['questionId']!r} predicted twice")
        out[r["questionId"]] = str(r["prediction"])
    return out


def score_submission(
    predictions: str | os.PathLike, data: str | os.PathLike, allow_missing: bool = False
) -> dict:
    """``mmbert score --task gqa``: a submission against LXMERT's labelled JSON."""
    labels = {r["question_id"]: r["label"] for r in read_lxmert_gqa(data)}
    if any(v is None for v in labels.values()):
        raise TaskDataError(f"{data}: has no labels to score against")
    preds = read_submission(predictions)
    if allow_missing:
        labels = {q: v for q, v in labels.items() if q in preds}
    return gqa_accuracy(preds, labels)
