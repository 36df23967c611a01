"""Padding task examples into one ``Batch`` and the DataLoader that does it."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from mmbert.data.batch import Batch
from mmbert.data.boxes import normalise_boxes
from mmbert.tasks.records import Example


def collate(examples: Sequence[Example], pad_token_id: int = 0) -> Batch:
    """Pad a list of examples into one ``Batch``, flattening the views: row ``b * V + v`` is view v
    of example b. Text and regions are padded to the longest in the batch. Pixel boxes are normalised
    by each image's size, which ``batch.image_size`` (rows, 2: height, width) keeps for models that
    take it (VL-BERT's whole-image box, as in pre-training). Targets are stacked (padded with 0 along
    the first axis when their lengths differ, as for per-region targets) into ``batch.labels``.
    ``meta["items"]`` keeps each example's meta; ``meta["num_views"]`` the number of views per example."""
    if not examples:
        raise ValueError("collate needs at least one example")
    num_views = len(examples[0].views)
    if any(len(e.views) != num_views for e in examples):
        raise ValueError("all examples of a batch must have the same number of views")
    views = [v for e in examples for v in e.views]
    n = len(views)
    t = max(len(v.text_ids) for v in views)
    text_ids = torch.full((n, t), pad_token_id, dtype=torch.long)
    segment_ids = torch.zeros(n, t, dtype=torch.long)
    text_mask = torch.zeros(n, t, dtype=torch.bool)
    for i, v in enumerate(views):
        text_ids[i, : len(v.text_ids)] = torch.tensor(v.text_ids)
        segment_ids[i, : len(v.segment_ids)] = torch.tensor(v.segment_ids)
        text_mask[i, : len(v.text_ids)] = True
    batch = Batch(text_ids=text_ids, text_mask=text_mask, segment_ids=segment_ids)
    if any(v.regions is not None for v in views):
        if any(v.regions is None for v in views):
            raise ValueError("a batch mixes views with and without region features")
        r = max(v.regions.num_regions for v in views)  # type: ignore[union-attr]
        f = views[0].regions.feats.shape[1]  # type: ignore[union-attr]
        feats = torch.zeros(n, r, f)
        boxes = torch.zeros(n, r, 4)
        mask = torch.zeros(n, r, dtype=torch.bool)
        for i, v in enumerate(views):
            reg = v.regions
            k = reg.num_regions  # type: ignore[union-attr]
            feats[i, :k] = torch.tensor(reg.feats, dtype=torch.float32)  # type: ignore[union-attr]
            px = torch.tensor(reg.boxes, dtype=torch.float32)  # type: ignore[union-attr]
            boxes[i, :k] = normalise_boxes(px, reg.image_size)  # type: ignore[union-attr]
            mask[i, :k] = True
        batch.region_feats, batch.region_boxes, batch.region_mask = feats, boxes, mask
        batch.image_size = torch.tensor([list(v.regions.image_size) for v in views], dtype=torch.long)  # type: ignore[union-attr]
    targets = [e.target for e in examples]
    if all(x is not None for x in targets):
        batch.labels = _stack_padded(targets)  # type: ignore[arg-type]
    batch.meta = {"items": [e.meta for e in examples], "num_views": num_views}
    return batch


def _stack_padded(xs: Sequence[Tensor]) -> Tensor:
    if all(x.shape == xs[0].shape for x in xs):
        return torch.stack(list(xs))
    longest = max(x.shape[0] for x in xs)
    out = xs[0].new_zeros((len(xs), longest, *xs[0].shape[1:]))
    for i, x in enumerate(xs):
        out[i, : x.shape[0]] = x
    return out


def loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool = False,
    pad_token_id: int = 0,
    seed: int = 0,
    num_workers: int = 0,
) -> DataLoader:
    """A DataLoader over a task dataset that collates into ``Batch`` (seeded shuffling)."""
    g = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=g if shuffle else None,
        num_workers=num_workers,
        collate_fn=lambda ex: collate(ex, pad_token_id),
    )
