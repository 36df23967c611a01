"""Flickr30K Entities: ground each annotated phrase of a caption to the image regions it names.

Files (BryanPlummer/flickr30k_entities): ``Sentences/<image>.txt`` — one caption per line with phrases
marked ``[/EN#<entity id>/<type>[/<type>...] words of the phrase]``; ``Annotations/<image>.xml`` — PASCAL-VOC
style ``<object>``s, each naming one or more entity ids (``<name>``) with a ``<bndbox>`` (xmin, ymin,
xmax, ymax, pixels) or ``<nobndbox>1</nobndbox>`` (scene / not visual); and the split's image list
(``train.txt`` / ``val.txt`` / ``test.txt``). Phrases whose entity has no box (type ``notvisual``, scene
entities) are not grounded and are counted in the load report, as the benchmark excludes them. An entity
with several boxes is represented by their union (Plummer et al., ICCV 2015), or by any of them with
``gt_boxes="any"``.

Grounding as VisualBERT (Li et al. 2019, arXiv 1908.03557, its Flickr30K section): per phrase, scores over
the regions — scaled dot product of the phrase (mean of its token states, projected) with each region's
vision state (projected) — a softmax over the real regions, trained by KL divergence against the uniform
distribution over the regions whose IoU with the ground truth is >= ``iou_threshold``. A phrase whose
entity no detected region overlaps enough has no training target (counted); it still counts, as a miss,
in evaluation. Metric: R@1, R@5, R@10 — a phrase is right at K when one of its K best-scored regions has
IoU >= 0.5 with the ground truth. One example is one (sentence, phrase) pair.
Predictions: ``[{"image_id", "sentence", "entity_id", "phrase", "boxes": top 10 [x1, y1, x2, y2],
"ious"}]``.
"""

from __future__ import annotations

import math
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mmbert.data.batch import Batch
from mmbert.models.base import EncoderModel
from mmbert.objectives.base import LossOutput
from mmbert.tasks.base import (
    EvalRun,
    Example,
    LoadReport,
    Task,
    TaskDataError,
    TaskDataset,
    TaskOptions,
    View,
    check_images,
    input_regions,
    open_features,
    probe_encoder,
    region_lookup,
    write_json,
)
from mmbert.tasks.metrics import box_iou
from mmbert.tasks.model import TaskModel

PAD_LOGIT = -10000.0
KS = (1, 5, 10)
_PHRASE = re.compile(r"\[/EN#(\d+)((?:/[^\s\]]+)+)\s+([^\[\]]*)\]")


@dataclass
class Phrase:
    entity_id: str
    types: list[str]
    text: str
    start: int  # character offsets of the phrase words in the plain sentence
    end: int


def parse_sentence(line: str, where: str) -> tuple[str, list[Phrase]]:
    """One Sentences line -> (the plain sentence, its phrases). Brackets that do not form a phrase are an
    error naming ``where`` (file:line)."""
    plain, phrases, pos = [], [], 0
    length = 0
    for m in _PHRASE.finditer(line):
        before = line[pos : m.start()]
        if "[" in before or "]" in before:
            raise TaskDataError(f"{where}: malformed phrase markup near {before.strip()[:40]!r}")
        plain.append(before)
        length += len(before)
        words = m.group(3).strip()
        if not words:
            raise TaskDataError(f"{where}: phrase /EN#{m.group(1)} has no words")
        phrases.append(
            Phrase(m.group(1), m.group(2).strip("/").split("/"), words, length, length + len(words))
        )
        plain.append(words)
        length += len(words)
        pos = m.end()
    rest = line[pos:]
    if "[" in rest or "]" in rest:
        raise TaskDataError(f"{where}: malformed phrase markup near {rest.strip()[:40]!r}")
    plain.append(rest)
    return "".join(plain).strip(), phrases


def read_sentences(path: Path) -> list[tuple[int, str, list[Phrase]]]:
    """(line number, plain sentence, phrases) for every caption of one image."""
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            sentence, phrases = parse_sentence(line.strip(), f"{path}:{n}")
            out.append((n, sentence, phrases))
    return out


