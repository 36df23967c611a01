"""The task model (encoder + head) and what a head may ask about its encoder (``probe_encoder``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mmbert.data.batch import Batch
from mmbert.models.base import Encoded, EncoderModel


@dataclass
class EncoderDims:
    """What a head needs to know about an encoder, read off a tiny forward pass (so heads never care
    which family they sit on): pooled width P, vision width Dv, and where the input regions sit in its
    vision output (``region_offset``: ViLBERT and VL-BERT add a whole-image region and/or [END])."""

    pooled: int
    vision: int | None
    region_offset: int


def probe_encoder(encoder: EncoderModel) -> EncoderDims:
    """Run a 1 x 3-token, 2-region input through ``encoder`` without grad. The input regions' place in
    the vision output is found with the model's ``vision_mask``: the positions whose mask changes when
    the region mask goes from [real, padded] to [padded, real] are the two input regions (this holds
    whether ``vision_mask`` marks the whole-image region real or not)."""
    feat_dim = getattr(encoder.config, "region_feat_dim", None)
    p = next(encoder.parameters())
    inputs: dict[str, Tensor] = {
        "text_ids": torch.tensor([[1, 2, 3]], device=p.device) % encoder.config.vocab_size,
        "text_mask": torch.ones(1, 3, dtype=torch.bool, device=p.device),
        "segment_ids": torch.zeros(1, 3, dtype=torch.long, device=p.device),
    }
    if feat_dim:
        inputs["region_feats"] = torch.zeros(1, 2, feat_dim, device=p.device)
        inputs["region_boxes"] = torch.tensor([[[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]]], device=p.device)
        inputs["region_mask"] = torch.tensor([[True, False]], device=p.device)
    was_training = encoder.training
    encoder.eval()
    with torch.no_grad():
        enc = encoder(**inputs)
    encoder.train(was_training)
    if enc.vision is None:
        return EncoderDims(enc.pooled.shape[-1], None, 0)
    length = enc.vision.shape[1]
    name = type(encoder).__name__
    if length == 2:
        return EncoderDims(enc.pooled.shape[-1], enc.vision.shape[-1], 0)
    if not hasattr(encoder, "vision_mask"):
        raise ValueError(f"{name} returns {length} vision positions for 2 regions and has no vision_mask() "
                         "saying which are the input regions")  # fmt: skip
    first = encoder.vision_mask(inputs)[0]
    second = encoder.vision_mask({**inputs, "region_mask": inputs["region_mask"].flip(1)})[0]
    changed = (first != second).nonzero().flatten().tolist()
    if len(changed) != 2 or changed[1] != changed[0] + 1 or not bool(first[changed[0]]):
        raise ValueError(f"cannot locate the input regions in {name}'s vision output ({length} positions)")
    return EncoderDims(enc.pooled.shape[-1], enc.vision.shape[-1], changed[0])


def input_regions(vision: Tensor, offset: int, num_regions: int) -> Tensor:
    """The vision states of the input regions only (B, R, Dv), without whole-image region or [END]."""
    return vision[:, offset : offset + num_regions]


class TaskModel(nn.Module):
    """Encoder + task head. ``forward(batch) -> logits`` in the task's shape."""

    def __init__(self, encoder: EncoderModel, head: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head

    @property
    def config(self):
        return self.encoder.config

    def forward(self, batch: Batch) -> Tensor:
        enc: Encoded = self.encoder(**batch.encoder_inputs(self.encoder))
        return self.head(enc, batch)
