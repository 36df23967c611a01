"""The ``Task`` interface every downstream task implements, and its typed options.

A task = dataset (reading the official annotation files) + head + loss + metric + prediction writer.
The pieces every task shares live beside it, one job each: ``records`` (View, Example, TaskDataset,
LoadReport), ``collate`` (padding into a ``Batch``), ``features`` (store access), ``model`` (TaskModel,
probe_encoder), ``files`` (annotation files), ``objective`` (the training step the trainer runs) and
``checkpoint`` (fine-tuned model directories). They are re-exported here for the task files.
"""

from __future__ import annotations

import dataclasses
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from mmbert.data.batch import Batch
from mmbert.models.base import EncoderModel
from mmbert.objectives.base import LossOutput
from mmbert.tasks.collate import collate as collate
from mmbert.tasks.collate import loader
from mmbert.tasks.features import check_images as check_images
from mmbert.tasks.features import open_features as open_features
from mmbert.tasks.features import region_lookup as region_lookup
from mmbert.tasks.files import read_json as read_json
from mmbert.tasks.files import read_jsonl as read_jsonl
from mmbert.tasks.files import require_fields as require_fields
from mmbert.tasks.files import write_json as write_json
from mmbert.tasks.model import EncoderDims as EncoderDims
from mmbert.tasks.model import TaskModel
from mmbert.tasks.model import input_regions as input_regions
from mmbert.tasks.model import probe_encoder as probe_encoder
from mmbert.tasks.records import Example as Example
from mmbert.tasks.records import LoadReport as LoadReport
from mmbert.tasks.records import TaskDataError, TaskDataset
from mmbert.tasks.records import View as View
from mmbert.tasks.records import encode_text as encode_text


@dataclasses.dataclass
class TaskOptions:
    """Settings every task has; each task's options dataclass adds its own (and may change a default)."""

    max_text_len: int = 40  # tokens with [CLS] / [SEP], longest first truncation
    max_regions: int | None = 36  # regions per image (the detector's order, best first); None = all
    trust_pickle: bool = False  # allow pickled inputs (RefCOCO refs, VOLTA LMDB stores): trusted files only


