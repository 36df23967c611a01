"""What every downstream task shares: the example record, padding into a ``Batch``, the task model
(encoder + head), the ``Task`` interface, feature-store access and file helpers.

A task = dataset (reading the official annotation files) + head + loss + metric + prediction writer.
Multi-image (NLVR2) and multi-choice (VCR) examples carry several *views* (text, image) which the
collate flattens into the batch dimension; the head reshapes the logits back to (B, views, ...).
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from mmbert.data import features as features_api
from mmbert.data.batch import Batch, RegionFeatures
from mmbert.data.boxes import normalise_boxes
from mmbert.models.base import Encoded, EncoderModel
from mmbert.objectives.base import LossOutput


class TaskDataError(ValueError):
    """An annotation file that cannot be used as it is; the message names the file and the record."""


# --- records ---------------------------------------------------------------------------------------


@dataclass
class View:
    """One (text, image) input to the encoder: token ids with [CLS]/[SEP], their segments, the regions."""

    text_ids: list[int]
    segment_ids: list[int]
    regions: RegionFeatures | None = None


@dataclass
class Example:
    """One dataset item: its views (1 for most tasks, 2 for NLVR2, 4 for VCR), the training target
    (a tensor, or None on unlabelled splits) and ``meta`` (ids for the prediction writer)."""

    views: list[View]
    target: Tensor | None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class LoadReport:
    """What a loader skipped or changed and why: counted and reported, never silently dropped."""

    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, reason: str, what: str = "") -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        if what and len(self.examples.setdefault(reason, [])) < 5:
            self.examples[reason].append(what)

    def __bool__(self) -> bool:
        return bool(self.counts)

    def summary(self) -> str:
        if not self.counts:
            return "nothing skipped"
        return "; ".join(
            f"{n} {reason}"
            + (f" (e.g. {', '.join(self.examples[reason])})" if self.examples.get(reason) else "")
            for reason, n in self.counts.items()
        )


class TaskDataset(Dataset):
    """A list of ``Example`` builders with a report of what was skipped. Items are built lazily (the
    region features are read from the store when an item is asked for, not at load time)."""

    def __init__(
        self, records: list[Any], build: Callable[[Any], Example], report: LoadReport, info: dict
    ) -> None:
        self.records = records
        self._build = build
        self.report = report
        self.info = info  # task-specific facts for the metric (e.g. VQA annotations by question id)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> Example:
        return self._build(self.records[i])


# --- features --------------------------------------------------------------------------------------


def open_features(source: Any, trust_pickle: bool = False) -> Mapping[str, RegionFeatures]:
    """A feature store from a path (through ``mmbert.data.features.open``) or an object that already maps
    image ids to ``RegionFeatures`` (a store, or a dict in tests)."""
    is_path = isinstance(source, (str, os.PathLike))
    if not is_path and hasattr(source, "__getitem__") and hasattr(source, "__contains__"):
        return source
    return features_api.open(source, trust_pickle=trust_pickle)


def region_lookup(
    store: Mapping[str, RegionFeatures], image_id: str, max_regions: int | None
) -> RegionFeatures:
    """``store[image_id]`` with at most ``max_regions`` regions (the detector's order, best first)."""
    feats = store[image_id]
    if max_regions is not None and feats.num_regions > max_regions:
        keep = slice(0, max_regions)
        feats = RegionFeatures(
            image_id=feats.image_id,
            feats=feats.feats[keep],
            boxes=feats.boxes[keep],
            image_size=feats.image_size,
        )
    return feats


def check_images(
    image_ids: Sequence[str], store: Mapping[str, RegionFeatures] | None, report: LoadReport, source: str
) -> set[str]:
    """The ids absent from the store (counted in ``report``; callers skip those records)."""
    if store is None:
        return set()
    missing = {i for i in dict.fromkeys(image_ids) if i not in store}
    for i in sorted(missing):
        report.add(f"records whose image is absent from the feature store ({source})", i)
    return missing


# --- text ------------------------------------------------------------------------------------------


def encode_text(
    tokenizer: Any, text: str, pair: str | None = None, max_length: int | None = None
) -> tuple[list[int], list[int]]:
    """[CLS] text [SEP] (pair [SEP]) -> (ids, segment ids), truncated to ``max_length`` (longest first)."""
    enc = tokenizer.encode(text, pair, max_length=max_length)
    return list(enc.ids), list(enc.segment_ids)


# --- collate ---------------------------------------------------------------------------------------


def collate(examples: Sequence[Example], pad_token_id: int = 0) -> Batch:
    """Pad a list of examples into one ``Batch``, flattening the views: row ``b * V + v`` is view v
    of example b. Text and regions are padded to the longest in the batch. Pixel boxes are normalised
    by each image's size. Targets are stacked (padded with 0 along the first axis when their lengths
    differ, as for per-region targets) into ``batch.labels``. ``meta["items"]`` keeps each example's
    meta; ``meta["num_views"]`` the number of views per example."""
    if not examples:
        raise ValueError("collate needs at least one example")
    num_views = len(examples[0].views)
    if any(len(e.views) != num_views for e in examples):
        raise ValueError("all examples of a batch must have the same number of views")
    views = [v for e in examples for v in e.views]
    n = len(views)
    t = max(len(v.text_ids) for v in views)
    text_ids = torch.full((n, t), pad_token_id, dtype=torch.long)
    segment_ids = torch.zeros(n, t, dtype=torch.long)
    text_mask = torch.zeros(n, t, dtype=torch.bool)
    for i, v in enumerate(views):
        text_ids[i, : len(v.text_ids)] = torch.tensor(v.text_ids)
        segment_ids[i, : len(v.segment_ids)] = torch.tensor(v.segment_ids)
        text_mask[i, : len(v.text_ids)] = True
    batch = Batch(text_ids=text_ids, text_mask=text_mask, segment_ids=segment_ids)
    if any(v.regions is not None for v in views):
        if any(v.regions is None for v in views):
            raise ValueError("a batch mixes views with and without region features")
        r = max(v.regions.num_regions for v in views)  # type: ignore[union-attr]
        f = views[0].regions.feats.shape[1]  # type: ignore[union-attr]
        feats = torch.zeros(n, r, f)
        boxes = torch.zeros(n, r, 4)
        mask = torch.zeros(n, r, dtype=torch.bool)
        for i, v in enumerate(views):
            reg = v.regions
            k = reg.num_regions  # type: ignore[union-attr]
            feats[i, :k] = torch.tensor(reg.feats, dtype=torch.float32)  # type: ignore[union-attr]
            px = torch.tensor(reg.boxes, dtype=torch.float32)  # type: ignore[union-attr]
            boxes[i, :k] = normalise_boxes(px, reg.image_size)  # type: ignore[union-attr]
            mask[i, :k] = True
        batch.region_feats, batch.region_boxes, batch.region_mask = feats, boxes, mask
    targets = [e.target for e in examples]
    if all(x is not None for x in targets):
        batch.labels = _stack_padded(targets)  # type: ignore[arg-type]
    batch.meta = {"items": [e.meta for e in examples], "num_views": num_views}
    return batch


def _stack_padded(xs: Sequence[Tensor]) -> Tensor:
    if all(x.shape == xs[0].shape for x in xs):
        return torch.stack(list(xs))
    longest = max(x.shape[0] for x in xs)
    out = xs[0].new_zeros((len(xs), longest, *xs[0].shape[1:]))
    for i, x in enumerate(xs):
        out[i, : x.shape[0]] = x
    return out


def loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool = False,
    pad_token_id: int = 0,
    seed: int = 0,
    num_workers: int = 0,
) -> DataLoader:
    """A DataLoader over a task dataset that collates into ``Batch`` (seeded shuffling)."""
    g = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=g if shuffle else None,
        num_workers=num_workers,
        collate_fn=lambda ex: collate(ex, pad_token_id),
    )


