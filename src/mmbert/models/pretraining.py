"""An encoder with its pre-training heads: what ``mmbert.load_pretraining`` returns."""

from __future__ import annotations

import os
from pathlib import Path

from torch import Tensor, nn

from mmbert.models.base import EncoderModel, save_module
from mmbert.models.heads import PretrainingHeads
from mmbert.models.outputs import PretrainingOutput

__all__ = ["PretrainingHeads", "PretrainingModel", "PretrainingOutput"]


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
