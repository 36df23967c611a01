"""UNIMO: Towards Unified-Modal Understanding and Generation via Cross-Modal Contrastive Learning
(Li et al., ACL 2021, arXiv:2012.15409).

Architecture (PaddlePaddle/Research ``NLP/UNIMO/src/model/unimo_finetune.py``): ONE post-LN Transformer
(LayerNorm eps 1e-5, exact GELU) over text only, regions only, regions + text, or regions + object tags
+ text, always in the order ``[vision ; tags ; text]``. Text and tags: RoBERTa-style word + position
embeddings (positions start at 2, no segment table), one shared LayerNorm. Each region:
``LN(Linear(feature) + Linear([x1, y1, x2, y2, area]))``; the first visual token is the mean of the
region features with box [0, 0, 1, 1, 1]. ReLU poolers on the first visual token ([IMG]) and the
first text token ([CLS]); the LM head is tied to the word embeddings.

Inputs: text-only passes no region arguments, image-only passes ``text_ids=None``. Who sees whom is
data: ``attention_mask`` (B, L, L) over the joint sequence (``mmbert.nn.masks``: seq2seq,
captioning), on top of the padding. Outputs: ``Encoded.text`` (None for image-only), ``.vision``
([IMG] first; None for text-only), ``.pooled`` (the text pooler, or the image pooler for image-only
input) and ``.pooled_vision`` (the image pooler). The tags' hidden states are not returned.

Deviations: the official model scales the additive mask bias by 1e4; we use the dtype's minimum (the
same probabilities). Masked regions (``region_masked``) are zeroed before the projection and before
the [IMG] mean, so the mean cannot leak them (the pre-training code, where this matters, was never
released). ``type_vocab_size`` is 1 to satisfy ``ModelConfig``; there is no segment table, and ``segment_ids``
are accepted and ignored, as the official model ignores its ``sent_embedding`` ids.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmbert.config import GlobalRegion, ModelConfig, check_global_region
from mmbert.data.boxes import add_global_region, check_region_inputs, clear_padded_regions
from mmbert.models.base import (
    TINY_REGION_FEAT_DIM,
    TINY_SIZES,
    Encoded,
    EncoderModel,
    ModelInputs,
    block_stack,
    check_text_inputs,
    init_heads,
)
from mmbert.models.heads import PretrainingHeads
from mmbert.models.region_embeddings import LocatedRegionEmbeddings
from mmbert.models.single_stream import check_region_flags, joint_visibility
from mmbert.nn import MLMHead, Pooler, RegionHeads, key_padding_bias
from mmbert.nn.tied import TiedEmbedding


@dataclass
class UnimoConfig(ModelConfig):
    model_type = "unimo"

    layer_norm_eps: float = 1e-5
    vocab_size: int = 50265
    max_positions: int = 514
    type_vocab_size: int = 1  # no segment table (the official config says 0); kept >= 1 for ModelConfig
    pad_token_id: int = 1  # [PAD] in unimo_en.vocab.txt
    position_offset: int = 2  # RoBERTa-style: the first token sits at position 2
    region_feat_dim: int = 2048
    num_region_classes: int = 1601  # detector classes (soft-label targets of masked region classification)
    max_regions: int = 37  # max_img_len of the official config, [IMG] included (large: 101)
    region_overlap_ratio: float = 0.4  # overlap_ratio (large 0.3): zero regions overlapping a masked one
    global_region: GlobalRegion = "first"  # [IMG] (the mean region) first: the architecture fixes it

    def __post_init__(self) -> None:
        super().__post_init__()
        check_global_region(self, allowed=("first",))
        for name in ("region_feat_dim", "num_region_classes", "max_regions"):
            if getattr(self, name) <= 0:
                raise ValueError(f"UnimoConfig.{name} must be positive, got {getattr(self, name)}")
        if not 0 <= self.position_offset < self.max_positions:
            raise ValueError(
                f"UnimoConfig.position_offset must be in [0, max_positions), got {self.position_offset}"
            )
        if not 0.0 < self.region_overlap_ratio <= 1.0:
            raise ValueError(
                f"UnimoConfig.region_overlap_ratio must be in (0, 1], got {self.region_overlap_ratio}"
            )


# Official config keys -> our fields; the rest of the official keys are listed as understood-and-unused.
_OFFICIAL_KEYS = {
    "hidden_size": "dim",
    "num_attention_heads": "num_heads",
    "num_hidden_layers": "num_layers",
    "hidden_dropout_prob": "dropout",
    "attention_probs_dropout_prob": "attn_dropout",
    "vocab_size": "vocab_size",
    "max_position_embeddings": "max_positions",
    "initializer_range": "init_std",
    "image_embedding_size": "region_feat_dim",
    "image_class_size": "num_region_classes",
    "max_img_len": "max_regions",
    "overlap_ratio": "region_overlap_ratio",
}
# Pre-training switches and sizes of inputs the released model does not read.
_UNUSED_KEYS = {
    "image_attr_size", "image_predict_feature", "image_predict_class", "image_use_attr",
    "image_use_soft_label", "use_neg_lm_loss", "fusion_method", "similarity_method", "txt_mask_ratio",
    "vl_mask_ratio", "scenegraph_mask_ratio", "num_labels", "max_pixel_len", "max_pixel_position_embeddings",
    "max_obj_len", "sent_type_vocab_size", "task_type_vocab_size", "class_attr_size",
}  # fmt: skip


def config_from_unimo(path: str | os.PathLike) -> UnimoConfig:
    """Read an official UNIMO config (``unimo_base_en.json``) into a ``UnimoConfig``; FFN is 4x the width
    (``transformer_encoder.py``). Keys it does not know, a non-GELU activation or a segment table are refused."""
    path = Path(path)
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read a UNIMO config: {e}") from e
    unknown = sorted(set(data) - set(_OFFICIAL_KEYS) - _UNUSED_KEYS - {"hidden_act", "type_vocab_size"})
    if unknown:
        raise ValueError(f"{path}: unknown UNIMO config keys {unknown}")
    if data.get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"{path}: hidden_act {data['hidden_act']!r} is not supported (UNIMO uses 'gelu')")
    if data.get("type_vocab_size", 0) != 0:
        raise ValueError(
            f"{path}: type_vocab_size {data['type_vocab_size']} (UNIMO has no segment embeddings)"
        )
    fields = {ours: data[theirs] for theirs, ours in _OFFICIAL_KEYS.items() if theirs in data}
    missing = sorted(k for k in ("hidden_size", "num_attention_heads", "num_hidden_layers") if k not in data)
    if missing:
        raise ValueError(f"{path}: UNIMO config lacks {missing}")
    fields["ffn_dim"] = 4 * fields["dim"]
    return UnimoConfig(**fields)


class UnimoTextEmbeddings(nn.Module):
    """``LN(word + position)``, positions from ``position_offset`` (RoBERTa); used for text and tags."""

    def __init__(self, c: UnimoConfig) -> None:
        super().__init__()
        self.word = TiedEmbedding(c.vocab_size, c.dim)
        self.position = nn.Embedding(c.max_positions, c.dim)
        self.norm = nn.LayerNorm(c.dim, eps=c.layer_norm_eps)
        self.offset = c.position_offset
        self.dropout = c.dropout

    def forward(self, ids: Tensor, positions: Tensor | None = None, delta: Tensor | None = None) -> Tensor:
        """ids (B, T), positions (B, T) or None (offset + 0..T-1) -> (B, T, D); ``delta`` (B, T, D) is added
        to word + position before the LayerNorm (where the official adversarial fine-tuning perturbs)."""
        t = ids.shape[1]
        if positions is None:
            if self.offset + t > self.position.num_embeddings:
                raise ValueError(
                    f"{t} tokens from position {self.offset} exceed the model's "
                    f"{self.position.num_embeddings} positions"
                )
            positions = torch.arange(self.offset, self.offset + t, device=ids.device)[None]
        elif positions.shape != ids.shape or bool(
            ((positions < 0) | (positions >= self.position.num_embeddings)).any()
        ):
            raise ValueError(
                f"position ids must have shape {tuple(ids.shape)} and lie in [0, {self.position.num_embeddings})"
            )
        h = self.word(ids) + self.position(positions)
        if delta is not None:
            if delta.shape != h.shape:
                raise ValueError(f"text_delta must have shape {tuple(h.shape)}, got {tuple(delta.shape)}")
            h = h + delta
        return F.dropout(self.norm(h), self.dropout, self.training)


class Unimo(EncoderModel):
    config_class = UnimoConfig
    config: UnimoConfig
    masked_region_input = True
    # Input kinds beyond image-text pairs (the shared registry tests run each).
    unimodal_inputs: ClassVar[tuple[str, ...]] = ("text", "image")
    vision_first: ClassVar[bool] = True  # the joint sequence is [vision ; tags ; text] (masks are built in that order)

    def __init__(self, config: UnimoConfig) -> None:
        super().__init__(config)
        c = config
        self.text_embeddings = UnimoTextEmbeddings(c)
        self.region_embeddings = LocatedRegionEmbeddings.from_config(c)  # image_emb, image_loc, v_pre_encoder
        self.layers = block_stack(c, c.num_layers)
        self.text_pooler = Pooler(c.dim, activation="relu")
        self.vision_pooler = Pooler(c.dim, activation="relu")
        self.init_weights()

    @property
    def word_embeddings(self) -> nn.Embedding:
        return self.text_embeddings.word

    def encode_inputs(
        self,
        x: ModelInputs,
        output_attentions: bool = False,
        attention_mask: Tensor | None = None,
        region_masked: Tensor | None = None,
        tag_ids: Tensor | None = None,
        tag_mask: Tensor | None = None,
        text_positions: Tensor | None = None,
        text_delta: Tensor | None = None,
        region_delta: Tensor | None = None,
    ) -> Encoded:
        """Any of text, regions (+ tags), or both. ``attention_mask`` (B, L, L) covers the joint sequence
        ``[vision ; tags ; text]`` (L = 1 + R + G + T with regions); ``text_positions`` (B, T) overrides
        the text's position ids (the seq2seq target restarts at 2); ``region_masked`` (B, R) zeroes regions.
        ``text_delta`` (B, T, D) / ``region_delta`` (B, 1 + R, F): perturbations added to the text's word +
        position embeddings and to the region features ([IMG]'s mean first), as ``unimo_finetune.py``'s
        ``text_adv_delta`` / ``image_adv_delta`` (``mmbert.tasks.unimo_adversarial``)."""
        parts, masks = self._embed_inputs(
            x.text_ids, x.text_mask, x.segment_ids, x.region_feats, x.region_boxes, x.region_mask, region_masked,
            tag_ids, tag_mask, text_positions, text_delta, region_delta,
        )  # fmt: skip
        joint = torch.cat([p for p in parts.values()], 1)
        mask = torch.cat(list(masks.values()), 1)
        visible = mask if attention_mask is None else joint_visibility(attention_mask, mask)
        bias = key_padding_bias(visible, joint.dtype)
        joint, maps = self.run_blocks(self.layers, joint, mask, bias, output_attentions)
        lengths = {name: p.shape[1] for name, p in parts.items()}
        out = dict(zip(lengths, joint.split(list(lengths.values()), 1)))
        text, vision = out.get("text"), out.get("vision")
        pooled_vision = self.vision_pooler(vision) if vision is not None else None
        return Encoded(
            text=text,
            vision=vision,
            pooled=self.text_pooler(text) if text is not None else pooled_vision,
            pooled_vision=pooled_vision,
            attentions=split_joint_attention(maps, lengths) if output_attentions else None,
        )

    def _embed_inputs(
        self, text_ids, text_mask, segment_ids, feats, boxes, region_mask, region_masked, tag_ids, tag_mask,
        text_positions, text_delta=None, region_delta=None,
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:  # fmt: skip
        """The embedded parts in order (vision, tags, text) and their key masks."""
        c = self.config
        if text_ids is None and feats is None:
            raise ValueError("UNIMO needs text_ids, region_feats, or both")
        if feats is None and any(t is not None for t in (boxes, region_mask, region_masked, tag_ids, region_delta)):
            raise ValueError("region_boxes / region_mask / region_masked / tag_ids / region_delta need region_feats")
        if text_ids is None and any(t is not None for t in (text_mask, segment_ids, text_positions, text_delta)):
            raise ValueError(
                "text_mask / segment_ids / text_positions / text_delta need text_ids (image-only input passes none)"
            )
        parts: dict[str, Tensor] = {}
        masks: dict[str, Tensor] = {}
        if feats is not None:
            if feats.dim() != 3:
                raise ValueError(
                    f"region_feats must be (batch, regions, features), got shape {tuple(feats.shape)}"
                )
            if boxes is None:
                raise ValueError(
                    "UNIMO needs region_boxes (batch, regions, 4) as normalised (x1, y1, x2, y2)"
                )
            batch = text_ids.shape[0] if text_ids is not None else feats.shape[0]
            check_region_inputs(feats, boxes, region_mask, c.region_feat_dim, batch)
            check_region_flags("region_masked", region_masked, feats)
            feats, boxes = clear_padded_regions(feats, boxes, region_mask)
            if region_masked is not None:
                feats = feats.masked_fill(region_masked[..., None], 0.0)
            feats, boxes, vmask = add_global_region(feats, boxes, region_mask, c.global_region)
            if region_delta is not None:
                if region_delta.shape != feats.shape:
                    raise ValueError(f"region_delta must have shape {tuple(feats.shape)} ([IMG] + regions), "
                                     f"got {tuple(region_delta.shape)}")  # fmt: skip
                feats = feats + region_delta
            parts["vision"] = self.region_embeddings(feats, boxes)
            masks["vision"] = vmask
            if tag_ids is not None:
                check_text_inputs(c, tag_ids, tag_mask, None)
                if tag_ids.shape[0] != feats.shape[0]:
                    raise ValueError(
                        f"tag_ids has batch size {tag_ids.shape[0]} but region_feats has {feats.shape[0]}"
                    )
                parts["tags"] = self.text_embeddings(tag_ids)
                masks["tags"] = (
                    tag_mask if tag_mask is not None else torch.ones_like(tag_ids, dtype=torch.bool)
                )
            elif tag_mask is not None:
                raise ValueError("tag_mask needs tag_ids")
        if text_ids is not None:
            check_text_inputs(c, text_ids, text_mask, None)
            if segment_ids is not None and segment_ids.shape != text_ids.shape:
                raise ValueError(
                    f"segment_ids has shape {tuple(segment_ids.shape)} but text_ids has {tuple(text_ids.shape)}"
                )
            parts["text"] = self.text_embeddings(text_ids, text_positions, text_delta)
            masks["text"] = (
                text_mask if text_mask is not None else torch.ones_like(text_ids, dtype=torch.bool)
            )
        return parts, masks

    def vision_mask(self, inputs: dict[str, Tensor]) -> Tensor:
        """Which elements of ``Encoded.vision`` are input regions: False at [IMG] and at padding (B, 1 + R)."""
        feats = inputs["region_feats"]
        mask = inputs.get("region_mask")
        if mask is None:
            mask = torch.ones(feats.shape[:2], dtype=torch.bool, device=feats.device)
        return torch.cat([torch.zeros_like(mask[:, :1]), mask], 1)

    def build_pretraining_heads(self) -> PretrainingHeads:
        """MLM (``mask_lm_trans_fc`` + LN, decoder tied to ``word_embedding``) and the region heads: soft-label
        classification over the detector's classes and feature regression (UNIMO pre-trains without ITM)."""
        c = self.config
        heads = PretrainingHeads(
            mlm=MLMHead(c.dim, self.word_embeddings, c.layer_norm_eps),
            region=RegionHeads(
                c.dim, {"class": c.num_region_classes, "feat": c.region_feat_dim}, c.layer_norm_eps
            ),
        )
        init_heads(heads, c.init_std)
        return heads

    def layer_plan(self) -> list[str]:
        c = self.config
        return [
            f"region_embeddings: LN(Linear({c.region_feat_dim}, {c.dim}) + Linear(5, {c.dim})), "
            "[IMG] = mean region first",
            f"text_embeddings: LN(word {c.vocab_size}x{c.dim} + position {c.max_positions} from {c.position_offset})",
            *(
                f"layers.{i}: Block(dim {c.dim}, heads {c.num_heads}, ffn {c.ffn_dim}) over [vision ; tags ; text]"
                for i in range(c.num_layers)
            ),
            f"vision_pooler / text_pooler: relu(Linear({c.dim}, {c.dim})) on [IMG] / [CLS]",
        ]


def split_joint_attention(maps: list[Tensor], lengths: dict[str, int]) -> dict[str, list[Tensor]]:
    """Per-layer joint maps (B, H, L, L) over [vision ; tags ; text] -> the text/vision directions."""
    starts, at = {}, 0
    for name, n in lengths.items():
        starts[name] = slice(at, at + n)
        at += n
    out: dict[str, list[Tensor]] = {}
    for q in ("text", "vision"):
        for k in ("text", "vision"):
            if q in starts and k in starts:
                out[f"{q}_{k}"] = [p[:, :, starts[q], starts[k]] for p in maps]
    return out


def unimo_base() -> UnimoConfig:
    """UNIMO-base (``unimo_base_en``): 12 layers, 768 hidden, 12 heads, RoBERTa-base vocabulary."""
    return UnimoConfig()


def unimo_large() -> UnimoConfig:
    """UNIMO-large (``unimo_large_en``): 24 layers, 1024 hidden, 16 heads, 101 visual tokens, overlap 0.3."""
    return UnimoConfig(
        dim=1024, num_heads=16, num_layers=24, ffn_dim=4096, max_regions=101, region_overlap_ratio=0.3
    )


def unimo_tiny() -> UnimoConfig:
    """A tiny UNIMO for tests."""
    return UnimoConfig(
        **{**TINY_SIZES, "max_positions": TINY_SIZES["max_positions"] + 2},
        region_feat_dim=TINY_REGION_FEAT_DIM,
        num_region_classes=11,
        max_regions=6,
    )