def read_annotation(path: Path) -> tuple[dict[str, list[list[float]]], set[str]]:
    """(entity id -> boxes [x1, y1, x2, y2], entity ids marked without a box) from one Annotations XML."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise TaskDataError(f"{path}: not valid XML ({e})") from None
    boxes: dict[str, list[list[float]]] = {}
    no_box: set[str] = set()
    for i, obj in enumerate(root.iter("object")):
        names = [n.text.strip() for n in obj.findall("name") if n.text and n.text.strip()]
        if not names:
            raise TaskDataError(f"{path}: object {i} has no <name> (entity id)")
        bnd = obj.find("bndbox")
        if bnd is None:
            if obj.findtext("nobndbox", "").strip() != "1" and obj.find("scene") is None:
                raise TaskDataError(
                    f"{path}: object {i} ({names}) has neither <bndbox> nor <nobndbox>1</nobndbox>"
                )
            no_box.update(names)
            continue
        try:
            box = [float(bnd.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]
        except (TypeError, ValueError):
            raise TaskDataError(
                f"{path}: object {i} ({names}): <bndbox> needs numeric xmin, ymin, xmax, ymax"
            ) from None
        if box[2] < box[0] or box[3] < box[1]:
            raise TaskDataError(f"{path}: object {i} ({names}): box {box} has xmax < xmin or ymax < ymin")
        for name in names:
            boxes.setdefault(name, []).append(box)
    return boxes, no_box - set(boxes)


def union_box(boxes: list[list[float]]) -> list[float]:
    return [
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    ]


def recall_at_k(ranked_ious: list[list[float]], threshold: float = 0.5, ks=KS) -> dict[str, float]:
    """Percent of phrases with a region of IoU >= threshold among their K best (regions ranked by score)."""
    n = len(ranked_ious)
    return {f"r@{k}": (100.0 * sum(any(i >= threshold for i in r[:k]) for r in ranked_ious) / n if n else 0.0)
            for k in ks}  # fmt: skip


def chance_recall(ious: list[list[float]], threshold: float = 0.5, ks=KS) -> dict[str, float]:
    """The expected R@K of ranking regions at random (the random-box baseline): 1 - C(R-p, K) / C(R, K)."""
    out = {}
    for k in ks:
        total = 0.0
        for row in ious:
            r, p = len(row), sum(i >= threshold for i in row)
            kk = min(k, r)
            total += 1.0 - (math.comb(r - p, kk) / math.comb(r, kk) if r else 1.0)
        out[f"r@{k}"] = 100.0 * total / len(ious) if ious else 0.0
    return out


class PhraseRegionHead(nn.Module):
    """Phrase (mean of its token states) x regions -> scores (B, R): scaled dot product of projections."""

    def __init__(
        self, text_dim: int, vision_dim: int, region_offset: int = 0, dim: int | None = None
    ) -> None:
        super().__init__()
        dim = dim or text_dim
        self.query = nn.Linear(text_dim, dim)
        self.key = nn.Linear(vision_dim, dim)
        self.region_offset = region_offset
        self.scale = dim**-0.5

    def forward(self, enc, batch: Batch) -> Tensor:
        if enc.vision is None:
            raise ValueError("phrase grounding needs a model with a vision stream")
        spans = batch.meta["phrase_mask"].to(enc.text.device)  # (B, T) the phrase's tokens
        phrase = (enc.text * spans[..., None]).sum(1) / spans.sum(1, keepdim=True).clamp(min=1)
        regions = input_regions(enc.vision, self.region_offset, batch.region_mask.shape[1])
        scores = torch.einsum("bd,brd->br", self.query(phrase), self.key(regions)) * self.scale
        return scores.masked_fill(~batch.region_mask, PAD_LOGIT)


@dataclass
class Flickr30KEntitiesOptions(TaskOptions):
    max_regions: int | None = 100
    iou_threshold: float = 0.5  # a region grounds a phrase at IoU >= this (training target and R@K)
    gt_boxes: str = "union"  # an entity's boxes: "union" (the benchmark's protocol) or "any" of them

    def __post_init__(self) -> None:
        if self.gt_boxes not in ("union", "any"):
            raise ValueError(f"gt_boxes must be 'union' or 'any', got {self.gt_boxes!r}")


class Flickr30KEntitiesTask(Task):
    name = "flickr30k-entities"
    files = {
        "sentences": "the Sentences/ directory (<image>.txt with [/EN#id/type phrase] markup)",
        "annotations": "the Annotations/ directory (<image>.xml boxes per entity id)",
        "images": "the split's image list (train.txt / val.txt / test.txt)",
    }
    prediction_file = "flickr30k_entities_predictions.json"
    main_metric = "r@1"
    options_class = Flickr30KEntitiesOptions
    options: Flickr30KEntitiesOptions

    def _records(self, files: Mapping[str, Any], report: LoadReport) -> list[dict]:
        paths = self.require_files(files, "sentences", "annotations", "images")
        ids = [s.strip() for s in paths["images"].read_text(encoding="utf-8").splitlines() if s.strip()]
        if not ids:
            raise TaskDataError(f"{paths['images']}: no image ids")
        records = []
        for image in ids:
            sent_file = paths["sentences"] / f"{image}.txt"
            ann_file = paths["annotations"] / f"{image}.xml"
            for f in (sent_file, ann_file):
                if not f.is_file():
                    raise TaskDataError(f"{paths['images']}: image {image} has no {f}")
            boxes, no_box = read_annotation(ann_file)
            for line, sentence, phrases in read_sentences(sent_file):
                for p in phrases:
                    if p.entity_id not in boxes:
                        why = "no box (not visual / scene)" if (p.entity_id in no_box or "notvisual" in p.types) else \
                            "an entity id absent from the annotation"  # fmt: skip
                        report.add(f"phrases with {why}: not grounded", f"{sent_file.name}:{line}")
                        continue
                    gt = boxes[p.entity_id]
                    records.append({"image": image, "sentence": sentence, "line": line, "entity_id": p.entity_id,
                                    "phrase": p.text, "span": (p.start, p.end),
                                    "gt": [union_box(gt)] if self.options.gt_boxes == "union" else gt})  # fmt: skip
        return records

    def load(self, files: Mapping[str, Any], tokenizer: Any, features: Any = None) -> TaskDataset:
        if features is None:
            raise TaskDataError("phrase grounding needs a feature store (the candidate regions)")
        report = LoadReport()
        records = self._records(files, report)
        store = open_features(features, self.options.trust_pickle)
        missing = check_images([r["image"] for r in records], store, report, "flickr30k-entities")
        records = [r for r in records if r["image"] not in missing]
        max_len, max_regions, thr = (
            self.options.max_text_len,
            self.options.max_regions,
            self.options.iou_threshold,
        )
        kept = []
        for r in records:  # phrases cut off by max_text_len cannot be grounded: counted, not kept
            ids, span = self._encode(tokenizer, r)
            if not any(span) or len(ids) > max_len:
                report.add(f"phrases beyond max_text_len={max_len} tokens", f"{r['image']}:{r['line']}")
                continue
            kept.append(r)
        records = kept

        def build(r: dict) -> Example:
            ids, span = self._encode(tokenizer, r)
            regions = region_lookup(store, r["image"], max_regions)
            det = torch.tensor(regions.boxes, dtype=torch.float32)
            gt = torch.tensor(r["gt"], dtype=torch.float32)  # (G, 4)
            iou = box_iou(det[:, None], gt[None]).max(1).values  # (R,) best over the gt boxes
            meta = {"image_id": r["image"], "sentence": r["sentence"], "entity_id": r["entity_id"],
                    "phrase": r["phrase"], "span": span, "boxes": det}  # fmt: skip
            return Example([View(ids, [0] * len(ids), regions)], iou, meta)

        no_target = 0
        if records:
            probe = [build(r) for r in records[: min(len(records), 2000)]]
            no_target = sum(bool((e.target < thr).all()) for e in probe)
            if no_target:
                report.add(f"phrases no detected region overlaps at IoU >= {thr} (of the first {len(probe)}): "
                           "no training signal, misses in evaluation", str(no_target))  # fmt: skip
        return TaskDataset(records, build, report, {"labelled": True})

    def _encode(self, tokenizer: Any, r: dict) -> tuple[list[int], list[bool]]:
        """[CLS] sentence [SEP] tokenised piece by piece, so the phrase's tokens are known exactly."""
        s, (a, b) = r["sentence"], r["span"]
        pieces = [(s[:a], False), (s[a:b], True), (s[b:], False)]
        ids, span = [tokenizer.cls_id], [False]
        for text, inside in pieces:
            toks = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(text)) if text.strip() else []
            ids += toks
            span += [inside] * len(toks)
        ids.append(tokenizer.sep_id)
        span.append(False)
        return ids, span

    def build_head(self, encoder: EncoderModel) -> nn.Module:
        dims = probe_encoder(encoder)
        if dims.vision is None:
            raise ValueError(f"{type(encoder).__name__} has no vision stream: phrase grounding needs one")
        return PhraseRegionHead(encoder.config.dim, dims.vision, dims.region_offset)

    def forward(self, model: TaskModel, batch: Batch) -> Tensor:
        """The head reads which tokens form the phrase: set on the batch before the forward pass."""
        self._phrase_mask(batch)
        return model(batch)

    @staticmethod
    def _phrase_mask(batch: Batch) -> None:
        t = batch.text_ids.shape[1]
        mask = torch.zeros(batch.size, t, dtype=torch.bool)
        for i, m in enumerate(batch.meta["items"]):
            mask[i, : len(m["span"])] = torch.tensor(m["span"])
        batch.meta["phrase_mask"] = mask

    def loss(self, logits: Tensor, batch: Batch) -> LossOutput:
        """KL(uniform over regions at IoU >= threshold || softmax over the real regions), mean over phrases
        that have such regions."""
        positive = (batch.labels >= self.options.iou_threshold) & batch.region_mask
        counts = positive.sum(1, keepdim=True)
        target = positive.float() / counts.clamp(min=1)
        logp = logits.float().log_softmax(1)
        has = counts.squeeze(1) > 0
        # KL = sum t (log t - log p); terms with t = 0 vanish
        kl = (target * (torch.log(target.clamp(min=1e-12)) - logp)).masked_fill(~positive, 0.0).sum(1)
        loss = kl[has].mean() if bool(has.any()) else logits.sum() * 0.0
        with torch.no_grad():
            hit = positive.gather(1, logits.argmax(1, keepdim=True)).float().mean()
        return LossOutput(loss, {"grounding_loss": float(loss.detach()), "grounding_r@1": float(hit)})

    def predict(self, logits: Tensor, batch: Batch) -> list[dict]:
        out = []
        for b, m in enumerate(batch.meta["items"]):
            n = int(batch.region_mask[b].sum())
            order = logits[b, :n].argsort(descending=True)[: max(KS)].tolist()
            ious = batch.labels[b, :n]
            out.append({"image_id": m["image_id"], "sentence": m["sentence"], "entity_id": m["entity_id"],
                        "phrase": m["phrase"], "boxes": [m["boxes"][k].tolist() for k in order],
                        "ious": [float(ious[k]) for k in order], "all_ious": ious.tolist()})  # fmt: skip
        return out

    def predict_split(self, model: TaskModel, dataset: TaskDataset, run: EvalRun) -> tuple[dict, list[dict]]:
        """As the default; each prediction's IoUs with every region serve the chance figure only."""
        metrics, predictions = super().predict_split(model, dataset, run)
        for p in predictions:
            p.pop("all_ious")
        return metrics, predictions

    def score(self, predictions: list[dict], dataset: TaskDataset) -> dict[str, Any]:
        thr = self.options.iou_threshold
        out = recall_at_k([p["ious"] for p in predictions], thr)
        out["chance"] = chance_recall([p["all_ious"] for p in predictions if "all_ious" in p], thr)
        out.update(
            {"num_phrases": len(predictions), "iou_threshold": thr, "gt_boxes": self.options.gt_boxes}
        )
        return out

    def write_predictions(self, predictions: list[dict], path: str | os.PathLike) -> Path:
        return write_json([{k: v for k, v in p.items() if k != "all_ious"} for p in predictions], path)