@dataclasses.dataclass(frozen=True)
class EvalRun:
    """How ``Task.evaluate`` runs: batch size, device, and whether to show a progress bar."""

    batch_size: int
    device: str | torch.device = "cpu"
    progress: bool = False

    def batches(self, items: Any, pad_token_id: int, desc: str) -> Iterator[Batch]:
        """``items`` (a dataset) in padded batches on the device, under a progress bar when asked."""
        batches: Iterator = iter(loader(items, self.batch_size, pad_token_id=pad_token_id))
        if self.progress:
            from tqdm import tqdm

            batches = tqdm(batches, total=-(-len(items) // self.batch_size), desc=desc)
        for batch in batches:
            yield batch.to(self.device)


class Task(ABC):
    """One downstream task. Subclasses set ``name``, ``files`` (the annotation files a split needs, by
    name), ``options_class`` (a ``TaskOptions`` dataclass) and implement ``load``, ``build_head``,
    ``loss`` and ``write_predictions``, plus ``predict`` and ``score`` for the default ``evaluate``
    (batch-wise prediction; retrieval overrides ``predict_split`` to score the full pool instead,
    captioning to generate).

    ``Task(**options)`` or ``Task(options=TheOptions(...))``: the options are typed (``task.options.
    max_text_len``) and saved with a fine-tuned model (``state()``), so evaluation rebuilds exactly the
    same task.
    """

    name: ClassVar[str] = ""
    files: ClassVar[dict[str, str]] = {}  # file name -> what it is (for --help and error messages)
    prediction_file: ClassVar[str] = "predictions.json"
    main_metric: ClassVar[str] = ""
    eval_batch_size: ClassVar[int] = 32  # ``evaluate``'s default batch size
    options_class: ClassVar[type[TaskOptions]] = TaskOptions

    def __init__(self, options: TaskOptions | None = None, **settings: Any) -> None:
        if options is not None and settings:
            raise TypeError(f"task {self.name!r}: give options=... or keyword settings, not both")
        if options is not None and not isinstance(options, self.options_class):
            raise TypeError(f"task {self.name!r} takes {self.options_class.__name__}, got {type(options).__name__}")
        self.options = options if options is not None else self.options_class(**self._checked(settings))
        self._check_sizes()

    def _check_sizes(self) -> None:
        """The size options every task shares are positive integers (``max_regions`` None = all)."""
        for key in ("max_regions", "max_text_len"):
            value = getattr(self.options, key, None)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise TaskDataError(f"task {self.name!r}: option {key!r} must be a positive integer, got {value!r}")

    @classmethod
    def option_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls.options_class)]

    @classmethod
    def _checked(cls, settings: Mapping[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(settings) - set(cls.option_names()))
        if unknown:
            raise TypeError(
                f"task {cls.name!r} has no option(s) {unknown}; its options: {', '.join(cls.option_names())}"
            )
        return dict(settings)

    def update_options(self, **changes: Any) -> None:
        """Change some options by name (unknown names are refused, naming the valid ones)."""
        self.options = dataclasses.replace(self.options, **self._checked(changes))
        self._check_sizes()

    def state(self) -> dict[str, Any]:
        """JSON-serialisable settings to rebuild this task (``Task(**state)``)."""
        return dataclasses.asdict(self.options)

    # to implement -----------------------------------------------------------------------------------
    @abstractmethod
    def load(
        self, files: Mapping[str, str | os.PathLike], tokenizer: Any, features: Any = None
    ) -> TaskDataset:
        """Read the official files of one split; images come from ``features`` (path or store)."""

    @abstractmethod
    def build_head(self, encoder: EncoderModel) -> nn.Module:
        """A fresh head for this encoder: ``head(encoded, batch) -> logits``."""

    @abstractmethod
    def loss(self, logits: Tensor, batch: Batch) -> LossOutput:
        """The task loss and batch metrics."""

    @abstractmethod
    def write_predictions(self, predictions: list[dict[str, Any]], path: str | os.PathLike) -> Path:
        """Write predictions in the official submission format."""

    def predict(self, logits: Tensor, batch: Batch) -> list[dict[str, Any]]:
        """One prediction record per example of ``batch`` (used by the default ``evaluate``)."""
        raise NotImplementedError(f"task {self.name!r} predicts in its own evaluate()")

    def score(self, predictions: list[dict[str, Any]], dataset: TaskDataset) -> dict[str, Any]:
        """The official metric over a split's predictions (used by the default ``evaluate``)."""
        raise NotImplementedError(f"task {self.name!r} scores in its own evaluate()")

    # shared -----------------------------------------------------------------------------------------
    def forward(self, model: TaskModel, batch: Batch) -> Tensor:
        """The task model's logits for a batch, in training and evaluation alike (a task that sets
        batch-level inputs first, such as Flickr30K Entities' phrase mask, overrides this)."""
        return model(batch)

    def model_step(self, model: TaskModel, batch: Batch) -> LossOutput:
        """One training step's loss (retrieval overrides this to add negatives)."""
        return self.loss(self.forward(model, batch), batch)

    @torch.no_grad()
    def evaluate(
        self,
        model: TaskModel,
        dataset: TaskDataset,
        batch_size: int | None = None,
        device: str | torch.device = "cpu",
        progress: bool = False,
    ) -> tuple[dict[str, Any], list[dict]]:
        """Predict over ``dataset`` in eval mode (the model's mode comes back after, also on an error) and
        score it. Returns (metrics, predictions); ``batch_size`` defaults to the task's ``eval_batch_size``."""
        run = EvalRun(batch_size or self.eval_batch_size, device, progress)
        was_training = model.training
        model.eval()
        try:
            metrics, predictions = self.predict_split(model, dataset, run)
        finally:
            model.train(was_training)
        if dataset.report:
            metrics["skipped"] = dict(dataset.report.counts)
        return metrics, predictions

    def predict_split(self, model: TaskModel, dataset: TaskDataset, run: EvalRun) -> tuple[dict, list[dict]]:
        """``evaluate``'s work: ``predict`` batch by batch, then ``score`` when the split has labels
        (captioning generates and retrieval scores the whole pool instead)."""
        predictions: list[dict[str, Any]] = []
        for batch in run.batches(dataset, model.config.pad_token_id, f"evaluate {self.name}"):
            predictions.extend(self.predict(self.forward(model, batch), batch))
        metrics = self.score(predictions, dataset) if dataset.info.get("labelled", True) else {}
        return metrics, predictions

    def load_split(
        self, split: str | None, files: Mapping[str, Any], tokenizer: Any, features: Any = None
    ) -> TaskDataset:
        """``load`` for a named split, for tasks whose files hold several (retrieval, refexp)."""
        if split is None or "split" not in self.option_names():
            return self.load(files, tokenizer, features)
        saved = self.options.split  # type: ignore[attr-defined]
        self.update_options(split=split)
        try:
            return self.load(files, tokenizer, features)
        finally:  # what load learnt (e.g. an answer vocabulary) stays; only the split goes back
            self.update_options(split=saved)

    def require_files(self, files: Mapping[str, Any], *names: str) -> dict[str, Path]:
        missing = [n for n in names if n not in files]
        if missing:
            known = ", ".join(f"{k} ({v})" for k, v in self.files.items())
            raise TaskDataError(f"task {self.name!r} needs the file(s) {missing}; it reads: {known}")
        out = {}
        for n in names:
            p = Path(files[n])
            if not p.exists():
                raise FileNotFoundError(f"{p}: {n} file for task {self.name!r} not found")
            out[n] = p
        return out