# --- model side ------------------------------------------------------------------------------------


@dataclass
class EncoderDims:
    """What a head needs to know about an encoder, read off a tiny forward pass (so heads never care
    which family they sit on): pooled width P, vision width Dv, and where the input regions sit in its
    vision output (``region_offset``: ViLBERT and VL-BERT add a whole-image region and/or [END])."""

    pooled: int
    vision: int | None
    region_offset: int


def probe_encoder(encoder: EncoderModel) -> EncoderDims:
    """Run a 1 x 3-token, 2-region input through ``encoder`` without grad. The input regions' place in
    the vision output is found with the model's ``vision_mask``: the positions whose mask changes when
    the region mask goes from [real, padded] to [padded, real] are the two input regions (this holds
    whether ``vision_mask`` marks the whole-image region real or not)."""
    feat_dim = getattr(encoder.config, "region_feat_dim", None)
    p = next(encoder.parameters())
    inputs: dict[str, Tensor] = {
        "text_ids": torch.tensor([[1, 2, 3]], device=p.device) % encoder.config.vocab_size,
        "text_mask": torch.ones(1, 3, dtype=torch.bool, device=p.device),
        "segment_ids": torch.zeros(1, 3, dtype=torch.long, device=p.device),
    }
    if feat_dim:
        inputs["region_feats"] = torch.zeros(1, 2, feat_dim, device=p.device)
        inputs["region_boxes"] = torch.tensor([[[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]]], device=p.device)
        inputs["region_mask"] = torch.tensor([[True, False]], device=p.device)
    was_training = encoder.training
    encoder.eval()
    with torch.no_grad():
        enc = encoder(**inputs)
    encoder.train(was_training)
    if enc.vision is None:
        return EncoderDims(enc.pooled.shape[-1], None, 0)
    length = enc.vision.shape[1]
    name = type(encoder).__name__
    if length == 2:
        return EncoderDims(enc.pooled.shape[-1], enc.vision.shape[-1], 0)
    if not hasattr(encoder, "vision_mask"):
        raise ValueError(f"{name} returns {length} vision positions for 2 regions and has no vision_mask() "
                         "saying which are the input regions")  # fmt: skip
    first = encoder.vision_mask(inputs)[0]
    second = encoder.vision_mask({**inputs, "region_mask": inputs["region_mask"].flip(1)})[0]
    changed = (first != second).nonzero().flatten().tolist()
    if len(changed) != 2 or changed[1] != changed[0] + 1 or not bool(first[changed[0]]):
        raise ValueError(f"cannot locate the input regions in {name}'s vision output ({length} positions)")
    return EncoderDims(enc.pooled.shape[-1], enc.vision.shape[-1], changed[0])


