"""An encoder with its pre-training heads: what ``mmbert.load_pretraining`` returns."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor, nn

from mmbert.models.base import Encoded, EncoderModel, save_module
from mmbert.nn.heads import MLMHead


@dataclass
class PretrainingOutput:
    """Logits of every head the model has (None where it has none).

    mlm_logits (B, T, V) — or (N, V) when ``mlm_positions`` selected N tokens; pair_logits (B, 2) with
    index 1 = matches / is next; region_class_logits (B, R, C); region_attr_logits (B, R, A);
    region_feat_pred (B, R, F); answer_logits (B, A).
    """

    encoded: Encoded
    mlm_logits: Tensor | None = None
    pair_logits: Tensor | None = None
    region_class_logits: Tensor | None = None
    region_attr_logits: Tensor | None = None
    region_feat_pred: Tensor | None = None
    answer_logits: Tensor | None = None


class PretrainingHeads(nn.Module):
    """The heads a model pre-trains with. ``region`` maps the vision stream to a dict whose keys are
    among ``class``, ``attr`` and ``feat``; ``answer`` maps the pooled output to answer logits."""

    def __init__(
        self,
        mlm: MLMHead | None = None,
        pair: nn.Module | None = None,
        region: nn.Module | None = None,
        answer: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.mlm = mlm
        self.pair = pair
        self.region = region
        self.answer = answer

    def forward(self, enc: Encoded, mlm_positions: Tensor | None = None) -> PretrainingOutput:
        out = PretrainingOutput(encoded=enc)
        if self.mlm is not None:
            out.mlm_logits = self.mlm(enc.text, mlm_positions)
        if self.pair is not None:
            out.pair_logits = self.pair(enc.pooled)
        if self.region is not None and enc.vision is not None:
            region = self.region(enc.vision)
            out.region_class_logits = region.get("class")
            out.region_attr_logits = region.get("attr")
            out.region_feat_pred = region.get("feat")
        if self.answer is not None:
            out.answer_logits = self.answer(enc.pooled)
        return out


class PretrainingModel(nn.Module):
    """``encoder`` + ``heads``. Same inputs as the encoder, plus ``mlm_positions`` (bool (B, T)): when
    given, MLM logits are computed only there (training does this; the plain call scores every token)."""

    def __init__(self, encoder: EncoderModel, heads: PretrainingHeads | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.heads = heads if heads is not None else encoder.build_pretraining_heads()

    @property
    def config(self):
        return self.encoder.config

    def forward(
        self,
        text_ids: Tensor,
        text_mask: Tensor | None = None,
        segment_ids: Tensor | None = None,
        region_feats: Tensor | None = None,
        region_boxes: Tensor | None = None,
        region_mask: Tensor | None = None,
        mlm_positions: Tensor | None = None,
        output_attentions: bool = False,
        **model_inputs: Tensor,
    ) -> PretrainingOutput:
        enc = self.encoder(
            text_ids,
            text_mask=text_mask,
            segment_ids=segment_ids,
            region_feats=region_feats,
            region_boxes=region_boxes,
            region_mask=region_mask,
            output_attentions=output_attentions,
            **model_inputs,
        )
        return self.heads(enc, mlm_positions)

    def save(self, path: str | os.PathLike) -> Path:
        """Encoder and heads in one directory (``encoder.*`` and ``heads.*`` keys)."""
        return save_module(
            self, self.encoder.config, Path(path), extra_config={"mmbert_heads": "pretraining"}
        )
