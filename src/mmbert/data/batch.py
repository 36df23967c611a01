"""The typed records that flow between data and model: ``RegionFeatures`` (one image, from a feature
store) and ``Batch`` (padded, ready for ``model(**batch.model_inputs())``)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np
import torch
from torch import Tensor


@dataclass
class RegionFeatures:
    """One image's detector output. feats (R, F) float32; boxes (R, 4) x1, y1, x2, y2 in pixels;
    image_size (height, width); optional detector class distribution cls_prob (R, C), object and
    attribute labels with confidences."""

    image_id: str
    feats: np.ndarray
    boxes: np.ndarray
    image_size: tuple[int, int]
    cls_prob: np.ndarray | None = None
    obj_id: np.ndarray | None = None
    obj_conf: np.ndarray | None = None
    attr_id: np.ndarray | None = None
    attr_conf: np.ndarray | None = None

    @property
    def num_regions(self) -> int:
        return int(self.feats.shape[0])


@dataclass
class Batch:
    """A padded batch. Masks are boolean, True = real. Labels use -100 for "ignore".

    text_ids/text_mask/segment_ids (B, T); region_feats (B, R, F), region_boxes (B, R, 4) normalised,
    region_mask (B, R); optional targets: mlm_labels (B, T), pair_labels (B,) (1 = matches),
    region_labels (B, R) hard detector class, region_cls_prob (B, R, C) detector distribution,
    region_targets (B, R, F) original features of masked regions, region_target_mask (B, R) which
    regions are prediction targets, region_obj_conf / region_attr_labels / region_attr_conf (LXMERT),
    answer_targets (B, A) soft answer scores, labels (task-specific), and ``meta`` (ids for writers).
    """

    text_ids: Tensor
    text_mask: Tensor
    segment_ids: Tensor
    region_feats: Tensor | None = None
    region_boxes: Tensor | None = None
    region_mask: Tensor | None = None
    mlm_labels: Tensor | None = None
    pair_labels: Tensor | None = None
    region_labels: Tensor | None = None
    region_cls_prob: Tensor | None = None
    region_targets: Tensor | None = None
    region_target_mask: Tensor | None = None
    region_obj_conf: Tensor | None = None
    region_attr_labels: Tensor | None = None
    region_attr_conf: Tensor | None = None
    answer_targets: Tensor | None = None
    labels: Tensor | None = None
    meta: dict = field(default_factory=dict)

    def model_inputs(self) -> dict[str, Tensor | None]:
        return {
            "text_ids": self.text_ids,
            "text_mask": self.text_mask,
            "segment_ids": self.segment_ids,
            "region_feats": self.region_feats,
            "region_boxes": self.region_boxes,
            "region_mask": self.region_mask,
        }

    def to(self, device: torch.device | str) -> Batch:
        moved = {
            f.name: (
                getattr(self, f.name).to(device)
                if isinstance(getattr(self, f.name), Tensor)
                else getattr(self, f.name)
            )
            for f in fields(self)
        }
        return Batch(**moved)

    @property
    def size(self) -> int:
        return int(self.text_ids.shape[0])
