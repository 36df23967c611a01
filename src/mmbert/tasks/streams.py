"""Dual-stream encoders split into their single-modality part and their cross-modal part, for retrieval.

Scoring N captions x M images with a dual-stream model runs the text-only layers M times per caption
and the vision-only layers N times per image, although their output does not depend on the other
modality. Split here: each caption and each image goes through its own stream once
(``text(...)``, ``vision(...)`` -> dicts of batch-first tensors), then only the cross-modal layers run
per pair (``cross(text_state, vision_state) -> Encoded``). The result equals the model's ``forward``
(checked by the tests to 1e-5); the split reads the model's sub-modules, so it is written per model
type: LXMERT (language + object-relationship layers alone, cross-modality layers per pair) and
ViLBERT (the steps of its run plan before the first co-attention alone, the rest per pair).
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from mmbert.data.boxes import add_global_region, check_region_inputs, clear_padded_regions
from mmbert.models.base import Encoded, EncoderModel, check_text_inputs
from mmbert.nn import key_padding_bias


class StreamSplit(Protocol):
    def text(self, text_ids: Tensor, text_mask: Tensor, segment_ids: Tensor) -> dict[str, Tensor]: ...

    def vision(
        self, region_feats: Tensor, region_boxes: Tensor, region_mask: Tensor
    ) -> dict[str, Tensor]: ...

    def cross(self, text: dict[str, Tensor], vision: dict[str, Tensor]) -> Encoded: ...


class LxmertSplit:
    """LXMERT: embeddings + the 9 language layers | embeddings + the 5 object-relationship layers;
    per pair: the cross-modality layers and the pooler."""

    def __init__(self, model: EncoderModel) -> None:
        self.m = model

    def text(self, text_ids: Tensor, text_mask: Tensor, segment_ids: Tensor) -> dict[str, Tensor]:
        m = self.m
        check_text_inputs(m.config, text_ids, text_mask, segment_ids)
        x = m.embeddings(text_ids, segment_ids)
        bias = key_padding_bias(text_mask, x.dtype)
        for layer in m.text_layers:
            x, _ = layer(x, bias, False)
        return {"states": x, "mask": text_mask}

    def vision(self, region_feats: Tensor, region_boxes: Tensor, region_mask: Tensor) -> dict[str, Tensor]:
        m = self.m
        check_region_inputs(region_feats, region_boxes, region_mask, m.config.region_feat_dim)
        feats, boxes = clear_padded_regions(region_feats, region_boxes, region_mask)
        x = m.region_embeddings(feats, boxes)
        bias = key_padding_bias(region_mask, x.dtype)
        for layer in m.vision_layers:
            x, _ = layer(x, bias, False)
        return {"states": x, "mask": region_mask}

    def cross(self, text: dict[str, Tensor], vision: dict[str, Tensor]) -> Encoded:
        m = self.m
        t, v = text["states"], vision["states"]
        tb, vb = key_padding_bias(text["mask"], t.dtype), key_padding_bias(vision["mask"], v.dtype)
        for layer in m.cross_layers:
            t, v, _ = layer(t, v, tb, vb, False)
        return Encoded(text=t, vision=v, pooled=m.pooler(t))


class ViLBertSplit:
    """ViLBERT: the run plan's text and vision layers before the first co-attention run alone; the
    rest of the plan (co-attention onwards) and the fused poolers run per pair."""

    def __init__(self, model: EncoderModel) -> None:
        self.m = model
        plan = list(model.plan)
        first_co = next((i for i, (kind, _) in enumerate(plan) if kind == "co"), len(plan))
        self.prefix, self.rest = plan[:first_co], plan[first_co:]

    def text(self, text_ids: Tensor, text_mask: Tensor, segment_ids: Tensor) -> dict[str, Tensor]:
        m = self.m
        check_text_inputs(m.config, text_ids, text_mask, segment_ids)
        x = m.embeddings(text_ids, segment_ids)
        bias = key_padding_bias(text_mask, x.dtype)
        for kind, i in self.prefix:
            if kind == "text":
                x, _ = m.text_layers[i](x, bias, False)
        return {"states": x, "mask": text_mask}

    def vision(self, region_feats: Tensor, region_boxes: Tensor, region_mask: Tensor) -> dict[str, Tensor]:
        m = self.m
        check_region_inputs(region_feats, region_boxes, region_mask, m.config.region_feat_dim)
        feats, boxes = clear_padded_regions(region_feats, region_boxes, region_mask)
        feats, boxes, real = add_global_region(feats, boxes, region_mask, "first")
        x = m.region_embeddings(feats, boxes)
        bias = key_padding_bias(real, x.dtype)
        for kind, i in self.prefix:
            if kind == "vision":
                x, _ = m.vision_layers[i](x, bias, False)
        return {"states": x, "mask": real}

    def cross(self, text: dict[str, Tensor], vision: dict[str, Tensor]) -> Encoded:
        m = self.m
        t, v = text["states"], vision["states"]
        tb, vb = key_padding_bias(text["mask"], t.dtype), key_padding_bias(vision["mask"], v.dtype)
        for kind, i in self.rest:
            if kind == "text":
                t, _ = m.text_layers[i](t, tb, False)
            elif kind == "vision":
                v, _ = m.vision_layers[i](v, vb, False)
            else:
                t, v, _, _ = m.co_layers[i](t, v, tb, vb, False)
        return Encoded(text=t, vision=v, pooled=m.text_pooler(t) * m.vision_pooler(v))


SPLITS = {"lxmert": LxmertSplit, "vilbert": ViLBertSplit}


def split_encoder(encoder: EncoderModel) -> StreamSplit | None:
    """The stream split for this encoder's model type, or None (single-stream models have none)."""
    cls = SPLITS.get(getattr(encoder.config, "model_type", ""))
    return cls(encoder) if cls is not None else None


@torch.no_grad()
def encode_batched(fn, count: int, batch_size: int) -> dict[str, Tensor]:
    """Run ``fn(indices)`` over 0..count-1 in batches and concatenate each returned tensor."""
    parts: dict[str, list[Tensor]] = {}
    for s in range(0, count, batch_size):
        for k, v in fn(torch.arange(s, min(s + batch_size, count))).items():
            parts.setdefault(k, []).append(v)
    return {k: torch.cat(v) for k, v in parts.items()}
