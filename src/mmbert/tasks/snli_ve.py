"""SNLI-VE: visual entailment — does the image entail, contradict, or leave open a hypothesis sentence?

Reads the official jsonl (``snli_ve_{train,dev,test}.jsonl``, necla-ml/SNLI-VE): one object per line with
``Flickr30K_ID`` (the premise image), ``sentence2`` (the hypothesis), ``gold_label`` (entailment /
neutral / contradiction) and ``pairID``. The premise caption (``sentence1``) is not an input: the image is
the premise. A line with another label (SNLI's "-" for no annotator consensus) is an error naming the
line, unless ``skip_unlabelled`` (then counted in the load report).

Head: ``MLPClassifier(P, 2P, 3)`` on the pooled output (UNITER's VE head is the VQA classifier with 3
outputs). Loss: cross-entropy. Metric: accuracy overall and per gold class (percent). Predictions:
``[{"pairID", "prediction"}]`` with the label names.

UNIMO: the official head (``unimo_heads.UnimoClassifierHead``) and, with ``adversarial=true``, the official
adversarial training (``mmbert.tasks.unimo_adversarial``: PGD on the text embeddings and on the region
features, ``adv_steps`` rounds of step ``adv_lr`` within ``adv_max_norm``, cross-entropy of the clean and
both perturbed forwards plus their symmetric KL to the clean one).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmbert.data.batch import Batch
from mmbert.models.base import EncoderModel
from mmbert.objectives.base import LossOutput
from mmbert.tasks.base import Task, TaskOptions
from mmbert.tasks.features import check_images, open_features, region_lookup
from mmbert.tasks.fields import refuse_duplicates
from mmbert.tasks.files import read_json, read_jsonl, require_fields, write_json
from mmbert.tasks.model import TaskModel, probe_encoder
from mmbert.tasks.records import Example, LoadReport, TaskDataError, TaskDataset, View, encode_text
from mmbert.tasks.unimo_adversarial import AdversarialSettings, adversarial_step
from mmbert.tasks.vqa import VQAHead

LABELS = ("entailment", "neutral", "contradiction")


def read_snli_ve(
    path: str | os.PathLike, skip_unlabelled: bool = False, report: LoadReport | None = None
) -> list[dict]:
    """The official jsonl -> records {pair_id, image, hypothesis, label (index into LABELS)}."""
    path = Path(path)
    records = []
    for line, d in read_jsonl(path):
        where = f"{path}:{line}"
        require_fields(d, ("Flickr30K_ID", "sentence2", "gold_label"), where)
        if d["gold_label"] not in LABELS:
            if skip_unlabelled and report is not None:
                report.add(f"pairs without a gold label in {LABELS}", where)
                continue
            raise TaskDataError(f"{where}: gold_label {d['gold_label']!r} is not one of {LABELS}")
        records.append({"pair_id": str(d.get("pairID", f"{path.name}:{line}")), "image": str(d["Flickr30K_ID"]),
                        "hypothesis": str(d["sentence2"]), "label": LABELS.index(d["gold_label"]),
                        "where": where})  # fmt: skip
    if not records:
        raise TaskDataError(f"{path}: no labelled pairs")
    refuse_duplicates(((r["pair_id"], r["where"]) for r in records), "pairID")
    return records


def entailment_accuracy(predictions: Mapping[str, str], labels: Mapping[str, int]) -> dict[str, Any]:
    """Percent accuracy overall and per gold class; every pair needs a prediction."""
    missing = [p for p in labels if p not in predictions]
    if missing:
        raise TaskDataError(f"{len(missing)} of {len(labels)} pairs have no prediction, e.g. {missing[:5]}")
    unknown = [p for p in predictions if p not in labels]
    if unknown:
        raise TaskDataError(f"{len(unknown)} predictions for pairs not in the data, e.g. {unknown[:5]}")
    per: dict[str, list[bool]] = {name: [] for name in LABELS}
    for pair, gold in labels.items():
        per[LABELS[gold]].append(predictions[pair] == LABELS[gold])
    every = [x for xs in per.values() for x in xs]
    out: dict[str, Any] = {"accuracy": 100.0 * sum(every) / len(every)}
    out["per_class"] = {k: (100.0 * sum(v) / len(v) if v else None) for k, v in per.items()}
    out["counts"] = {k: len(v) for k, v in per.items()}
    return out


@dataclass
class SNLIVEOptions(TaskOptions):
    """SNLI-VE settings."""

    dropout: float = 0.1
    skip_unlabelled: bool = False  # drop records without a gold label instead of refusing them
    adversarial: bool = False  # UNIMO only: the official adversarial training (tasks.unimo_adversarial)
    adv_steps: int = 4  # its rounds (adv_step)
    adv_lr: float = 0.05  # its ascent step (adv_lr)
    adv_init_mag: float = 0.4  # the initial perturbation's L2 norm at most (adv_init_mag)
    adv_max_norm: float = 0.4  # the L2 bound (adv_max_norm); 0 = none
    adv_projection: str = "delta"  # "delta": projected onto the ball; "gradient": the official code's rule


class SNLIVETask(Task):
    name = "snli-ve"
    files = {"jsonl": "official SNLI-VE jsonl (snli_ve_train.jsonl / snli_ve_dev.jsonl / snli_ve_test.jsonl)"}
    prediction_file = "snli_ve_predictions.json"
    main_metric = "accuracy"

    options_class = SNLIVEOptions
    options: SNLIVEOptions

    def load(self, files: Mapping[str, Any], tokenizer: Any, features: Any = None) -> TaskDataset:
        path = self.require_files(files, "jsonl")["jsonl"]
        report = LoadReport()
        records = read_snli_ve(path, self.options.skip_unlabelled, report)
        store = open_features(features, self.options.trust_pickle) if features is not None else None
        missing = check_images([r["image"] for r in records], store, report, "snli-ve")
        records = [r for r in records if r["image"] not in missing]
        max_len, max_regions = self.options.max_text_len, self.options.max_regions

        def build(r: dict) -> Example:
            ids, segs = encode_text(tokenizer, r["hypothesis"], max_length=max_len)
            regions = region_lookup(store, r["image"], max_regions) if store is not None else None
            return Example([View(ids, segs, regions)], torch.tensor(r["label"]), {"pair_id": r["pair_id"]})

        labels = {r["pair_id"]: r["label"] for r in records}
        return TaskDataset(records, build, report, {"labelled": True, "labels": labels})

    def _check_sizes(self) -> None:
        super()._check_sizes()
        self.adversarial_settings()  # a bad adversarial option is refused when the task is built

    def adversarial_settings(self) -> AdversarialSettings:
        o = self.options
        try:
            return AdversarialSettings(o.adv_steps, o.adv_lr, o.adv_init_mag, o.adv_max_norm, o.adv_projection)
        except ValueError as e:
            raise TaskDataError(f"task 'snli-ve': {e}") from None

    def model_step(self, model: TaskModel, batch: Batch) -> LossOutput:
        # evaluation (eval mode, the official is_train flag's counterpart): the clean model only
        if not self.options.adversarial or not model.training:
            return super().model_step(model, batch)
        if model.config.model_type != "unimo":
            raise ValueError(f"adversarial=true is UNIMO's visual-entailment training; this model is "
                             f"{model.config.model_type!r}")  # fmt: skip

        def ce(logits: Tensor) -> Tensor:
            return F.cross_entropy(logits.float(), batch.labels)

        return adversarial_step(model, batch, ce, self.adversarial_settings()).out

    def build_head(self, encoder: EncoderModel) -> nn.Module:
        if encoder.config.model_type == "unimo":  # visual_entailment.py: fc(2048) on [CLS] + [IMG]
            from mmbert.tasks.unimo_heads import UnimoClassifierHead

            return UnimoClassifierHead(encoder.config.dim, len(LABELS))
        return VQAHead(probe_encoder(encoder).pooled, len(LABELS), self.options.dropout)

    def loss(self, logits: Tensor, batch: Batch) -> LossOutput:
        loss = F.cross_entropy(logits.float(), batch.labels)
        with torch.no_grad():
            acc = (logits.argmax(1) == batch.labels).float().mean()
        return LossOutput(loss, {"ve_loss": float(loss.detach()), "ve_acc": float(acc)})

    def predict(self, logits: Tensor, batch: Batch) -> list[dict]:
        return [{"pairID": m["pair_id"], "prediction": LABELS[i]}
                for m, i in zip(batch.meta["items"], logits.argmax(1).tolist())]  # fmt: skip

    def score(self, predictions: list[dict], dataset: TaskDataset) -> dict[str, Any]:
        return entailment_accuracy(
            {p["pairID"]: p["prediction"] for p in predictions}, dataset.info["labels"]
        )

    def write_predictions(self, predictions: list[dict], path: str | os.PathLike) -> Path:
        return write_json(predictions, path)


def score_prediction_file(predictions: str | os.PathLike, data: str | os.PathLike) -> dict[str, Any]:
    """``mmbert score --task snli-ve``: ``[{"pairID", "prediction"}]`` against the official jsonl."""
    raw = read_json(Path(predictions))
    if not isinstance(raw, list):
        raise TaskDataError(f"{predictions}: SNLI-VE predictions are a JSON list of {{pairID, prediction}}")
    refuse_duplicates(
        ((str(r.get("pairID")), f"{predictions}[{i}]") for i, r in enumerate(raw) if isinstance(r, dict)),
        "pairID",
    )
    preds: dict[str, str] = {}
    for i, r in enumerate(raw):
        require_fields(r, ("pairID", "prediction"), f"{predictions}[{i}]")
        if r["prediction"] not in LABELS:
            raise TaskDataError(f"{predictions}[{i}]: prediction {r['prediction']!r} is not one of {LABELS}")
        preds[str(r["pairID"])] = r["prediction"]
    labels = {r["pair_id"]: r["label"] for r in read_snli_ve(data)}
    return entailment_accuracy(preds, labels)
