"""Region boxes, one convention: (x1, y1, x2, y2) normalised to [0, 1] by image width and height.

Every model derives its own location features from that form here, in one place: 4-d (LXMERT), 5-d
with area (ViLBERT, Unicoder-VL), 7-d (UNITER), VL-BERT's sinusoidal geometry embedding; and the
optional global image region (mean of the real regions, box [0, 0, 1, 1]) placed first or last.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

GlobalRegion = Literal["first", "last", "none"]
LOCATION_DIMS = {"4d": 4, "5d": 5, "7d": 7}


def normalise_boxes(boxes: Tensor, image_size: tuple[int, int] | Tensor) -> Tensor:
    """Pixel boxes (..., 4) and (height, width) -> boxes in [0, 1] (clamped: detectors overshoot a pixel)."""
    h, w = (float(v) for v in image_size)
    if h <= 0 or w <= 0:
        raise ValueError(f"image size must be positive, got height={h}, width={w}")
    scale = boxes.new_tensor([w, h, w, h])
    return (boxes / scale).clamp_(0.0, 1.0)


def check_region_inputs(
    feats: Tensor, boxes: Tensor, mask: Tensor | None, feat_dim: int, text_batch: int | None = None
) -> None:
    """Clear errors naming the tensor and position for the usual region-input mistakes."""
    if feats.dim() != 3:
        raise ValueError(f"region_feats must be (batch, regions, features), got shape {tuple(feats.shape)}")
    b, r, f = feats.shape
    if f != feat_dim:
        raise ValueError(f"region_feats has feature width {f} but the model's region_feat_dim is {feat_dim}")
    if text_batch is not None and b != text_batch:
        raise ValueError(f"region_feats has batch size {b} but text_ids has {text_batch}")
    if boxes.shape != (b, r, 4):
        raise ValueError(
            f"region_boxes has shape {tuple(boxes.shape)}, expected {(b, r, 4)} to match region_feats"
        )
    if mask is not None:
        if mask.shape != (b, r):
            raise ValueError(
                f"region_mask has shape {tuple(mask.shape)}, expected {(b, r)} to match region_feats"
            )
        if mask.dtype != torch.bool:
            raise TypeError(f"region_mask must be boolean (True = real region), got dtype {mask.dtype}")
    real = torch.ones(b, r, dtype=torch.bool, device=feats.device) if mask is None else mask
    bad = ~torch.isfinite(feats).all(-1) & real
    if bool(bad.any()):
        i, j = bad.nonzero()[0].tolist()
        raise ValueError(f"region_feats[{i}, {j}] contains NaN or inf")
    bad = ~torch.isfinite(boxes).all(-1) & real
    if bool(bad.any()):
        i, j = bad.nonzero()[0].tolist()
        raise ValueError(f"region_boxes[{i}, {j}] contains NaN or inf")
    outside = ((boxes < 0) | (boxes > 1)).any(-1) & real
    if bool(outside.any()):
        i, j = outside.nonzero()[0].tolist()
        hint = (
            " — these look like pixel boxes: normalise them with mmbert.data.boxes.normalise_boxes"
            if bool((boxes[real] > 1.5).any())
            else ""
        )
        raise ValueError(f"region_boxes[{i}, {j}] = {boxes[i, j].tolist()} is outside [0, 1]{hint}")
    flipped = ((boxes[..., 2] < boxes[..., 0]) | (boxes[..., 3] < boxes[..., 1])) & real
    if bool(flipped.any()):
        i, j = flipped.nonzero()[0].tolist()
        raise ValueError(
            f"region_boxes[{i}, {j}] = {boxes[i, j].tolist()} has x2 < x1 or y2 < y1 (expected x1, y1, x2, y2)"
        )


def location_features(boxes: Tensor, kind: Literal["4d", "5d", "7d"]) -> Tensor:
    """(B, R, 4) normalised boxes -> (B, R, 4|5|7) location features.

    4d: x1, y1, x2, y2 (LXMERT); 5d: + area fraction (ViLBERT, Unicoder-VL);
    7d: x1, y1, x2, y2, w, h, w*h (UNITER).
    """
    if kind == "4d":
        return boxes
    w = boxes[..., 2] - boxes[..., 0]
    h = boxes[..., 3] - boxes[..., 1]
    if kind == "5d":
        return torch.cat([boxes, (w * h)[..., None]], dim=-1)
    if kind == "7d":
        return torch.cat([boxes, w[..., None], h[..., None], (w * h)[..., None]], dim=-1)
    raise ValueError(f"unknown location feature kind {kind!r}; choose from {sorted(LOCATION_DIMS)}")


def sinusoidal_box_embedding(boxes: Tensor, dim: int = 256, wave_length: float = 1000.0) -> Tensor:
    """VL-BERT's geometry embedding: (B, R, 4) -> (B, R, 4 * 2 * dim).

    Box -> (x_center, y_center, width, height) * 100 on normalised coordinates; each value v gives
    sin(v / wave_length^(k/dim)) and cos(...) for k < dim (sines then cosines, per coordinate).
    """
    centre_size = (
        torch.stack(
            [
                (boxes[..., 0] + boxes[..., 2]) / 2,
                (boxes[..., 1] + boxes[..., 3]) / 2,
                boxes[..., 2] - boxes[..., 0],
                boxes[..., 3] - boxes[..., 1],
            ],
            dim=-1,
        )
        * 100.0
    )
    freqs = wave_length ** (torch.arange(dim, dtype=boxes.dtype, device=boxes.device) / dim)
    angles = centre_size[..., None] / freqs  # (B, R, 4, dim)
    return torch.cat([angles.sin(), angles.cos()], dim=-1).flatten(-2)


def add_global_region(
    feats: Tensor,
    boxes: Tensor,
    mask: Tensor | None,
    where: GlobalRegion,
    global_feats: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Add the whole-image region: the mean of the real regions' features, box [0, 0, 1, 1], always real.
    ``global_feats`` (B, F), when given, is its feature instead of the mean (ViLBERT's and VOLTA's
    pre-training loaders average only over regions that overlap no masked one).

    Returns feats (B, R', F), boxes (B, R', 4), mask (B, R') with R' = R + 1 unless ``where == "none"``.
    """
    b, r, _ = feats.shape
    if mask is None:
        mask = torch.ones(b, r, dtype=torch.bool, device=feats.device)
    if where == "none":
        return feats, boxes, mask
    weights = mask.to(feats.dtype)[..., None]
    mean = (feats * weights).sum(1, keepdim=True) / weights.sum(1, keepdim=True).clamp(min=1.0)
    if global_feats is not None:
        if global_feats.shape != (b, feats.shape[-1]):
            raise ValueError(
                f"global_feats has shape {tuple(global_feats.shape)}, expected {(b, feats.shape[-1])}"
            )
        mean = global_feats[:, None].to(feats.dtype)
    whole = boxes.new_tensor([0.0, 0.0, 1.0, 1.0]).expand(b, 1, 4)
    real = torch.ones(b, 1, dtype=torch.bool, device=feats.device)
    if where == "first":
        return torch.cat([mean, feats], 1), torch.cat([whole, boxes], 1), torch.cat([real, mask], 1)
    if where == "last":
        return torch.cat([feats, mean], 1), torch.cat([boxes, whole], 1), torch.cat([mask, real], 1)
    raise ValueError(f"global region placement must be 'first', 'last' or 'none', got {where!r}")


def clear_padded_regions(
    feats: Tensor, boxes: Tensor | None, mask: Tensor | None
) -> tuple[Tensor, Tensor | None]:
    """Zero the padded regions' features and boxes. Padding is never validated, so it may hold anything;
    even NaN would reach real positions through masked attention (0 * NaN = NaN)."""
    if mask is None or bool(mask.all()):
        return feats, boxes
    pad = ~mask[..., None]
    return feats.masked_fill(pad, 0.0), None if boxes is None else boxes.masked_fill(pad, 0.0)
