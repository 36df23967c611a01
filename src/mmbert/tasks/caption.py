"""Image captioning: a single-stream encoder (or UNIMO) generates the caption through the captioning mask.

The joint sequence is ``[caption ; regions]`` (UNIMO: ``[regions ; caption]``, its ``vision_first``): the
regions (and the whole-image region or [END] a model adds) see each other only, caption tokens see every
region and the earlier caption tokens (``mmbert.nn.masks.captioning_mask``: Unified VLP, Zhou et al. 2020,
arXiv 1909.11059; UNIMO's ``img2txt`` mask, PaddlePaddle/Research ``NLP/UNIMO/src/reader/img2txt_reader.py``).
The caption is ``[CLS] w_1 .. w_n [SEP]``; [SEP] is the end token. The head is the MLM head, tied to the
word embeddings (started from the pre-trained one when fine-tuning from a pre-training checkpoint).

Training (``objective``):

- ``"next_token"`` (default): position i predicts token i+1 under the causal caption mask; decoding reads
  the last position.
- ``"masked"``: Unified VLP's seq2seq masked LM: a fraction ``mask_prob`` of the caption tokens (the end
  token included, at least one per caption) become [MASK] and are predicted in place; decoding appends a
  [MASK] and reads it. Masks are drawn from torch's global generator, which the trainer seeds and
  checkpoints (exact resume).

Both use cross-entropy with ``label_smoothing`` (0.1, as VLP). Generation: greedy or beam search
(``mmbert.generation``: ``beam_size``, ``length_penalty``, ``no_repeat_ngram_size``, ``max_caption_len``,
``min_caption_len``), batched, on the model's device; special tokens other than the end token are never
generated. Files: the COCO captions JSON (``captions``) or a Karpathy split JSON (``karpathy``, with
``split``). Predictions: the official results file ``[{"image_id", "caption"}]``; metrics through
pycocoevalcap (``tasks/caption_metrics.py``).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmbert.data.batch import Batch
from mmbert.generation import GenerationConfig, generate
from mmbert.models.base import Encoded, EncoderModel
from mmbert.nn.heads import MLMHead
from mmbert.nn.masks import captioning_mask
from mmbert.objectives.base import LossOutput
from mmbert.tasks.base import EvalRun, Task, TaskOptions
from mmbert.tasks.features import check_images, open_features, region_lookup
from mmbert.tasks.files import read_json, require_fields, write_json
from mmbert.tasks.model import TaskModel
from mmbert.tasks.records import Example, LoadReport, TaskDataError, TaskDataset, View, encode_text

OBJECTIVES = ("next_token", "masked")


class CaptionHead(nn.Module):
    """Text states -> vocabulary logits (B, T, V) through the tied MLM head."""

    def __init__(self, dim: int, word_embeddings: nn.Embedding, eps: float = 1e-12) -> None:
        super().__init__()
        self.lm = MLMHead(dim, word_embeddings, eps)

    def forward(self, enc: Encoded, batch: Batch | None = None) -> Tensor:
        return self.lm(enc.text)


def supports_visibility_mask(encoder: EncoderModel) -> bool:
    """Whether the encoder takes an ``attention_mask`` over one joint sequence (in its forward, or in the
    ``encode_inputs`` that ``EncoderModel.forward`` hands its inputs to) and says where its regions sit."""
    calls = (encoder.forward, getattr(encoder, "encode_inputs", encoder.forward))
    takes = any("attention_mask" in inspect.signature(call).parameters for call in calls)
    return takes and hasattr(encoder, "vision_mask")


def caption_visibility(encoder: EncoderModel, inputs: Mapping[str, Tensor]) -> Tensor:
    """The captioning mask over this encoder's joint sequence [text ; vision elements] (B, L, L); padded
    regions are hidden by the model's own key mask on top of it."""
    vision_len = encoder.vision_mask(dict(inputs)).shape[1]
    text_mask = inputs["text_mask"]
    visual = torch.ones(text_mask.shape[0], vision_len, dtype=torch.bool, device=text_mask.device)
    # single-stream models join [text ; vision]; UNIMO joins [vision ; text] (``vision_first``)
    return captioning_mask(text_mask, visual, caption_first=not getattr(encoder, "vision_first", False))


