"""Padding to the longest item of the batch, into the typed :class:`~mmbert.data.batch.Batch`.

``collate_captions(examples)`` pads :class:`CaptionExample` lists; its two halves, ``pad_1d`` (token
sequences) and ``collate_regions`` (regions with their detector targets), are public so that task
collates pad the same way. Padding values: token ids ``pad_token_id``, labels -100, features, boxes,
probabilities and confidences 0; masks are bool, True = real.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor
from torch.utils.data import get_worker_info

from mmbert.data.batch import Batch, CaptionExample, Regions

IGNORE = -100
# Regions attribute -> (Batch field, padding value). feats/boxes are handled separately (always present).
REGION_TARGETS = {
    "cls_prob": ("region_cls_prob", 0.0),
    "labels": ("region_labels", IGNORE),
    "obj_conf": ("region_obj_conf", 0.0),
    "attr_labels": ("region_attr_labels", IGNORE),
    "attr_conf": ("region_attr_conf", 0.0),
}


def new_tensor(shape: tuple[int, ...], dtype: torch.dtype, fill: float | int | bool | None = None) -> Tensor:
    """A new CPU tensor; inside a ``DataLoader`` worker it is allocated in shared memory, so that handing
    the batch to the main process does not copy it once more (as ``default_collate`` does)."""
    if get_worker_info() is not None:
        storage = torch.empty(0, dtype=dtype)._typed_storage()._new_shared(math.prod(shape))
        out = torch.empty(0, dtype=dtype).set_(storage).view(shape)
    else:
        out = torch.empty(shape, dtype=dtype)
    return out if fill is None else out.fill_(fill)


def pad_1d(seqs: Sequence[Tensor], value: int | float) -> tuple[Tensor, Tensor]:
    """(T_i,) tensors -> padded (B, T) and mask (B, T) bool, T = the longest."""
    longest = max((int(s.shape[0]) for s in seqs), default=0)
    out = torch.full((len(seqs), longest), value, dtype=seqs[0].dtype if seqs else torch.long)
    mask = torch.zeros(len(seqs), longest, dtype=torch.bool)
    for i, s in enumerate(seqs):
        out[i, : s.shape[0]] = s
        mask[i, : s.shape[0]] = True
    return out, mask


def _pad_rows(rows: Sequence[Tensor], longest: int, value: float | int) -> Tensor:
    """(R_i, ...) tensors -> (B, R, ...) padded with ``value``."""
    first = rows[0]
    shape = (len(rows), longest, *first.shape[1:])
    if all(r.shape[0] == longest for r in rows):
        return torch.stack(list(rows), out=new_tensor(shape, first.dtype))
    out = new_tensor(shape, first.dtype, value)
    for i, r in enumerate(rows):
        out[i, : r.shape[0]] = r
    return out


def collate_regions(regions: Sequence[Regions]) -> dict[str, Tensor | None]:
    """Regions of B images -> region_feats (B, R, F), region_boxes (B, R, 4), region_mask (B, R) and,
    when every image has them, region_cls_prob (B, R, C), region_labels, region_obj_conf,
    region_attr_labels, region_attr_conf (B, R). Targets present for some images only are an error
    (mixed stores), not silently dropped."""
    widths = {int(r.feats.shape[1]) for r in regions if r.num_regions}
    if len(widths) > 1:
        raise ValueError(f"region features of different widths in one batch: {sorted(widths)}")
    longest = max(r.num_regions for r in regions)
    width = widths.pop() if widths else 0
    if all(r.num_regions == longest for r in regions):  # fixed-size stores (36 boxes): no padding to fill
        feats = torch.stack(
            [r.feats for r in regions], out=new_tensor((len(regions), longest, width), torch.float32)
        )
        boxes = torch.stack([r.boxes for r in regions]).float()
        mask = torch.ones(len(regions), longest, dtype=torch.bool)
    else:
        feats = new_tensor((len(regions), longest, width), torch.float32, 0.0)
        boxes = torch.zeros(len(regions), longest, 4, dtype=torch.float32)
        mask = torch.zeros(len(regions), longest, dtype=torch.bool)
        for i, r in enumerate(regions):
            n = r.num_regions
            feats[i, :n] = r.feats
            boxes[i, :n] = r.boxes
            mask[i, :n] = True
    out: dict[str, Tensor | None] = {"region_feats": feats, "region_boxes": boxes, "region_mask": mask}
    for attr, (name, value) in REGION_TARGETS.items():
        values = [getattr(r, attr) for r in regions]
        have = [v is not None for v in values]
        if all(have):
            out[name] = _pad_rows(values, longest, value)
        elif any(have):
            raise ValueError(
                f"{attr} is present for {sum(have)} of {len(values)} images in the batch (mixed stores?)"
            )
        else:
            out[name] = None
    return out


def collate_captions(examples: Sequence[CaptionExample], pad_token_id: int = 0) -> Batch:
    """Caption examples -> ``Batch``: text padded with ``pad_token_id``, regions with zeros, masks bool.
    Optional per-example targets (mlm_labels, pair_label, region_targets, region_target_mask) are carried
    when every example has them. ``meta`` holds image_ids, captions and indices."""
    if not examples:
        raise ValueError("cannot collate an empty list of examples")
    text_ids, text_mask = pad_1d([e.text_ids for e in examples], pad_token_id)
    segment_ids, _ = pad_1d([e.segment_ids for e in examples], 0)
    batch = Batch(
        text_ids=text_ids,
        text_mask=text_mask,
        segment_ids=segment_ids,
        **collate_regions([e.regions for e in examples]),
    )
    if _all_or_none(examples, "mlm_labels"):
        batch.mlm_labels, _ = pad_1d([e.mlm_labels for e in examples], IGNORE)
    if _all_or_none(examples, "pair_label"):
        batch.pair_labels = torch.tensor([int(e.pair_label) for e in examples], dtype=torch.long)
    longest = batch.region_mask.shape[1]
    if _all_or_none(examples, "region_targets"):
        batch.region_targets = _pad_rows([e.region_targets for e in examples], longest, 0.0)
    if _all_or_none(examples, "region_target_mask"):
        batch.region_target_mask = _pad_rows([e.region_target_mask.bool() for e in examples], longest, False)
    batch.meta = {
        "image_ids": [e.image_id for e in examples],
        "captions": [e.caption for e in examples],
        "indices": [e.index for e in examples],
    }
    return batch


def _all_or_none(examples: Sequence[CaptionExample], name: str) -> bool:
    have = [getattr(e, name) is not None for e in examples]
    if any(have) and not all(have):
        raise ValueError(f"{name} is set on {sum(have)} of {len(have)} examples; set it on all or none")
    return all(have)
