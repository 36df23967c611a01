"""VQA v2: answer a question about an image, scored with the official VQA accuracy.

Reads the official files (questions JSON ``{"questions": [{image_id, question, question_id}]}`` and
annotations JSON ``{"annotations": [{question_id, image_id, answers: 10 x {answer}, answer_type,
question_type, multiple_choice_answer}]}``) or LXMERT's re-distributed JSON (a list of ``{img_id, sent,
question_id, label: {answer: score}}``). The answer vocabulary is read from a file (a list of answers,
or LXMERT's ``trainval_ans2label.json``) or built from the training annotations by frequency.

Head: ``MLPClassifier(P, 2P, A)`` over the pooled output (VOLTA's VL-classifier). Loss: BCE with the
soft scores, mean x A (VOLTA). Targets: the official leave-one-out score of each normalised human
answer. Predictions: ``[{"question_id", "answer"}]``, the official results format.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmbert.data.batch import Batch
from mmbert.models.base import Encoded, EncoderModel
from mmbert.nn.heads import MLPClassifier
from mmbert.objectives.base import LossOutput
from mmbert.tasks.base import Task, TaskOptions
from mmbert.tasks.features import check_images, open_features, region_lookup
from mmbert.tasks.fields import refuse_duplicates, text_field
from mmbert.tasks.files import read_json, require_fields, write_json
from mmbert.tasks.metrics import normalize_answer, vqa_evaluate, vqa_soft_scores
from mmbert.tasks.model import probe_encoder
from mmbert.tasks.records import Example, LoadReport, TaskDataError, TaskDataset, View, encode_text


def read_answer_vocab(path: str | os.PathLike) -> list[str]:
    """A JSON list of answers (label i = list[i]) or an ``{answer: label}`` dict (LXMERT's
    ``trainval_ans2label.json``). Labels must be 0..A-1 without gaps or repeats."""
    data = read_json(Path(path))
    if isinstance(data, list):
        wrong = [(i, a) for i, a in enumerate(data) if not isinstance(a, str)]
        if wrong:
            raise TaskDataError(f"{path}: answers must be strings; entry {wrong[0][0]} is "
                                f"{type(wrong[0][1]).__name__} {wrong[0][1]!r:.60}")  # fmt: skip
        answers = list(data)
    elif isinstance(data, dict):
        wrong = [(a, v) for a, v in data.items() if isinstance(v, bool) or not isinstance(v, int)]
        if wrong:
            raise TaskDataError(f"{path}: labels must be integers; answer {wrong[0][0]!r} has {wrong[0][1]!r:.60}")
        labels = sorted(data.values())
        if labels != list(range(len(labels))):
            raise TaskDataError(f"{path}: answer labels must be 0..{len(labels) - 1} without gaps or repeats")
        answers = [a for a, _ in sorted(data.items(), key=lambda kv: kv[1])]
    else:
        raise TaskDataError(f"{path}: expected a list of answers or an {{answer: label}} object")
    if not answers:
        raise TaskDataError(f"{path}: the answer vocabulary is empty")
    if len(set(answers)) != len(answers):
        raise TaskDataError(f"{path}: the answer vocabulary repeats answers")
    return answers


def build_answer_vocab(annotations: list[Mapping], min_count: int) -> list[str]:
    """Answers (normalised ``multiple_choice_answer``) that occur at least ``min_count`` times, most
    frequent first, ties alphabetical (deterministic)."""
    counts = Counter(normalize_answer(a["multiple_choice_answer"]) for a in annotations)
    return [a for a, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if c >= min_count]


class VQAHead(nn.Module):
    """Pooled output -> answer logits (B, A)."""

    def __init__(self, pooled_dim: int, num_answers: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.classifier = MLPClassifier(pooled_dim, 2 * pooled_dim, num_answers, dropout=dropout)

    def forward(self, enc: Encoded, batch: Batch) -> Tensor:
        return self.classifier(enc.pooled)


@dataclass
class VQAOptions(TaskOptions):
    """VQA settings (defaults: LXMERT's 23 tokens, 36 regions; answers seen at least 9 times)."""

    answer_list: list[str] | None = None  # the answer vocabulary; None = built from the training split
    max_text_len: int = 23
    min_answer_count: int = 9  # an answer enters the vocabulary when this many annotations give it
    image_id_format: str = "{image_id}"  # how an image id of the annotations names a store entry
    dropout: float = 0.1


class AnswerTask(Task):
    """A task whose head classifies over an answer vocabulary (``options.answer_list``): VQA, GQA. The
    head is ``VQAHead``; the loss is the soft-score binary cross-entropy (times the number of answers, as
    LXMERT and VOLTA scale it), logged as ``<name>_loss`` and ``<name>_<score_metric>``."""

    score_metric: ClassVar[str] = "score"

    @property
    def answers(self) -> list[str]:
        if not self.options.answer_list:  # type: ignore[attr-defined]
            raise ValueError(
                f"the {self.name.upper()} answer vocabulary is not set: load a training split or give an "
                "answers file"
            )
        return self.options.answer_list  # type: ignore[attr-defined]

    def build_head(self, encoder: EncoderModel) -> nn.Module:
        return VQAHead(probe_encoder(encoder).pooled, len(self.answers), self.options.dropout)  # type: ignore[attr-defined]

    def loss(self, logits: Tensor, batch: Batch) -> LossOutput:
        targets = batch.labels
        loss = F.binary_cross_entropy_with_logits(logits.float(), targets) * targets.shape[1]
        with torch.no_grad():
            score = targets.gather(1, logits.argmax(1, keepdim=True)).mean()
        metrics = {f"{self.name}_loss": float(loss.detach()), f"{self.name}_{self.score_metric}": float(score)}
        return LossOutput(loss, metrics)


class VQATask(AnswerTask):
    name = "vqa"
    files = {
        "questions": "official questions JSON (v2_OpenEnded_mscoco_*_questions.json)",
        "annotations": "official annotations JSON (v2_mscoco_*_annotations.json); omit on test splits",
        "lxmert": "LXMERT's re-distributed JSON (instead of questions + annotations)",
        "answers": "answer vocabulary: JSON list, or {answer: label} (trainval_ans2label.json)",
    }
    prediction_file = "vqa_results.json"
    main_metric = "overall"

    options_class = VQAOptions
    options: VQAOptions

    # data -------------------------------------------------------------------------------------------
    def load(self, files: Mapping[str, Any], tokenizer: Any, features: Any = None) -> TaskDataset:
        report = LoadReport()
        if "lxmert" in files:
            records, annotations = self._read_lxmert(self.require_files(files, "lxmert")["lxmert"])
        else:
            paths = self.require_files(files, "questions")
            records = self._read_questions(paths["questions"])
            annotations = None
            if "annotations" in files:
                annotations = self._read_annotations(
                    self.require_files(files, "annotations")["annotations"], records
                )
        if "answers" in files:
            self.options.answer_list = read_answer_vocab(self.require_files(files, "answers")["answers"])
        elif not self.options.answer_list:
            if annotations is None or any("human_answers" not in a for a in annotations.values()):
                raise TaskDataError(
                    "no answer vocabulary: give an 'answers' file, or official training annotations "
                    "to build one by frequency"
                )
            vocab = build_answer_vocab(list(annotations.values()), self.options.min_answer_count)
            if not vocab:
                n = self.options.min_answer_count
                raise TaskDataError(f"no answer occurs {n} times: lower min_answer_count")
            self.options.answer_list = vocab
        index = {a: i for i, a in enumerate(self.answers)}
        store = open_features(features, self.options.trust_pickle) if features is not None else None
        missing = check_images([r["image"] for r in records], store, report, "vqa")
        records = [r for r in records if r["image"] not in missing]
        for r in records:
            if annotations is None:
                continue
            scores = annotations[r["question_id"]]["scores"]
            outside = [a for a in scores if a not in index]
            for a in outside:
                report.add("human answers outside the answer vocabulary", a)
            if scores and len(outside) == len(scores):
                report.add(
                    "questions with no answer in the vocabulary (all-zero target)", str(r["question_id"])
                )
        max_len, max_regions = self.options.max_text_len, self.options.max_regions
        num_answers = len(self.answers)

        def build(r: dict) -> Example:
            ids, segs = encode_text(tokenizer, r["question"], max_length=max_len)
            regions = region_lookup(store, r["image"], max_regions) if store is not None else None
            target = None
            if annotations is not None:
                target = torch.zeros(num_answers)
                for a, s in annotations[r["question_id"]]["scores"].items():
                    if a in index:
                        target[index[a]] = s
            return Example([View(ids, segs, regions)], target, {"question_id": r["question_id"]})

        info = {"labelled": annotations is not None, "annotations": annotations}
        return TaskDataset(records, build, report, info)

    def _image_key(self, image_id: Any) -> str:
        return self.options.image_id_format.format(image_id=image_id)

    def _read_questions(self, path: Path) -> list[dict]:
        data = read_json(path)
        if not isinstance(data, dict) or "questions" not in data:
            raise TaskDataError(f"{path}: not a VQA questions file (no top-level 'questions' list)")
        out = []
        for i, q in enumerate(data["questions"]):
            require_fields(q, ("question_id", "image_id", "question"), f"{path}: questions[{i}]")
            out.append(
                {
                    "question_id": q["question_id"],
                    "image": self._image_key(q["image_id"]),
                    "question": text_field(q, "question", f"{path}: questions[{i}]"),
                }
            )
        refuse_duplicates(((q["question_id"], f"{path}: questions[{i}]") for i, q in enumerate(out)), "question_id")
        return out

    def _read_annotations(self, path: Path, records: list[dict]) -> dict:
        data = read_json(path)
        if not isinstance(data, dict) or "annotations" not in data:
            raise TaskDataError(f"{path}: not a VQA annotations file (no top-level 'annotations' list)")
        anns: dict = {}
        places: dict = {}
        for i, a in enumerate(data["annotations"]):
            where = f"{path}: annotations[{i}]"
            require_fields(a, ("question_id", "answers", "multiple_choice_answer"), where)
            if a["question_id"] in places:
                refuse_duplicates([(a["question_id"], places[a["question_id"]]), (a["question_id"], where)],
                                  "question_id")  # fmt: skip
            places[a["question_id"]] = where
            if not isinstance(a["answers"], list) or not a["answers"]:
                raise TaskDataError(f"{where}: 'answers' must be a non-empty list")
            for j, h in enumerate(a["answers"]):
                require_fields(h, ("answer",), f"{where}.answers[{j}]")
                text_field(h, "answer", f"{where}.answers[{j}]")
            text_field(a, "multiple_choice_answer", where)
            human = [h["answer"] for h in a["answers"]]
            anns[a["question_id"]] = {
                "answers": a["answers"],
                "human_answers": human,
                "scores": vqa_soft_scores(human),
                "multiple_choice_answer": a["multiple_choice_answer"],
                "answer_type": a.get("answer_type", "unknown"),
                "question_type": a.get("question_type", "unknown"),
            }
        unannotated = [r["question_id"] for r in records if r["question_id"] not in anns]
        if unannotated:
            raise TaskDataError(
                f"{path}: {len(unannotated)} questions have no annotation, e.g. {unannotated[:5]}"
            )
        return anns

    def _read_lxmert(self, path: Path) -> tuple[list[dict], dict]:
        data = read_json(path)
        if not isinstance(data, list):
            raise TaskDataError(f"{path}: LXMERT VQA data must be a JSON list")
        records, anns = [], {}
        for i, d in enumerate(data):
            require_fields(d, ("question_id", "img_id", "sent"), f"{path}[{i}]")
            records.append({"question_id": d["question_id"], "image": str(d["img_id"]),
                            "question": text_field(d, "sent", f"{path}[{i}]")})  # fmt: skip
            if "label" in d:
                label = d["label"]
                if not isinstance(label, Mapping) or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) for v in label.values()
                ):
                    raise TaskDataError(f"{path}[{i}]: 'label' must be {{answer: score}}, got {label!r:.80}")
                anns[d["question_id"]] = {
                    "scores": {str(k): float(v) for k, v in d["label"].items()},
                    "answer_type": d.get("answer_type", "unknown"),
                    "question_type": d.get("question_type", "unknown"),
                }
        refuse_duplicates(((r["question_id"], f"{path}[{i}]") for i, r in enumerate(records)), "question_id")
        if anns and len(anns) != len(records):
            raise TaskDataError(
                f"{path}: {len(records) - len(anns)} items lack a 'label' while others have one"
            )
        return records, (anns or None)

    # model ------------------------------------------------------------------------------------------
    def predict(self, logits: Tensor, batch: Batch) -> list[dict]:
        best = logits.argmax(1).tolist()
        return [
            {"question_id": m["question_id"], "answer": self.answers[i]}
            for m, i in zip(batch.meta["items"], best)
        ]

    def score(self, predictions: list[dict], dataset: TaskDataset) -> dict[str, Any]:
        anns = dataset.info["annotations"]
        preds = {p["question_id"]: p["answer"] for p in predictions}
        if anns and all("answers" in a for a in anns.values()):
            return vqa_evaluate(preds, {q: anns[q] for q in preds})
        # LXMERT's files carry only the soft labels: its own evaluator scores label[prediction].
        total = sum(anns[q]["scores"].get(a, 0.0) for q, a in preds.items())
        return {
            "overall": round(100.0 * total / max(len(preds), 1), 2),
            "num_questions": len(preds),
            "note": "soft-label score (LXMERT data); the official accuracy needs the official annotations",
        }

    def write_predictions(self, predictions: list[dict], path: str | os.PathLike) -> Path:
        return write_json(
            [{"question_id": p["question_id"], "answer": p["answer"]} for p in predictions], path
        )


def read_results(path: str | os.PathLike) -> dict:
    """An official results file ``[{"question_id", "answer"}]`` -> {question_id: answer}; clear errors for
    malformed entries and repeated question ids."""
    data = read_json(Path(path))
    if not isinstance(data, list):
        raise TaskDataError(f"{path}: a VQA results file is a JSON list of {{question_id, answer}}")
    out: dict = {}
    for i, r in enumerate(data):
        require_fields(r, ("question_id", "answer"), f"{path}[{i}]")
        if r["question_id"] in out:
            raise TaskDataError(f"{path}[{i}]: question_id {r['question_id']} predicted twice")
        out[r["question_id"]] = str(r["answer"])
    return out


def read_official_annotations(questions: str | os.PathLike, annotations: str | os.PathLike) -> dict:
    """{question_id: annotation} for the official scorer (checks the two files agree)."""
    task = VQATask()
    records = task._read_questions(Path(questions))
    return task._read_annotations(Path(annotations), records)
