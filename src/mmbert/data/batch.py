"""The typed records that flow between data and model: ``RegionFeatures`` (one image, from a feature
store), ``Regions`` (one image's regions ready for a model: limited, boxes normalised, tensors),
``CaptionExample`` (one unpadded caption-image pair) and ``Batch`` (padded, ready for
``model(**batch.model_inputs())``)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

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
class Regions:
    """One image's regions as a model consumes them (see ``mmbert.data.datasets.prepare_regions``).

    feats (R, F) float32; boxes (R, 4) x1, y1, x2, y2 normalised to [0, 1]; optional detector targets,
    named as the ``Batch`` fields they become: cls_prob (R, C) class distribution, labels (R,) detector
    object class, obj_conf (R,), attr_labels (R,), attr_conf (R,)."""

    feats: Tensor
    boxes: Tensor
    image_size: tuple[int, int]
    cls_prob: Tensor | None = None
    labels: Tensor | None = None
    obj_conf: Tensor | None = None
    attr_labels: Tensor | None = None
    attr_conf: Tensor | None = None

    @property
    def num_regions(self) -> int:
        return int(self.feats.shape[0])


@dataclass
class CaptionExample:
    """One caption-image pair, unpadded (what ``CaptionDataset[i]`` returns; ``collate`` pads a list).

    text_ids/segment_ids (T,) with [CLS] ... [SEP]; word_ids (T,) word index per token, None for special
    tokens (for whole-word masking); regions of the image. A pre-training step may fill the optional
    targets before collation: mlm_labels (T,) (-100 = not a target), pair_label (1 = caption matches the
    image), region_targets (R, F) and region_target_mask (R,) bool."""

    index: int
    image_id: str
    caption: str
    text_ids: Tensor
    segment_ids: Tensor
    word_ids: list[int | None]
    regions: Regions
    mlm_labels: Tensor | None = None
    pair_label: int | None = None
    region_targets: Tensor | None = None
    region_target_mask: Tensor | None = None


@dataclass
class Batch:
    """A padded batch. Masks are boolean, True = real. Labels use -100 for "ignore".

    text_ids/text_mask/segment_ids (B, T); region_feats (B, R, F), region_boxes (B, R, 4) normalised,
    region_mask (B, R); optional targets: mlm_labels (B, T), pair_labels (B,) (1 = matches),
    region_labels (B, R) hard detector class, region_cls_prob (B, R, C) detector distribution,
    region_targets (B, R, F) original features of masked regions, region_target_mask (B, R) which
    regions are prediction targets, region_obj_conf / region_attr_labels / region_attr_conf (LXMERT),
    answer_targets (B, A) soft answer scores, labels (task-specific), image_size (B, 2) each row's image
    height and width in pixels (for models that take it: VL-BERT's whole-image box), and ``meta``.
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
    image_size: Tensor | None = None
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

    def encoder_inputs(self, encoder: Any) -> dict[str, Tensor | None]:
        """``model_inputs`` plus ``image_size`` where ``encoder`` takes it (``takes_image_size``: VL-BERT's
        whole-image box [0, 0, w - 1, h - 1] and clamping), so tasks and pre-training feed it alike."""
        inputs = self.model_inputs()
        if self.image_size is not None and getattr(encoder, "takes_image_size", False):
            inputs["image_size"] = self.image_size
        return inputs

    def to(self, device: torch.device | str) -> Batch:
        moved = {
            f.name: (
                getattr(self, f.name).to(device)
                if isinstance(getattr(self, f.name), Tensor)
                else getattr(self, f.name)
            )
            for f in fields(self)
        }
        return type(self)(**moved)

    def pin_memory(self) -> Batch:
        """Called by ``DataLoader(pin_memory=True)`` on custom batch types."""
        pinned = {
            f.name: (
                getattr(self, f.name).pin_memory()
                if isinstance(getattr(self, f.name), Tensor)
                else getattr(self, f.name)
            )
            for f in fields(self)
        }
        return type(self)(**pinned)

    @property
    def size(self) -> int:
        return int(self.text_ids.shape[0])
