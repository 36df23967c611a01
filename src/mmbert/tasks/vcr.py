"""VCR: Visual Commonsense Reasoning, Q->A and QA->R multiple choice, and the joint Q->AR.

Reads the official JSONL (``annot_id``, ``objects`` (class names), ``img_id`` / ``img_fn``,
``question``, ``answer_choices`` (4), ``rationale_choices`` (4), ``answer_label``,
``rationale_label``). Texts are token lists in which a list of integers refers to detected objects
(``["Is", [0, 1], "happy", "?"]``); a reference is rendered as the objects' class names joined by
"and" (VL-BERT renders class names too; it additionally ties the tokens to the regions, which we do
not). Each example is 4 views: (question, answer_k) for ``mode="q2a"``; (question + correct answer,
rationale_k) for ``mode="qa2r"``. Head: ``Linear(P, 1)`` per choice, softmax over the 4 choices
(VOLTA's VL-logit), cross-entropy.

Predictions: a JSON list of ``{"annot_id", "probs": [4], "choice"}``. ``vcr_joint`` combines a Q->A
and a QA->R predictions file into Q->A, QA->R and Q->AR accuracy; ``write_leaderboard_csv`` writes
the leaderboard CSV (``annot_id, answer_0..3, rationale_conditioned_on_a{i}_{j}``) from Q->A
probabilities and QA->R probabilities scored with each of the 4 answers (``condition_on="all"``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmbert.atomic import atomic_write_csv
from mmbert.data.batch import Batch
from mmbert.models.base import Encoded, EncoderModel
from mmbert.objectives.base import LossOutput
from mmbert.tasks.base import Task, TaskOptions
from mmbert.tasks.features import check_images, open_features, region_lookup
from mmbert.tasks.fields import token_list
from mmbert.tasks.files import read_json, read_jsonl, require_fields, write_json
from mmbert.tasks.metrics import vcr_scores
from mmbert.tasks.model import probe_encoder
from mmbert.tasks.records import Example, LoadReport, TaskDataError, TaskDataset, View, encode_text

NUM_CHOICES = 4


def render(tokens: Sequence[Any], objects: Sequence[str], where: str) -> str:
    """A VCR token list -> text; object references become the objects' class names."""
    words = []
    for tok in tokens:
        if isinstance(tok, list):
            bad = [i for i in tok if not isinstance(i, int) or not 0 <= i < len(objects)]
            if bad:
                raise TaskDataError(f"{where}: object reference {bad} outside the {len(objects)} objects")
            words.append(" and ".join(objects[i] for i in tok))
        else:
            words.append(str(tok))
    return " ".join(words)


class ChoiceHead(nn.Module):
    """Pooled (B*C, P) of the C choice views -> logits (B, C)."""

    def __init__(self, pooled_dim: int, num_choices: int = NUM_CHOICES) -> None:
        super().__init__()
        self.score = nn.Linear(pooled_dim, 1)
        self.num_choices = num_choices

    def forward(self, enc: Encoded, batch: Batch) -> Tensor:
        return self.score(enc.pooled).view(-1, self.num_choices)


@dataclass
class VCROptions(TaskOptions):
    """VCR settings: Q->A or QA->R, and which answer QA->R is conditioned on."""

    mode: str = "q2a"  # "q2a" or "qa2r"
    condition_on: str = "gold"  # QA->R: the correct answer ("gold") or each answer ("all", leaderboard)
    image_key: str = "img_id"
    max_text_len: int = 64
    max_regions: int | None = 100

    def __post_init__(self) -> None:
        if self.mode not in ("q2a", "qa2r"):
            raise ValueError(f"VCR mode must be 'q2a' or 'qa2r', got {self.mode!r}")
        if self.condition_on not in ("gold", "all"):
            raise ValueError(
                f"condition_on must be 'gold' (the correct answer) or 'all' (each answer), got {self.condition_on!r}"
            )