def input_regions(vision: Tensor, offset: int, num_regions: int) -> Tensor:
    """The vision states of the input regions only (B, R, Dv), without whole-image region or [END]."""
    return vision[:, offset : offset + num_regions]


class TaskModel(nn.Module):
    """Encoder + task head. ``forward(batch) -> logits`` in the task's shape."""

    def __init__(self, encoder: EncoderModel, head: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head

    @property
    def config(self):
        return self.encoder.config

    def forward(self, batch: Batch) -> Tensor:
        enc: Encoded = self.encoder(**batch.model_inputs())
        return self.head(enc, batch)


# --- the task interface ----------------------------------------------------------------------------


class Task(ABC):
    """One downstream task. Subclasses set ``name``, ``files`` (the annotation files a split needs, by
    name) and implement ``load``, ``build_head``, ``loss`` and ``write_predictions``, plus ``predict``
    and ``score`` for the default ``evaluate`` (batch-wise prediction; retrieval overrides ``evaluate``
    to score the full pool instead).

    ``options`` are the task's settings (maximum lengths, answer vocabulary, ...); they are saved with a
    fine-tuned model (``state()``) so evaluation rebuilds exactly the same task.
    """

    name: ClassVar[str] = ""
    files: ClassVar[dict[str, str]] = {}  # file name -> what it is (for --help and error messages)
    prediction_file: ClassVar[str] = "predictions.json"
    main_metric: ClassVar[str] = ""

    def __init__(self, **options: Any) -> None:
        self.options = dict(options)

    def state(self) -> dict[str, Any]:
        """JSON-serialisable settings to rebuild this task (``Task(**state)``)."""
        return dict(self.options)

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
    def model_step(self, model: TaskModel, batch: Batch) -> LossOutput:
        """One training step's loss (retrieval overrides this to add negatives)."""
        return self.loss(model(batch), batch)

    @torch.no_grad()
    def evaluate(
        self,
        model: TaskModel,
        dataset: TaskDataset,
        batch_size: int = 32,
        device: str | torch.device = "cpu",
        progress: bool = False,
    ) -> tuple[dict[str, Any], list[dict]]:
        """Predict over ``dataset`` and score (when it has labels). Returns (metrics, predictions)."""
        was_training = model.training
        model.eval()
        predictions: list[dict[str, Any]] = []
        batches: Iterator = iter(loader(dataset, batch_size, pad_token_id=model.config.pad_token_id))
        if progress:
            from tqdm import tqdm

            batches = tqdm(batches, total=-(-len(dataset) // batch_size), desc=f"evaluate {self.name}")
        for batch in batches:
            batch = batch.to(device)
            predictions.extend(self.predict(model(batch), batch))
        model.train(was_training)
        metrics = self.score(predictions, dataset) if dataset.info.get("labelled", True) else {}
        if dataset.report:
            metrics["skipped"] = dict(dataset.report.counts)
        return metrics, predictions

    def load_split(
        self, split: str | None, files: Mapping[str, Any], tokenizer: Any, features: Any = None
    ) -> TaskDataset:
        """``load`` for a named split, for tasks whose files hold several (retrieval, refexp)."""
        if split is None or "split" not in self.options:
            return self.load(files, tokenizer, features)
        saved = self.options["split"]
        self.options["split"] = split
        try:
            return self.load(files, tokenizer, features)
        finally:
            self.options["split"] = saved

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


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise TaskDataError(f"{path}: not valid JSON ({e})") from None


def read_jsonl(path: Path) -> list[tuple[int, dict]]:
    """(line number, record) for every non-empty line."""
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                out.append((n, json.loads(line)))
            except json.JSONDecodeError as e:
                raise TaskDataError(f"{path}:{n}: not valid JSON ({e})") from None
    return out


def require_fields(record: Mapping, names: Sequence[str], where: str) -> None:
    """A clear error naming the file/record and the missing fields."""
    if not isinstance(record, Mapping):
        raise TaskDataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    missing = [n for n in names if n not in record]
    if missing:
        raise TaskDataError(f"{where}: missing field(s) {missing} (has {sorted(record)})")


def write_json(obj: Any, path: str | os.PathLike) -> Path:
    from mmbert.atomic import atomic_write_json

    return atomic_write_json(path, obj, indent=None if isinstance(obj, list) else 2)


# --- fine-tuned checkpoints ------------------------------------------------------------------------

TASK_FILE = "task.json"


def save_task_model(model: TaskModel, task: Task, path: str | os.PathLike, tokenizer: Any = None) -> Path:
    """A fine-tuned model directory: config.json + model.safetensors (``encoder.*``, ``head.*``), task.json
    (task name and options, e.g. the answer vocabulary) and the tokenizer when given."""
    from mmbert.atomic import atomic_write_json
    from mmbert.models.base import save_module

    path = Path(path)
    save_module(
        model, model.encoder.config, path, extra_config={"mmbert_heads": "task", "mmbert_task": task.name}
    )
    record = {"task": task.name, "options": task.state()}
    atomic_write_json(path / TASK_FILE, record)
    if tokenizer is not None:
        tokenizer.save(path)
    return path


def load_task_model(path: str | os.PathLike, registry: Mapping[str, type[Task]]) -> tuple[Task, TaskModel]:
    """(task, model) from a directory written by ``save_task_model``; every weight must be there."""
    from mmbert.convert.common import load_state_strict, read_config, read_weights
    from mmbert.models import config_from_dict, model_class

    path = Path(path)
    if not (path / TASK_FILE).is_file():
        raise FileNotFoundError(
            f"{path}: no {TASK_FILE}; not a fine-tuned task model (see `mmbert finetune`)"
        )
    record = read_json(path / TASK_FILE)
    if record.get("task") not in registry:
        raise ValueError(
            f"{path / TASK_FILE}: unknown task {record.get('task')!r}; known: {sorted(registry)}"
        )
    task = registry[record["task"]](**record.get("options", {}))
    raw = read_config(path)
    config = config_from_dict(
        {k: v for k, v in raw.items() if not k.startswith("mmbert_")}, str(path / "config.json")
    )
    encoder = model_class(config)(config)
    model = TaskModel(encoder, task.build_head(encoder))
    state, source = read_weights(path)
    load_state_strict(model, state, source)
    return task, model.eval()
