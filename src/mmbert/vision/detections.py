"""What every detector returns per image, and the two rules that choose which regions to keep."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import nms

SCALE_CLAMP = float(np.log(1000.0 / 16))  # dw/dh clamp: a 16 px box grows to 1000 px at most


@dataclass
class Detections:
    """One image's kept regions: boxes (R, 4) x1, y1, x2, y2 in original-image pixels, features (R, F),
    the best object class and its probability, the full class distribution (R, C) where the detector has
    one, attributes where it has them, and the size the image was resized to."""

    boxes: Tensor
    features: Tensor
    obj_ids: Tensor | None = None
    obj_probs: Tensor | None = None
    cls_prob: Tensor | None = None
    attr_ids: Tensor | None = None
    attr_probs: Tensor | None = None
    resized_size: tuple[int, int] | None = None
    proposals: tuple[Tensor, Tensor] | None = None  # (P, 4) resized-image pixels and logits, when asked

    def __len__(self) -> int:
        return int(self.boxes.shape[0])


def decode_boxes(deltas: Tensor, boxes: Tensor, weights: tuple[float, float, float, float]) -> Tensor:
    """Apply (dx, dy, dw, dh) deltas (N, 4) to boxes (N, 4) (the R-CNN box transform, no +1 in widths)."""
    boxes = boxes.to(deltas.dtype)
    widths = boxes[:, 2] - boxes[:, 0]
    heights = boxes[:, 3] - boxes[:, 1]
    ctr_x = boxes[:, 0] + 0.5 * widths
    ctr_y = boxes[:, 1] + 0.5 * heights
    wx, wy, ww, wh = weights
    dx = deltas[:, 0] / wx
    dy = deltas[:, 1] / wy
    dw = torch.clamp(deltas[:, 2] / ww, max=SCALE_CLAMP)
    dh = torch.clamp(deltas[:, 3] / wh, max=SCALE_CLAMP)
    px = dx * widths + ctr_x
    py = dy * heights + ctr_y
    pw = torch.exp(dw) * widths
    ph = torch.exp(dh) * heights
    return torch.stack((px - 0.5 * pw, py - 0.5 * ph, px + 0.5 * pw, py + 0.5 * ph), dim=1)


def select_reference(
    boxes: Tensor, scores: Tensor, thresholds: tuple[float, ...], min_boxes: int, max_boxes: int
) -> Tensor:
    """The LXMERT demo's rule: one class-agnostic NMS over each region's best-class box, trying the IoU
    thresholds in order until at least ``min_boxes`` survive; at most ``max_boxes`` (best first). No score
    threshold. If no threshold reaches ``min_boxes``, the last threshold's survivors are kept."""
    keep = boxes.new_zeros(0, dtype=torch.long)
    for t in thresholds:
        keep = nms(boxes, scores, t)[:max_boxes]
        if min_boxes <= len(keep) <= max_boxes:
            return keep
    return keep


def select_bottomup(
    boxes: Tensor, class_probs: Tensor, conf: float, min_boxes: int, max_boxes: int, nms_iou: float = 0.3
) -> Tensor:
    """The original bottom-up-attention rule (peteanderson80/bottom-up-attention ``tools/generate_tsv.py``):
    per-class NMS at IoU 0.3 over the regions' boxes; a region's confidence is its best surviving class
    score; keep regions with confidence >= ``conf``, then at least ``min_boxes`` and at most ``max_boxes``
    by confidence. Kept regions come in proposal order when the threshold decides, else by confidence."""
    max_conf = torch.zeros(len(boxes), dtype=class_probs.dtype, device=class_probs.device)
    for c in range(class_probs.shape[1]):
        scores = class_probs[:, c]
        keep = nms(boxes, scores, nms_iou)
        max_conf[keep] = torch.maximum(max_conf[keep], scores[keep])
    keep = torch.nonzero(max_conf >= conf).flatten()
    if min_boxes <= len(keep) <= max_boxes:
        return keep
    order = torch.argsort(max_conf, descending=True, stable=True)
    return order[: max(min_boxes, min(len(keep), max_boxes))][: max_boxes]
