"""The dual-stream assembly shared by ViLBERT and LXMERT: three stages, and ``forward`` built from them.

``encode_text`` runs the text stream as far as it goes without the image, ``encode_vision`` the vision
stream as far as it goes without the text, ``fuse`` the cross-modal layers on the pair and pools. The
single-modality stages do not depend on the other modality, so retrieval over N captions x M images runs
each of them once per caption / image and only ``fuse`` per pair (``tasks/retrieval.py``); ``forward``
is exactly ``fuse(encode_text(...), encode_vision(...))``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from mmbert.config import ModelConfig
from mmbert.data.boxes import add_global_region, check_region_inputs, clear_padded_regions
from mmbert.models.base import ConfigT, EncoderModel, ModelInputs, ScoredRows, check_text_inputs
from mmbert.models.outputs import Encoded
from mmbert.nn import TextEmbeddings, key_padding_bias


@dataclass
class StreamStates:
    """One modality after its own stream: hidden states (B, L, D), key mask (B, L) (True = real; None =
    all real), and, when asked, its attention maps so far (direction -> one tensor per layer)."""

    states: Tensor
    mask: Tensor | None
    attentions: dict[str, list[Tensor]] | None = field(default=None)

    def select(self, index: Tensor) -> StreamStates:
        """The rows ``index`` (pairs of retrieval: the same caption or image repeated)."""
        return StreamStates(self.states[index], None if self.mask is None else self.mask[index])

    def bias_and_rows(self, skip_padding: bool = True) -> tuple[Tensor | None, Tensor | None]:
        """The attention bias of the mask, and the rows the sublayers may skip (None without padding,
        or when ``skip_padding`` is off)."""
        bias = key_padding_bias(self.mask, self.states.dtype)
        return bias, self.mask if bias is not None and skip_padding else None


def new_maps(output_attentions: bool) -> dict[str, list[Tensor]] | None:
    """Empty per-direction lists of attention maps (None when they are not asked for)."""
    if not output_attentions:
        return None
    return {"text_text": [], "vision_vision": [], "text_vision": [], "vision_text": []}


def joined_maps(*parts: dict[str, list[Tensor]] | None) -> dict[str, list[Tensor]] | None:
    """The stages' maps concatenated per direction, in run order (None when no stage kept any)."""
    kept = [p for p in parts if p is not None]
    if not kept:
        return None
    out = new_maps(True)
    for part in kept:
        for key, maps in part.items():
            out[key].extend(maps)  # type: ignore[index]
    return out