class VCRTask(Task):
    name = "vcr"
    files = {"data": "official VCR JSONL (train.jsonl / val.jsonl / test.jsonl)"}
    prediction_file = "vcr_predictions.json"
    main_metric = "accuracy"

    options_class = VCROptions
    options: VCROptions

    def load(self, files: Mapping[str, Any], tokenizer: Any, features: Any = None) -> TaskDataset:
        path = self.require_files(files, "data")["data"]
        mode, key = self.options.mode, self.options.image_key
        all_answers = mode == "qa2r" and self.options.condition_on == "all"
        records = []
        for line, d in read_jsonl(path):
            where = f"{path}:{line}"
            require_fields(d, ("annot_id", "objects", "question", "answer_choices", key), where)
            if mode == "qa2r":
                require_fields(d, ("rationale_choices",), where)
            if mode == "qa2r" and not all_answers:
                require_fields(d, ("answer_label",), where)
            objects = d["objects"]
            question = render(token_list(d["question"], "question", where), objects, f"{where} question")
            answers = [
                render(token_list(a, f"answer_choices[{k}]", where), objects, f"{where} answer_choices[{k}]")
                for k, a in enumerate(d["answer_choices"])
            ]
            choices = answers
            label_field = "answer_label"
            if mode == "qa2r":
                choices = [
                    render(r, objects, f"{where} rationale_choices[{k}]")
                    for k, r in enumerate(d["rationale_choices"])
                ]
                label_field = "rationale_label"
            if len(choices) != NUM_CHOICES or len(answers) != NUM_CHOICES:
                raise TaskDataError(f"{where}: expected {NUM_CHOICES} answer and rationale choices")
            label = d.get(label_field)
            if label is not None and label not in range(NUM_CHOICES):
                raise TaskDataError(f"{where}: {label_field} {label!r} is not 0..{NUM_CHOICES - 1}")
            contexts = [question]
            if mode == "qa2r":
                contexts = (
                    [f"{question} {a}" for a in answers]
                    if all_answers
                    else [f"{question} {answers[d['answer_label']]}"]
                )
            image = Path(str(d[key])).stem if key == "img_fn" else str(d[key])
            for c, context in enumerate(contexts):
                records.append(
                    {
                        "annot_id": d["annot_id"],
                        "context": context,
                        "choices": choices,
                        "label": label,
                        "image": image,
                        "conditioned_on": c if all_answers else None,
                    }
                )
        labelled = [r["label"] is not None for r in records]
        if any(labelled) and not all(labelled):
            raise TaskDataError(f"{path}: some examples lack a label while others have one")
        report = LoadReport()
        store = open_features(features, self.options.trust_pickle) if features is not None else None
        missing = check_images([r["image"] for r in records], store, report, "vcr")
        records = [r for r in records if r["image"] not in missing]
        max_len, max_regions = self.options.max_text_len, self.options.max_regions

        def build(r: dict) -> Example:
            regions = region_lookup(store, r["image"], max_regions) if store is not None else None
            views = [
                View(*encode_text(tokenizer, r["context"], c, max_length=max_len), regions)
                for c in r["choices"]
            ]
            target = None if r["label"] is None else torch.tensor(r["label"])
            return Example(views, target, {"annot_id": r["annot_id"], "conditioned_on": r["conditioned_on"]})

        return TaskDataset(
            records,
            build,
            report,
            {
                "labelled": all(labelled) and bool(records) and not all_answers,
                "labels": {r["annot_id"]: r["label"] for r in records},
            },
        )

    def build_head(self, encoder: EncoderModel) -> nn.Module:
        return ChoiceHead(probe_encoder(encoder).pooled)

    def loss(self, logits: Tensor, batch: Batch) -> LossOutput:
        loss = F.cross_entropy(logits.float(), batch.labels)
        with torch.no_grad():
            acc = (logits.argmax(1) == batch.labels).float().mean()
        m = self.options.mode
        return LossOutput(loss, {f"vcr_{m}_loss": float(loss.detach()), f"vcr_{m}_acc": float(acc)})

    def predict(self, logits: Tensor, batch: Batch) -> list[dict]:
        probs = logits.float().softmax(1)
        out = []
        for m, p in zip(batch.meta["items"], probs.tolist()):
            rec = {"annot_id": m["annot_id"], "probs": p, "choice": max(range(len(p)), key=p.__getitem__)}
            if m["conditioned_on"] is not None:
                rec["conditioned_on"] = m["conditioned_on"]
            out.append(rec)
        return out

    def score(self, predictions: list[dict], dataset: TaskDataset) -> dict[str, Any]:
        labels = dataset.info["labels"]
        correct = [p["choice"] == labels[p["annot_id"]] for p in predictions]
        return {
            "accuracy": 100.0 * sum(correct) / max(len(correct), 1),
            "mode": self.options.mode,
            "num_examples": len(correct),
        }

    def write_predictions(self, predictions: list[dict], path: str | os.PathLike) -> Path:
        return write_json(predictions, path)


