"""Unicoder-VL: A Universal Encoder for Vision and Language by Cross-modal Pre-training
(Li et al. 2020, arXiv:1908.06066).

No public reference code exists: this is implemented from the paper. Architecture: BERT text
embeddings (word + position + segment, LN); each region embedded as ``LN(W_f f + W_l l5)`` — a fully
connected layer on the 2048-d RoI feature and one on the 5-d location [x1, y1, x2, y2, w*h] (normalised
coordinates and area fraction), summed, then LayerNorm; regions follow the text in one sequence through
12 shared post-LN Transformer layers (initialised from BERT-base); tanh pooler on [CLS].
Pre-training heads: masked LM (tied), Visual-Linguistic Matching (index 1 = matches) and Masked Object
Classification — the detector label of a masked region (1601 classes by default).

Masked regions (MOC) are signalled by the optional ``region_masked`` (B, R) bool input: the paper zeroes
their features, so we do (their location is kept). The paper gives regions no segment or position
embedding and we add none. The whole-image region (``global_region``) is off by default.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mmbert.config import GlobalRegion, ModelConfig, check_global_region
from mmbert.models.base import TINY_REGION_FEAT_DIM, TINY_SIZES, text_embeddings_plan
from mmbert.models.heads import PretrainingHeads
from mmbert.models.region_embeddings import LocatedRegionEmbeddings
from mmbert.models.single_stream import SingleStreamModel
from mmbert.nn import PairHead, RegionHeads, TextEmbeddings


@dataclass
class UnicoderVLConfig(ModelConfig):
    model_type = "unicoder_vl"

    region_feat_dim: int = 2048
    num_region_classes: int = 1601  # Masked Object Classification targets (detector classes)
    global_region: GlobalRegion = "none"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_global_region(self)
        self.check_positive("region_feat_dim", "num_region_classes")


class UnicoderVLRegionEmbeddings(LocatedRegionEmbeddings):
    """``LN(W_f f + W_l [x1, y1, x2, y2, area])``; masked regions have their feature zeroed."""

    def forward(self, feats: Tensor, boxes: Tensor, masked: Tensor | None = None) -> Tensor:
        """feats (B, R, F), boxes (B, R, 4), masked (B, R) -> (B, R, D)."""
        if masked is not None:
            feats = feats.masked_fill(masked[..., None], 0.0)
        return super().forward(feats, boxes)


class UnicoderVLEmbeddings(nn.Module):
    def __init__(self, c: UnicoderVLConfig) -> None:
        super().__init__()
        self.text = TextEmbeddings.from_config(c)
        self.region = UnicoderVLRegionEmbeddings.from_config(c)

    def forward(self, text_ids, segment_ids, feats, boxes, masked=None) -> Tensor:
        return torch.cat([self.text(text_ids, segment_ids), self.region(feats, boxes, masked)], dim=1)


class UnicoderVL(SingleStreamModel[UnicoderVLConfig]):
    embeddings_class = UnicoderVLEmbeddings
    masked_region_input = True

    def build_pretraining_heads(self) -> PretrainingHeads:
        c = self.config
        return self.tied_heads(
            pair=PairHead(c.dim),
            region=RegionHeads(c.dim, {"class": c.num_region_classes}, c.layer_norm_eps),
        )

    def layer_plan(self) -> list[str]:
        c = self.config
        return [
            text_embeddings_plan(c, "embeddings.text"),
            f"embeddings.region: LN(Linear({c.region_feat_dim}, {c.dim}) + Linear(5, {c.dim}))"
            f" (global region: {c.global_region})",
            *self.block_plan(),
        ]


def unicoder_vl_base() -> UnicoderVLConfig:
    """Unicoder-VL base: BERT-base sizes, 2048-d RoI features, 1601 detector classes."""
    return UnicoderVLConfig()


def unicoder_vl_tiny() -> UnicoderVLConfig:
    """A tiny Unicoder-VL for tests."""
    return UnicoderVLConfig(
        **TINY_SIZES,
        region_feat_dim=TINY_REGION_FEAT_DIM,
        num_region_classes=11,
    )