def fixed_text_window(inputs: dict[str, Tensor], length: int, pad_id: int) -> dict[str, Tensor]:
    """The text padded to ``length`` with [PAD] tokens marked real (see ``CaptionTask.encode``)."""
    ids = inputs["text_ids"]
    extra = length - ids.shape[1]
    if extra < 0:
        raise ValueError(f"caption of {ids.shape[1]} tokens exceeds max_text_len={length}")
    if extra == 0 and bool(inputs["text_mask"].all()):
        return inputs
    pad = ids.new_full((ids.shape[0], extra), pad_id)
    return {**inputs, "text_ids": torch.cat([ids.masked_fill(~inputs["text_mask"], pad_id), pad], 1),
            "text_mask": torch.ones(ids.shape[0], length, dtype=torch.bool, device=ids.device),
            "segment_ids": torch.cat([inputs["segment_ids"], torch.zeros_like(pad)], 1)}  # fmt: skip


@dataclass
class CaptionOptions(TaskOptions):
    """Captioning settings: the split, the training objective, and the decoding of ``evaluate``."""

    split: str = "train"
    objective: str = "next_token"  # one of OBJECTIVES
    label_smoothing: float = 0.1
    mask_prob: float = 0.15  # the masked objective: caption tokens masked per step
    image_key: str = "auto"
    beam_size: int = 3
    length_penalty: float = 0.0
    no_repeat_ngram_size: int = 0
    max_caption_len: int = 20
    min_caption_len: int = 0
    caption_tokenizer: str = "ptb"
    metrics: list[str] | None = None
    special_ids: dict[str, int] | None = None  # [CLS] / [SEP] / [MASK] / [PAD] ids, set by load

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"caption objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")


