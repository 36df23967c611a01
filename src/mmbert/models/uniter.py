"""UNITER: UNiversal Image-TExt Representation Learning (Chen et al. 2020, arXiv:1909.11740).

Architecture (ChenRocks/UNITER model/model.py): BERT text embeddings (word + position + segment, LN);
each region embedded as ``LN( LN(W_f f) + LN(W_p p7) + type(1) )`` with the 7-d location
[x1, y1, x2, y2, w, h, w*h] and the text's segment table at type 1; the two are concatenated and run
through 12 shared post-LN Transformer layers; tanh pooler on [CLS]. Pre-training heads: masked LM
(tied), image-text matching (index 1 = matches), masked region classification against the detector's
1601 classes (MRC / MRC-KL) and masked region feature regression (MRFR, decoder tied to ``W_f``).

Masked regions (MRM) are signalled by the optional ``region_masked`` (B, R) bool input: as in UNITER
their features are zeroed and a learned ``mask_embedding`` vector is added before ``W_f``. Deviations:
none in the computation; UNITER removes padding by gathering, we mask keys (same outputs). The whole-
image region (``global_region``) is off by default (VOLTA's controlled setting puts it first). The
WRA optimal-transport objective is not part of the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmbert.config import GlobalRegion, ModelConfig, check_global_region
from mmbert.data.boxes import location_features
from mmbert.models.base import TINY_REGION_FEAT_DIM, TINY_SIZES, init_heads
from mmbert.models.heads import PretrainingHeads
from mmbert.models.single_stream import SingleStreamModel
from mmbert.nn import MLMHead, PairHead, PredictionTransform, TextEmbeddings


@dataclass
class UniterConfig(ModelConfig):
    model_type = "uniter"

    region_feat_dim: int = 2048
    num_region_classes: int = 1601  # detector classes of the MRC head (Visual Genome 1600 + background)
    global_region: GlobalRegion = "none"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_global_region(self)
        if self.type_vocab_size < 2:
            raise ValueError("UniterConfig.type_vocab_size must be >= 2 (regions use segment type 1)")
        for name in ("region_feat_dim", "num_region_classes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"UniterConfig.{name} must be positive, got {getattr(self, name)}")


class UniterRegionEmbeddings(nn.Module):
    """``LN(LN(W_f f) + LN(W_p p7) + segment)``; masked regions: zero feature + ``mask_embedding``."""

    def __init__(self, c: UniterConfig) -> None:
        super().__init__()
        self.feat_proj = nn.Linear(c.region_feat_dim, c.dim)
        self.feat_norm = nn.LayerNorm(c.dim, eps=c.layer_norm_eps)
        self.loc_proj = nn.Linear(7, c.dim)
        self.loc_norm = nn.LayerNorm(c.dim, eps=c.layer_norm_eps)
        # model/model.py: nn.Embedding(2, img_dim, padding_idx=0) under init_weights, i.e. N(0, 0.02); its
        # row 0 is zeroed at every forward, row 1 (this vector) is what a masked region receives
        self.mask_embedding = nn.Parameter(torch.empty(c.region_feat_dim).normal_(0.0, c.init_std))
        self.norm = nn.LayerNorm(c.dim, eps=c.layer_norm_eps)
        self.dropout = c.dropout

    def forward(self, feats: Tensor, boxes: Tensor, segment: Tensor, masked: Tensor | None = None) -> Tensor:
        """feats (B, R, F), boxes (B, R, 4), segment (D,), masked (B, R) -> (B, R, D)."""
        if masked is not None:
            m = masked[..., None]
            feats = torch.where(m, self.mask_embedding.to(feats.dtype), feats)
        h = self.feat_norm(self.feat_proj(feats)) + self.loc_norm(
            self.loc_proj(location_features(boxes, "7d"))
        )
        return F.dropout(self.norm(h + segment), self.dropout, self.training)


class UniterEmbeddings(nn.Module):
    def __init__(self, c: UniterConfig) -> None:
        super().__init__()
        self.text = TextEmbeddings.from_config(c)
        self.region = UniterRegionEmbeddings(c)

    def forward(self, text_ids, segment_ids, feats, boxes, masked=None) -> Tensor:
        text = self.text(text_ids, segment_ids)
        vision = self.region(feats, boxes, self.text.segment.weight[1], masked)
        return torch.cat([text, vision], dim=1)


class UniterRegionHeads(nn.Module):
    """UNITER's two region heads, each with its own transform (dense, GELU, LN): ``class`` (MRC, the
    detector's classes) and ``feat`` (MRFR), whose decoder is tied to the region projection ``W_f``
    (transposed) with its own bias."""

    def __init__(self, dim: int, num_classes: int, feat_proj: nn.Linear, eps: float = 1e-12) -> None:
        super().__init__()
        self.class_transform = PredictionTransform(dim, eps)
        self.class_decoder = nn.Linear(dim, num_classes)
        self.feat_transform = PredictionTransform(dim, eps)
        self._tied = [feat_proj]  # not registered: the matrix belongs to the encoder
        self.feat_bias = nn.Parameter(torch.zeros(feat_proj.in_features))

    def forward(self, vision: Tensor) -> dict[str, Tensor]:
        feat = F.linear(self.feat_transform(vision), self._tied[0].weight.t(), self.feat_bias)
        return {"class": self.class_decoder(self.class_transform(vision)), "feat": feat}


class Uniter(SingleStreamModel):
    config_class = UniterConfig
    config: UniterConfig
    masked_region_input = True

    def __init__(self, config: UniterConfig) -> None:
        super().__init__(config)
        self.embeddings = UniterEmbeddings(config)
        self.init_weights()

    def build_pretraining_heads(self) -> PretrainingHeads:
        c = self.config
        heads = PretrainingHeads(
            mlm=MLMHead(c.dim, self.word_embeddings, c.layer_norm_eps),
            pair=PairHead(c.dim),
            region=UniterRegionHeads(
                c.dim, c.num_region_classes, self.embeddings.region.feat_proj, c.layer_norm_eps
            ),
        )
        init_heads(heads, c.init_std)
        return heads

    def layer_plan(self) -> list[str]:
        c = self.config
        return [
            f"embeddings.text: word {c.vocab_size}x{c.dim} + position {c.max_positions} + segment "
            f"{c.type_vocab_size}, LN",
            f"embeddings.region: LN(LN(Linear({c.region_feat_dim}, {c.dim})) + LN(Linear(7, {c.dim})) + segment 1)"
            f" (global region: {c.global_region})",
            *self.block_plan(),
        ]


# UNITER starts from bert-base-cased / bert-large-cased: its released files have 28996 word embeddings.
UNITER_VOCAB = 28996


def uniter_base() -> UniterConfig:
    """UNITER-base (uniter-base.pt): BERT-base sizes with the cased vocabulary (28996, bert-base-cased's
    vocab.txt, no lower-casing), 2048-d detector features, 1601 detector classes."""
    return UniterConfig(vocab_size=UNITER_VOCAB)


def uniter_large() -> UniterConfig:
    """UNITER-large (uniter-large.pt, config/uniter-large.json): 24 layers x 1024, 16 heads, FFN 4096."""
    return UniterConfig(dim=1024, num_heads=16, num_layers=24, ffn_dim=4096, vocab_size=UNITER_VOCAB)


def uniter_tiny() -> UniterConfig:
    """A tiny UNITER for tests."""
    return UniterConfig(
        **TINY_SIZES,
        region_feat_dim=TINY_REGION_FEAT_DIM,
        num_region_classes=11,
    )