class DualStreamModel(EncoderModel[ConfigT]):
    """Base of ViLBERT and LXMERT: BERT's text embeddings start the text stream, ``embed_regions`` the
    vision stream; subclasses build ``region_embeddings`` and their layers, say which layers run on each
    stream alone (``stream_layers``) and implement ``fuse``; ``forward`` chains the three stages."""

    display_name: str = ""  # for error messages ("ViLBERT needs region_feats ...")
    takes_scored_rows = True

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.embeddings = TextEmbeddings.from_config(config)

    def embed_text(
        self, text_ids: Tensor, text_mask: Tensor | None, segment_ids: Tensor | None, output_attentions: bool
    ) -> StreamStates:
        """The checked text inputs through the text embeddings: the start of the text stream."""
        check_text_inputs(self.config, text_ids, text_mask, segment_ids)
        embedded = self.embeddings(text_ids, segment_ids)  # type: ignore[operator]
        return StreamStates(embedded, text_mask, new_maps(output_attentions))

    def embed_regions(
        self,
        region_feats: Tensor,
        region_boxes: Tensor,
        region_mask: Tensor | None,
        output_attentions: bool,
        text_batch: int | None,
        global_feats: Tensor | None = None,
    ) -> StreamStates:
        """The checked regions, padding cleared, the whole-image region placed where ``config.global_region``
        says (feature ``global_feats`` (B, F) or the real regions' mean), through ``self.region_embeddings``:
        the start of the vision stream."""
        c = self.config
        check_region_inputs(region_feats, region_boxes, region_mask, c.region_feat_dim, text_batch)  # type: ignore[attr-defined]
        if global_feats is not None and c.global_region == "none":  # type: ignore[attr-defined]
            raise TypeError(f"{self.display_name} has no whole-image region (global_region 'none'): "
                            "global_feats has nowhere to go")  # fmt: skip
        region_feats, region_boxes = clear_padded_regions(region_feats, region_boxes, region_mask)
        feats, boxes, real = add_global_region(
            region_feats, region_boxes, region_mask, c.global_region, global_feats  # type: ignore[attr-defined]
        )
        if c.global_region == "none":  # type: ignore[attr-defined]
            real = region_mask  # None stays None: no key mask at all
        embedded = self.region_embeddings(feats, boxes)  # type: ignore[operator]
        return StreamStates(embedded, real, new_maps(output_attentions))

    def vision_mask(self, inputs: dict[str, Tensor]) -> Tensor:
        """Which elements of ``Encoded.vision`` are input regions (B, R'): False at the whole-image region
        (where the config has one) and at padded regions, as for every model."""
        feats = inputs["region_feats"]
        mask = inputs.get("region_mask")
        if mask is None:
            mask = torch.ones(feats.shape[:2], dtype=torch.bool, device=feats.device)
        if self.config.global_region == "first":  # type: ignore[attr-defined]
            return torch.cat([torch.zeros_like(mask[:, :1]), mask], dim=1)
        return mask

    def fused_pool(self, text: Tensor, vision: Tensor) -> Tensor:
        """ViLBERT's and VOLTA's pooled output: ReLU(Linear([CLS])) * ReLU(Linear(whole-image region)),
        the element-wise product of ``text_pooler`` and ``vision_pooler`` (B, pooled_dim)."""
        return self.text_pooler(text) * self.vision_pooler(vision)  # type: ignore[operator]

    def run_layers(
        self, stream: StreamStates, layers: Iterable[nn.Module], direction: str, output_attentions: bool
    ) -> StreamStates:
        """``layers`` (self-attention ``Block``s) over one stream, keeping their maps under ``direction``."""
        bias = key_padding_bias(stream.mask, stream.states.dtype)
        stream.states, maps = self.run_blocks(layers, stream.states, stream.mask, bias, output_attentions)
        if stream.attentions is not None:
            stream.attentions[direction].extend(maps)
        return stream

    def stream_layers(self, stream: str) -> list[nn.Module]:
        """The self-attention layers of ``stream`` ("text" or "vision") that run before the streams meet."""
        raise NotImplementedError

    def encode_text(
        self,
        text_ids: Tensor,
        text_mask: Tensor | None = None,
        segment_ids: Tensor | None = None,
        output_attentions: bool = False,
    ) -> StreamStates:
        """Text embeddings and the text-only layers: (B, T, D) states."""
        text = self.embed_text(text_ids, text_mask, segment_ids, output_attentions)
        return self.run_layers(text, self.stream_layers("text"), "text_text", output_attentions)

    def encode_vision(
        self,
        region_feats: Tensor,
        region_boxes: Tensor,
        region_mask: Tensor | None = None,
        output_attentions: bool = False,
        text_batch: int | None = None,
        global_feats: Tensor | None = None,
    ) -> StreamStates:
        """Region embeddings (``embed_regions``) and the vision-only layers: (B, R', Dv) states.
        ``text_batch``: the text's batch size, checked against the regions' when known; ``global_feats``
        (B, F): the whole-image region's feature where the config has one (default the real regions' mean)."""
        vision = self.embed_regions(
            region_feats, region_boxes, region_mask, output_attentions, text_batch, global_feats
        )
        return self.run_layers(vision, self.stream_layers("vision"), "vision_vision", output_attentions)

    def fuse(
        self,
        text: StreamStates,
        vision: StreamStates,
        output_attentions: bool = False,
        scored_rows: ScoredRows | None = None,
    ) -> Encoded:
        """The cross-modal layers over a (text, image) pair and the pooled output; ``scored_rows``: the
        rows each stream's last layer computes (``kept_rows``)."""
        raise NotImplementedError

    def kept_rows(
        self, scored: ScoredRows | None, text: StreamStates, vision: StreamStates
    ) -> tuple[Tensor | None, Tensor | None]:
        """The text (B, T) and vision (B, R') rows that the last layer of each stream computes: those
        ``scored`` reads, with [CLS] and (a fused pooler) the first vision element when pooled;
        (None, None) without ``scored``."""
        if scored is None:
            return None, None
        t, v = text.states, vision.states
        where = self.config.global_region  # type: ignore[attr-defined]
        return (
            scored.text_rows(t.shape[:2], t.device),
            scored.vision_rows(v.shape[:2], v.device, where, hasattr(self, "vision_pooler")),
        )

    def encode_inputs(self, x: ModelInputs, output_attentions: bool = False, **vision_inputs: Any) -> Encoded:
        """``fuse(encode_text(...), encode_vision(...))``. ``vision_inputs``: model-specific inputs of
        ``encode_vision`` (``global_feats``)."""
        text = self.encode_text(x.text_ids, x.text_mask, x.segment_ids, output_attentions)
        if x.region_feats is None or x.region_boxes is None:
            raise ValueError(f"{self.display_name} needs region_feats (B, R, F) and region_boxes (B, R, 4)")
        vision = self.encode_vision(
            x.region_feats,
            x.region_boxes,
            x.region_mask,
            output_attentions,
            text_batch=x.text_ids.shape[0],
            **vision_inputs,
        )
        return self.fuse(text, vision, output_attentions, x.scored_rows)