class CaptionTask(Task):
    name = "caption"
    files = {
        "captions": "COCO captions JSON (captions_train2014.json): images + annotations {image_id, caption}",
        "karpathy": "Karpathy split JSON (dataset_coco.json / dataset_flickr30k.json), with task.split",
    }
    prediction_file = "captions_results.json"
    main_metric = "cider"

    options_class = CaptionOptions
    options: CaptionOptions

    def generation_config(self) -> GenerationConfig:
        o = self.options
        # [CLS] + the caption (+ [MASK] when decoding the masked objective) must fit max_text_len
        longest = o.max_text_len - (2 if o.objective == "masked" else 1)
        return GenerationConfig(max_length=min(o.max_caption_len, longest), min_length=o.min_caption_len,
                                beam_size=o.beam_size, length_penalty=o.length_penalty,
                                no_repeat_ngram_size=o.no_repeat_ngram_size)  # fmt: skip

    @property
    def special(self) -> dict[str, int]:
        if not self.options.special_ids:
            raise ValueError(
                "the caption task has no special token ids yet: load a split with a tokenizer first"
            )
        return self.options.special_ids

    # data -------------------------------------------------------------------------------------------
    def _read(self, files: Mapping[str, Any]) -> tuple[list[dict], dict[str, list[str]]]:
        """(records {image, image_id, caption}, references by image) of the split."""
        if "karpathy" in files:
            path = self.require_files(files, "karpathy")["karpathy"]
            data = read_json(path)
            if not isinstance(data, dict) or "images" not in data:
                raise TaskDataError(f"{path}: not a Karpathy split file (no 'images' list)")
            records, refs = [], {}
            for i, img in enumerate(data["images"]):
                where = f"{path}: images[{i}]"
                require_fields(img, ("split", "sentences"), where)
                if img["split"] != self.options.split and not (
                    self.options.split == "train" and img["split"] == "restval"
                ):
                    continue
                key = self.options.image_key
                key = ("cocoid" if "cocoid" in img else "filename") if key == "auto" else key
                require_fields(img, (key,), where)
                image_id = img[key] if key != "filename" else Path(img[key]).stem
                caps = []
                for j, s in enumerate(img["sentences"]):
                    text = s.get("raw") if isinstance(s, Mapping) else None
                    if not isinstance(text, str):
                        raise TaskDataError(f"{where}.sentences[{j}]: no 'raw' sentence")
                    caps.append(text)
                if not caps:
                    raise TaskDataError(f"{where}: no sentences")
                refs[str(image_id)] = caps
                records += [{"image": str(image_id), "image_id": image_id, "caption": c} for c in caps]
            if not records:
                raise TaskDataError(f"{path}: no images in split {self.options.split!r}")
            return records, refs
        path = self.require_files(files, "captions")["captions"]
        from mmbert.tasks.caption_metrics import read_caption_annotations

        refs = read_caption_annotations(path)
        data = read_json(path)
        ids = {str(a["image_id"]): a["image_id"] for a in data["annotations"]}
        records = [{"image": k, "image_id": ids[k], "caption": c} for k, caps in refs.items() for c in caps]
        return records, refs

    def load(self, files: Mapping[str, Any], tokenizer: Any, features: Any = None) -> TaskDataset:
        if features is None:
            raise TaskDataError("captioning needs a feature store (the images' regions)")
        records, refs = self._read(files)
        self.options.special_ids = {"cls": tokenizer.cls_id, "sep": tokenizer.sep_id, "mask": tokenizer.mask_id,
                                       "pad": tokenizer.pad_id, "unk": tokenizer.unk_id}  # fmt: skip
        report = LoadReport()
        store = open_features(features, self.options.trust_pickle)
        missing = check_images([r["image"] for r in records], store, report, "caption")
        records = [r for r in records if r["image"] not in missing]
        refs = {k: v for k, v in refs.items() if k not in missing}
        max_len, max_regions = self.options.max_text_len, self.options.max_regions
        for r in records:
            if len(tokenizer.tokenize(r["caption"])) + 2 > max_len:
                report.add(
                    f"captions truncated to max_text_len={max_len} tokens (end token kept)", r["image"]
                )

        def build(r: dict) -> Example:
            ids, segs = encode_text(tokenizer, r["caption"], max_length=max_len)
            regions = region_lookup(store, r["image"], max_regions)
            return Example([View(ids, segs, regions)], None, {"image": r["image"], "image_id": r["image_id"]})

        info = {"labelled": True, "references": refs, "tokenizer": tokenizer, "split": self.options.split}
        return TaskDataset(records, build, report, info)

    def evaluation_set(self, dataset: TaskDataset) -> TaskDataset:
        """One item per image (its first caption as the loss target), for generation and scoring."""
        seen: dict[str, dict] = {}
        for r in dataset.records:
            seen.setdefault(r["image"], r)
        return TaskDataset(list(seen.values()), dataset._build, dataset.report, dataset.info)

    # model ------------------------------------------------------------------------------------------
    def build_head(self, encoder: EncoderModel) -> nn.Module:
        if not supports_visibility_mask(encoder):
            raise ValueError(
                f"{type(encoder).__name__} takes no attention_mask over one joint sequence: captioning runs on "
                "the single-stream models (and UNIMO), whose seq2seq mask covers text and regions together"
            )
        c = encoder.config
        return CaptionHead(c.dim, encoder.word_embeddings, c.layer_norm_eps)

    def head_from_pretraining(self, pretraining: nn.Module) -> CaptionHead:
        """The pre-trained MLM head (transform and bias; the decoder is tied) as the caption head."""
        head = self.build_head(pretraining.encoder)
        mlm = getattr(getattr(pretraining, "heads", None), "mlm", None)
        if mlm is not None:
            head.lm.load_state_dict(mlm.state_dict())
        return head

    def encode(self, model: TaskModel, inputs: dict[str, Tensor]) -> Tensor:
        """Vocabulary logits (B, T, V) of the caption positions under the captioning mask.

        Models whose region embeddings depend on the text length (VL-BERT: regions at position n) see the
        text padded with real [PAD] tokens to ``max_text_len``: hidden from the earlier positions by the
        causal mask, they keep the regions in place whether the caption is complete (training) or growing
        (decoding), so both see the same inputs."""
        t = inputs["text_ids"].shape[1]
        if getattr(model.encoder, "region_position_follows_text", False):
            inputs = fixed_text_window(inputs, self.options.max_text_len, self.special["pad"])
        enc = model.encoder(**inputs, attention_mask=caption_visibility(model.encoder, inputs))
        return model.head(enc)[:, :t]

    def model_step(self, model: TaskModel, batch: Batch) -> LossOutput:
        inputs = batch.encoder_inputs(model.encoder)
        ids, real = inputs["text_ids"], inputs["text_mask"]
        if self.options.objective == "next_token":
            logits = self.encode(model, inputs)[:, :-1]
            labels = ids[:, 1:].masked_fill(~real[:, 1:], -100)
        else:
            caption = real.clone()
            caption[:, 0] = False  # [CLS] is never a target
            draw = (torch.rand(ids.shape, device=ids.device) < self.options.mask_prob) & caption
            # at least one target per caption: its last real token (the end token) when none was drawn
            last = real.long().sum(1) - 1
            none = ~draw.any(1)
            draw[none, last[none]] = True
            inputs = {**inputs, "text_ids": ids.masked_fill(draw, self.special["mask"])}
            logits = self.encode(model, inputs)
            labels = ids.masked_fill(~draw, -100)
        return self.loss(logits, labels)

    def loss(self, logits: Tensor, labels: Tensor) -> LossOutput:  # type: ignore[override]
        flat = logits.reshape(-1, logits.shape[-1]).float()
        target = labels.reshape(-1)
        loss = F.cross_entropy(
            flat, target, ignore_index=-100, label_smoothing=self.options.label_smoothing
        )
        with torch.no_grad():
            keep = target != -100
            acc = (
                (flat[keep].argmax(-1) == target[keep]).float().mean()
                if bool(keep.any())
                else flat.new_zeros(())
            )
        return LossOutput(loss, {"caption_loss": float(loss.detach()), "caption_acc": float(acc)})

    # generation -------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self, model: TaskModel, batch: Batch, config: GenerationConfig | None = None
    ) -> list[list[int]]:
        """Caption token ids (without [CLS] / end token) for every example of ``batch``."""
        config = config or self.generation_config()
        sp = self.special
        masked = self.options.objective == "masked"
        feats, boxes, rmask = batch.region_feats, batch.region_boxes, batch.region_mask
        sizes = batch.encoder_inputs(model.encoder).get("image_size")
        device = feats.device
        banned = torch.tensor([sp[k] for k in ("cls", "mask", "pad", "unk")], device=device)

        def step(tokens: Tensor, rows: Tensor) -> Tensor:
            n = tokens.shape[0]
            parts = [torch.full((n, 1), sp["cls"], dtype=torch.long, device=device), tokens]
            if masked:
                parts.append(torch.full((n, 1), sp["mask"], dtype=torch.long, device=device))
            ids = torch.cat(parts, 1)
            inputs = {"text_ids": ids, "text_mask": torch.ones_like(ids, dtype=torch.bool),
                      "segment_ids": torch.zeros_like(ids), "region_feats": feats[rows],
                      "region_boxes": None if boxes is None else boxes[rows], "region_mask": rmask[rows],
                      **({} if sizes is None else {"image_size": sizes[rows]})}  # fmt: skip
            logits = self.encode(model, inputs)[:, -1].float()
            logits[:, banned] = -torch.inf
            return logits.log_softmax(-1)

        hyps = generate(step, batch.size, sp["sep"], config, device=device)
        return [h.tokens for h in hyps]

    def predict_split(self, model: TaskModel, dataset: TaskDataset, run: EvalRun) -> tuple[dict, list[dict]]:
        """Generate one caption per image and score them against the split's references."""
        from mmbert.tasks.caption_metrics import METRICS, score_captions

        tokenizer = dataset.info["tokenizer"]
        predictions = []
        for batch in run.batches(self.evaluation_set(dataset), model.config.pad_token_id, "generate captions"):
            for meta, ids in zip(batch.meta["items"], self.generate(model, batch)):
                predictions.append({"image_id": meta["image_id"], "caption": tokenizer.decode(ids)})
        refs = dataset.info["references"]
        metrics = score_captions({str(p["image_id"]): p["caption"] for p in predictions},
                                 {str(p["image_id"]): refs[str(p["image_id"])] for p in predictions},
                                 metrics=self.options.metrics or METRICS,
                                 tokenizer=self.options.caption_tokenizer)  # fmt: skip
        metrics["split"] = dataset.info["split"]
        generation = ("beam_size", "length_penalty", "no_repeat_ngram_size", "max_caption_len", "min_caption_len")
        metrics["generation"] = {k: getattr(self.options, k) for k in generation}
        return metrics, predictions

    def write_predictions(self, predictions: list[dict], path: str | os.PathLike) -> Path:
        return write_json([{"image_id": p["image_id"], "caption": p["caption"]} for p in predictions], path)
