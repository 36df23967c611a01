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
from mmbert.models.base import TINY_REGION_FEAT_DIM, TINY_SIZES, text_embeddings_plan
from mmbert.models.heads import PretrainingHeads
from mmbert.models.single_stream import SingleStreamModel
from mmbert.nn import PredictionTransform, RegionHeads, TextEmbeddings


@dataclass
class UniterConfig(ModelConfig):
    model_type = "uniter"

    region_feat_dim: int = 2048
    num_region_classes: int = 1601  # detector classes of the MRC head (Visual Genome 1600 + background)
    global_region: GlobalRegion = "none"
    # VOLTA's controlled UNITER (config/ctrl_uniter_base.json) differs in five named ways, all off here:
    location_dims: int = 7  # 7-d [x1, y1, x2, y2, w, h, w*h]; 5 = VOLTA's [x1, y1, x2, y2, area]
    own_region_segment: bool = False  # regions' type-1 embedding from their own table (VOLTA), not the text's
    mask_embedding: bool = True  # masked regions get a learned vector; False: zeroed features (VOLTA)
    pooling: str = "cls"  # "volta": ReLU(Linear([CLS])) * ReLU(Linear(whole image)), pooled_dim wide
    pooled_dim: int = 0
    region_head: str = "uniter"  # "uniter": MRC + MRFR heads; "volta": one transform + a class decoder

    def __post_init__(self) -> None:
        super().__post_init__()
        check_global_region(self)
        if self.location_dims not in (5, 7):
            raise ValueError(f"UniterConfig.location_dims must be 5 or 7, got {self.location_dims}")
        if self.pooling not in ("cls", "volta"):
            raise ValueError(f"UniterConfig.pooling must be 'cls' or 'volta', got {self.pooling!r}")
        if self.region_head not in ("uniter", "volta"):
            raise ValueError(
                f"UniterConfig.region_head must be 'uniter' or 'volta', got {self.region_head!r}"
            )
        if self.type_vocab_size < 2:
            raise ValueError("UniterConfig.type_vocab_size must be >= 2 (regions use segment type 1)")
        self.check_positive("region_feat_dim", "num_region_classes")


class UniterRegionEmbeddings(nn.Module):
    """``LN(LN(W_f f) + LN(W_p p7) + segment)``; masked regions: zero feature + ``mask_embedding``."""

    def __init__(self, c: UniterConfig) -> None:
        super().__init__()
        self.feat_proj = nn.Linear(c.region_feat_dim, c.dim)
        self.feat_norm = nn.LayerNorm(c.dim, eps=c.layer_norm_eps)
        self.loc_proj = nn.Linear(c.location_dims, c.dim)
        self.loc_norm = nn.LayerNorm(c.dim, eps=c.layer_norm_eps)
        self.location = f"{c.location_dims}d"
        # model/model.py: nn.Embedding(2, img_dim, padding_idx=0) under init_weights, i.e. N(0, 0.02); its
        # row 0 is zeroed at every forward, row 1 (this vector) is what a masked region receives. VOLTA's
        # controlled UNITER has none (``mask_embedding=False``): its masked regions are zeroed features.
        self.mask_embedding = (
            nn.Parameter(torch.empty(c.region_feat_dim).normal_(0.0, c.init_std))
            if c.mask_embedding
            else None
        )
        self.norm = nn.LayerNorm(c.dim, eps=c.layer_norm_eps)
        self.dropout = c.dropout

    def forward(self, feats: Tensor, boxes: Tensor, segment: Tensor, masked: Tensor | None = None) -> Tensor:
        """feats (B, R, F), boxes (B, R, 4), segment (D,), masked (B, R) -> (B, R, D)."""
        if masked is not None:
            m = masked[..., None]
            fill = (
                self.mask_embedding.to(feats.dtype)
                if self.mask_embedding is not None
                else feats.new_zeros(())
            )
            feats = torch.where(m, fill, feats)
        h = self.feat_norm(self.feat_proj(feats)) + self.loc_norm(
            self.loc_proj(location_features(boxes, self.location))
        )
        return F.dropout(self.norm(h + segment), self.dropout, self.training)


class UniterEmbeddings(nn.Module):
    def __init__(self, c: UniterConfig) -> None:
        super().__init__()
        self.text = TextEmbeddings.from_config(c)
        self.region = UniterRegionEmbeddings(c)
        self.region_segment = nn.Embedding(c.type_vocab_size, c.dim) if c.own_region_segment else None

    def forward(self, text_ids, segment_ids, feats, boxes, masked=None) -> Tensor:
        text = self.text(text_ids, segment_ids)
        table = self.region_segment if self.region_segment is not None else self.text.segment
        vision = self.region(feats, boxes, table.weight[1], masked)
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


class Uniter(SingleStreamModel[UniterConfig]):
    embeddings_class = UniterEmbeddings
    masked_region_input = True

    def build_pretraining_heads(self) -> PretrainingHeads:
        c = self.config
        if c.region_head == "volta":
            region: nn.Module = RegionHeads(c.dim, {"class": c.num_region_classes}, c.layer_norm_eps)
        else:
            region = UniterRegionHeads(
                c.dim, c.num_region_classes, self.embeddings.region.feat_proj, c.layer_norm_eps
            )
        return self.tied_heads(
            pair=self.match_head(),
            region=region,
        )

    def layer_plan(self) -> list[str]:
        c = self.config
        return [
            text_embeddings_plan(c, "embeddings.text"),
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


def ctrl_uniter() -> UniterConfig:
    """VOLTA's controlled UNITER (config/ctrl_uniter_base.json): BERT-base sizes, the whole-image region
    first, 5-d locations, its own region type table, no mask embedding, the fused ReLU pooler at 1024 and
    a 1601-class region head (VOLTA's visual target 0)."""
    return UniterConfig(
        global_region="first",
        location_dims=5,
        own_region_segment=True,
        mask_embedding=False,
        pooling="volta",
        pooled_dim=1024,
        region_head="volta",
    )


def uniter_tiny() -> UniterConfig:
    """A tiny UNITER for tests."""
    return UniterConfig(
        **TINY_SIZES,
        region_feat_dim=TINY_REGION_FEAT_DIM,
        num_region_classes=11,
    )
