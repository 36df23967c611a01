"""The single-stream assembly shared by VisualBERT, Unicoder-VL, VL-BERT and UNITER.

Each of those models feeds text tokens and image regions into ONE Transformer. They differ only in how
the joint input sequence is embedded, so a model file supplies its own embedding module and this base
class does the rest: ``[text ; vision]`` -> a stack of post-LN ``Block``s with one key-padding mask ->
split back into ``Encoded(text, vision, pooled)``.

Padded text tokens sit between the real text and the regions in the joint sequence; their keys are
masked, so real positions never see them (padding invariance). Models whose vision part holds more
than the input regions (a whole-image region, VL-BERT's [END]) say which elements are input regions
through ``vision_mask``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from mmbert.config import GLOBAL_REGION_CHOICES as GLOBAL_REGION_CHOICES
from mmbert.config import GlobalRegion as GlobalRegion
from mmbert.config import ModelConfig, check_global_region
from mmbert.data.boxes import add_global_region, check_region_inputs, clear_padded_regions
from mmbert.models.base import (
    ConfigT,
    Encoded,
    EncoderModel,
    ModelInputs,
    ScoredRows,
    block_stack,
    check_text_inputs,
)
from mmbert.nn import FUSION_DROPOUT, PairHead, Pooler, key_padding_bias


def split_attention(maps: list[Tensor], text_len: int) -> dict[str, list[Tensor]]:
    """Per-layer joint maps (B, H, T+R, T+R) -> the four directions, each (B, H, queries, keys)."""
    t = text_len
    return {
        "text_text": [p[:, :, :t, :t] for p in maps],
        "text_vision": [p[:, :, :t, t:] for p in maps],
        "vision_text": [p[:, :, t:, :t] for p in maps],
        "vision_vision": [p[:, :, t:, t:] for p in maps],
    }


class SingleStreamModel(EncoderModel[ConfigT]):
    """Base of the single-stream models. Subclasses name their embedding module (``embeddings_class``,
    built from the config) and, where the default does not fit, override ``embed``.

    ``embed`` returns the joint sequence (B, T + R', D) and its boolean key mask (B, T + R'); the first T
    elements are the text tokens, the rest the vision elements (R' >= R).
    """

    # The module that embeds [text ; vision]: built as ``self.embeddings`` from the config.
    embeddings_class: ClassVar[type[nn.Module]]
    # Vision elements appended after the regions (and after a global region placed last), e.g. VL-BERT's [END].
    num_trailing_elements: int = 0
    # Whether the region boxes are required (VisualBERT, as in Hugging Face, does not use them).
    needs_boxes: bool = True
    # Whether forward takes ``region_masked`` (B, R) bool: regions masked for a masked-region objective.
    masked_region_input: bool = False
    # Whether forward takes text alone (no visual input at all): ``embed_text_only`` embeds it.
    text_only_input: bool = False
    takes_scored_rows = True

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        check_global_region(config)
        c = config
        self.layers = block_stack(c, c.num_layers)
        # VL-BERT's pre-training configs build no pooler (``with_pooler: false``): pooled is then [CLS]'s state
        self.pooler = Pooler(c.dim) if getattr(c, "with_pooler", True) else None
        # VOLTA's controlled models (``pooling="volta"``): ReLU(Linear([CLS])) * ReLU(Linear(whole image))
        if getattr(c, "pooling", "cls") == "volta":
            if c.global_region != "first":
                raise ValueError(
                    f"{type(c).__name__}: pooling='volta' pools the whole-image region: global_region='first'"
                )
            width = c.pooled_dim or c.dim
            self.pooler = None
            self.text_pooler = Pooler(c.dim, width, activation="relu")
            self.vision_pooler = Pooler(c.dim, width, activation="relu")
        self.embeddings = self.embeddings_class(config)
        self.init_weights()

    def embed(
        self, x: ModelInputs, region_masked: Tensor | None = None, global_feats: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """The joint sequence (B, T + R', D) and its key mask, from checked inputs (masks filled in, padded
        regions cleared) and the model's own ``extra`` inputs. The default places the whole-image region
        (config ``global_region``) and calls ``self.embeddings(text_ids, segment_ids, feats, boxes, masked)``;
        models whose embeddings need more (VisualBERT's alignment, VL-BERT's [END]) override it."""
        feats, boxes, mask = self.with_global_region(x.region_feats, x.region_boxes, x.region_mask, global_feats)
        masked = self.align_to_global(region_masked, False)
        return self.embeddings(x.text_ids, x.segment_ids, feats, boxes, masked), torch.cat([x.text_mask, mask], 1)

    def embed_text_only(self, text_ids: Tensor, text_mask: Tensor, segment_ids: Tensor | None) -> tuple[Tensor, Tensor]:
        """The joint sequence and key mask of a text-only example (models with ``text_only_input``)."""
        raise NotImplementedError(f"{type(self).__name__} takes no text-only input")

    def with_global_region(
        self, feats: Tensor, boxes: Tensor | None, mask: Tensor, whole: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Add the whole-image region where ``config.global_region`` says (no-op for "none"); its feature
        is ``whole`` (B, F) when given (``global_feats``), else the mean of the real regions."""
        if boxes is None:
            boxes = feats.new_zeros(*feats.shape[:2], 4)
        return add_global_region(feats, boxes, mask, self.config.global_region, whole)

    def align_to_global(self, per_region: Tensor | None, fill: bool | int) -> Tensor | None:
        """Insert ``fill`` where the whole-image region goes, so a per-region input (B, R, ...) stays
        aligned with the regions after ``with_global_region``."""
        where = self.config.global_region
        if per_region is None or where == "none":
            return per_region
        filler = per_region.new_full((per_region.shape[0], 1, *per_region.shape[2:]), fill)
        return torch.cat([filler, per_region] if where == "first" else [per_region, filler], 1)

    def check_extra_inputs(
        self,
        region_feats: Tensor,
        region_masked: Tensor | None = None,
        global_feats: Tensor | None = None,
        **extra: Any,
    ) -> None:
        """Validate model-specific inputs: ``region_masked`` where the model takes it, ``global_feats``
        (B, F) where it has a whole-image region (subclasses add their own, e.g. VisualBERT's alignment);
        anything else is refused by name."""
        if global_feats is not None and getattr(self.config, "global_region", "none") == "none":
            raise TypeError(f"{type(self).__name__} has no whole-image region (global_region 'none'): "
                            "global_feats has nowhere to go")  # fmt: skip
        if region_masked is not None:
            if not self.masked_region_input:
                raise TypeError(f"{type(self).__name__} takes no region_masked input")
            check_region_flags("region_masked", region_masked, region_feats)
        if extra:
            raise TypeError(f"{type(self).__name__} got unexpected inputs {sorted(extra)}")

    def encode_inputs(
        self, x: ModelInputs, output_attentions: bool = False, attention_mask: Tensor | None = None, **extra: Any
    ) -> Encoded:
        """``attention_mask`` (B, L, L) bool, optional: who sees whom in the joint sequence
        ``[text ; vision]`` of length L = T + ``Encoded.vision`` length (``mmbert.nn.masks`` builds it,
        e.g. ``captioning_mask(..., caption_first=True)``); padded positions stay hidden either way.
        Without any visual input, a model with ``text_only_input`` encodes a text-only example."""
        text_ids, text_mask, segment_ids = x.text_ids, x.text_mask, x.segment_ids
        region_feats, region_boxes, region_mask = x.region_feats, x.region_boxes, x.region_mask
        check_text_inputs(self.config, text_ids, text_mask, segment_ids)
        # a model class with a text-only path takes input without any visual part there (its embed_text_only
        # refuses it, by name, in a configuration that has none: VOLTA's VL-BERT)
        if type(self).text_only_input and not x.has_regions() and not extra:
            if text_mask is None:
                text_mask = torch.ones_like(text_ids, dtype=torch.bool)
            joint, mask = self.embed_text_only(text_ids, text_mask, segment_ids)
            return self.encode(joint, mask, text_ids.shape[1], output_attentions, attention_mask, x.scored_rows)
        name = type(self).__name__
        if region_feats is None:
            raise ValueError(
                f"{name} is a vision-and-language model: it needs region_feats (batch, regions, features)"
            )
        if region_feats.dim() != 3:
            raise ValueError(
                f"region_feats must be (batch, regions, features), got shape {tuple(region_feats.shape)}"
            )
        if region_boxes is None:
            if self.needs_boxes:
                raise ValueError(
                    f"{name} needs region_boxes (batch, regions, 4) as normalised (x1, y1, x2, y2)"
                )
            boxes_to_check = region_feats.new_zeros(*region_feats.shape[:2], 4)  # nothing to check
        else:
            boxes_to_check = region_boxes
        check_region_inputs(
            region_feats, boxes_to_check, region_mask, self.config.region_feat_dim, text_ids.shape[0]
        )
        self.check_extra_inputs(region_feats, **extra)
        b, t = text_ids.shape
        if text_mask is None:
            text_mask = torch.ones(b, t, dtype=torch.bool, device=text_ids.device)
        if region_mask is None:
            region_mask = torch.ones(region_feats.shape[:2], dtype=torch.bool, device=region_feats.device)
        else:
            region_feats, region_boxes = clear_padded_regions(region_feats, region_boxes, region_mask)

        inputs = ModelInputs(text_ids, text_mask, segment_ids, region_feats, region_boxes, region_mask)
        joint, mask = self.embed(inputs, **extra)
        return self.encode(joint, mask, t, output_attentions, attention_mask, x.scored_rows)

    def encode(
        self,
        x: Tensor,
        mask: Tensor,
        text_len: int,
        output_attentions: bool = False,
        attention_mask: Tensor | None = None,
        scored_rows: ScoredRows | None = None,
    ) -> Encoded:
        """The Block stack over the joint sequence x (B, T + R', D) with key mask (B, T + R'), split at T;
        ``attention_mask`` (B, T + R', T + R') further restricts who sees whom; ``scored_rows``: the rows
        the last layer computes (``ScoredRows``)."""
        visible = mask if attention_mask is None else joint_visibility(attention_mask, mask)
        keep = None
        if scored_rows is not None:
            b, length = mask.shape
            text = scored_rows.text_rows(torch.Size((b, text_len)), x.device)
            where, pools_vision = self.config.global_region, hasattr(self, "vision_pooler")
            vision = scored_rows.vision_rows(torch.Size((b, length - text_len)), x.device, where, pools_vision)
            keep = torch.cat([text, vision], 1)
        bias = key_padding_bias(visible, x.dtype)
        x, maps = self.run_blocks(self.layers, x, mask, bias, output_attentions, keep)
        return Encoded(
            text=x[:, :text_len],
            vision=x[:, text_len:],
            pooled=self.pool(x, text_len),
            attentions=split_attention(maps, text_len) if output_attentions else None,
        )

    def pool(self, x: Tensor, text_len: int) -> Tensor:
        """tanh pooler on [CLS]; [CLS]'s state without a pooler; or VOLTA's fused product (B, pooled_dim)."""
        if hasattr(self, "text_pooler"):
            return self.text_pooler(x[:, :text_len]) * self.vision_pooler(x[:, text_len:])
        return self.pooler(x) if self.pooler is not None else x[:, 0]

    def match_head(self) -> PairHead:
        """The image-text matching head over ``pool``'s output: VOLTA's reads the fused vector through
        dropout 0.1 (volta/encoders.py ``BertPreTrainingHeads``), the others the tanh-pooled [CLS]."""
        c = self.config
        if getattr(c, "pooling", "cls") == "volta":
            return PairHead(c.pooled_dim or c.dim, dropout=FUSION_DROPOUT)
        return PairHead(c.dim)

    def vision_mask(self, inputs: dict[str, Tensor]) -> Tensor:
        """Which elements of ``Encoded.vision`` are input regions (True) for these inputs: (B, R').

        False at padded regions, at the whole-image region and at trailing elements such as [END].
        """
        feats = inputs["region_feats"]
        mask = inputs.get("region_mask")
        if mask is None:
            mask = torch.ones(feats.shape[:2], dtype=torch.bool, device=feats.device)
        b = mask.shape[0]
        no = torch.zeros(b, 1, dtype=torch.bool, device=mask.device)
        where = self.config.global_region
        if where == "first":
            mask = torch.cat([no, mask], 1)
        elif where == "last":
            mask = torch.cat([mask, no], 1)
        if self.num_trailing_elements:
            mask = torch.cat([mask, no.expand(b, self.num_trailing_elements)], 1)
        return mask

    def block_plan(self) -> list[str]:
        c = self.config
        return [
            *(
                f"layers.{i}: Block(dim {c.dim}, heads {c.num_heads}, ffn {c.ffn_dim}) over [text ; vision]"
                for i in range(c.num_layers)
            ),
            self.pooler_plan(),
        ]

    def pooler_plan(self) -> str:
        c = self.config
        if hasattr(self, "text_pooler"):
            width = c.pooled_dim or c.dim
            return (
                f"pooled: ReLU(Linear({c.dim}, {width})) on [CLS] * ReLU(Linear({c.dim}, {width})) on the "
                "whole-image region"
            )
        if self.pooler is None:
            return "pooled: [CLS]'s state (no pooler)"
        return f"pooler: tanh(Linear({c.dim}, {c.dim})) on [CLS]"

    @property
    def word_embeddings(self) -> nn.Embedding:
        return self.embeddings.text.word  # every single-stream embedding holds BERT's as ``text``

    def text_init_map(self, num_bert_layers: int) -> list[tuple[str, str]]:
        """BERT's embeddings, Transformer layers and pooler, one to one (each paper initialises so)."""
        if num_bert_layers != self.config.num_layers:
            raise ValueError(
                f"BERT checkpoint has {num_bert_layers} layers, {type(self).__name__} has {self.config.num_layers}"
            )
        return [("embeddings.text", "embeddings"), ("layers", "layers"), ("pooler", "pooler")]


def joint_visibility(attention_mask: Tensor, key_mask: Tensor) -> Tensor:
    """A visibility mask (B, L, L) restricted to the real keys of ``key_mask`` (B, L), checked for shape."""
    b, length = key_mask.shape
    if attention_mask.shape != (b, length, length):
        raise ValueError(
            f"attention_mask has shape {tuple(attention_mask.shape)}, expected {(b, length, length)} "
            "(batch, joint length, joint length) for the joint sequence [text ; vision]"
        )
    if attention_mask.dtype != torch.bool:
        raise TypeError(f"attention_mask must be boolean (True = visible), got dtype {attention_mask.dtype}")
    return attention_mask & key_mask[:, None, :]


def check_region_flags(name: str, flags: Tensor | None, region_feats: Tensor) -> None:
    """Validate a per-region boolean input such as ``region_masked`` (B, R)."""
    if flags is None:
        return
    if flags.shape != region_feats.shape[:2]:
        raise ValueError(
            f"{name} has shape {tuple(flags.shape)}, expected {tuple(region_feats.shape[:2])} to match region_feats"
        )
    if flags.dtype != torch.bool:
        raise TypeError(f"{name} must be boolean (True = masked region), got dtype {flags.dtype}")