def read_predictions(path: str | os.PathLike) -> list[dict]:
    data = read_json(Path(path))
    if not isinstance(data, list):
        raise TaskDataError(f"{path}: VCR predictions are a JSON list of {{annot_id, probs, choice}}")
    for i, p in enumerate(data):
        require_fields(p, ("annot_id", "probs", "choice"), f"{path}[{i}]")
    return data


def vcr_joint(q2a: Sequence[dict], qa2r: Sequence[dict], data: str | os.PathLike) -> dict[str, Any]:
    """Q->A, QA->R (rationale given the correct answer) and Q->AR from the two prediction lists and the
    labelled JSONL. Every labelled question needs both predictions."""
    labels = {}
    for line, d in read_jsonl(Path(data)):
        require_fields(d, ("annot_id", "answer_label", "rationale_label"), f"{data}:{line}")
        labels[d["annot_id"]] = (d["answer_label"], d["rationale_label"])
    a = {p["annot_id"]: p["choice"] for p in q2a}
    r = {p["annot_id"]: p["choice"] for p in qa2r if p.get("conditioned_on") is None}
    missing = [i for i in labels if i not in a or i not in r]
    if missing:
        raise ValueError(f"{len(missing)} questions lack a Q->A or QA->R prediction, e.g. {missing[:5]}")
    ids = list(labels)
    return vcr_scores(
        [a[i] for i in ids], [labels[i][0] for i in ids], [r[i] for i in ids], [labels[i][1] for i in ids]
    )


def write_leaderboard_csv(q2a: Sequence[dict], qa2r_all: Sequence[dict], path: str | os.PathLike) -> Path:
    """The VCR leaderboard CSV: per question the 4 answer probabilities and, for each answer i, the 4
    rationale probabilities conditioned on it (``qa2r_all`` from ``condition_on="all"``)."""
    rationale: dict[Any, dict[int, list[float]]] = {}
    for p in qa2r_all:
        if p.get("conditioned_on") is None:
            raise ValueError(
                "the leaderboard needs QA->R predictions conditioned on every answer (condition_on='all')"
            )
        rationale.setdefault(p["annot_id"], {})[p["conditioned_on"]] = p["probs"]
    header = [
        "annot_id",
        *[f"answer_{i}" for i in range(NUM_CHOICES)],
        *[f"rationale_conditioned_on_a{i}_{j}" for i in range(NUM_CHOICES) for j in range(NUM_CHOICES)],
    ]
    rows = [header]
    for p in q2a:
        cond = rationale.get(p["annot_id"], {})
        if sorted(cond) != list(range(NUM_CHOICES)):
            raise ValueError(
                f"{p['annot_id']}: rationale probabilities missing for answers "
                f"{sorted(set(range(NUM_CHOICES)) - set(cond))}"
            )
        rows.append([p["annot_id"], *p["probs"], *[x for i in range(NUM_CHOICES) for x in cond[i]]])
    path = Path(path)
    atomic_write_csv(path, rows)
    return path
