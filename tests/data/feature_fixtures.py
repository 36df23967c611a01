"""Helpers for the feature-store, caption and dataset tests (fixtures in conftest.py)."""

from __future__ import annotations

import numpy as np

from mmbert.data.batch import RegionFeatures

FEAT_DIM = 16
NUM_CLASSES = 7
WORDS = ["a", "dog", "cat", "on", "the", "red", "mat", "runs", "sits", "man", "with", "hat", "."]


def make_region_record(
    image_id: str, n: int, seed: int, dim: int = FEAT_DIM, full: bool = True, size: tuple[int, int] = (60, 80)
) -> RegionFeatures:
    """A valid record: n regions of ``dim`` features, boxes inside a (height, width) image, and (when
    ``full``) every optional detector array."""
    rng = np.random.default_rng(seed)
    h, w = size
    xy = rng.uniform(0, [w / 2, h / 2], size=(n, 2))
    wh = rng.uniform(2, [w / 2, h / 2], size=(n, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    opt = {}
    if full:
        probs = rng.random((n, NUM_CLASSES)).astype(np.float32)
        opt = dict(
            cls_prob=probs / probs.sum(1, keepdims=True),
            obj_id=rng.integers(1, NUM_CLASSES, n).astype(np.int64),
            obj_conf=rng.random(n).astype(np.float32),
            attr_id=rng.integers(0, 5, n).astype(np.int64),
            attr_conf=rng.random(n).astype(np.float32),
        )
    return RegionFeatures(image_id, rng.standard_normal((n, dim)).astype(np.float32), boxes, (h, w), **opt)


def assert_same_record(
    a: RegionFeatures, b: RegionFeatures, fields=("cls_prob", "obj_id", "obj_conf", "attr_id", "attr_conf")
) -> None:
    """Exact equality: ids, sizes, dtypes and every value bit for bit."""
    assert a.image_id == b.image_id
    assert a.image_size == b.image_size
    for name in ("feats", "boxes", *fields):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), f"{a.image_id}: {name} present in one record only"
        if x is not None:
            assert x.dtype == y.dtype, (name, x.dtype, y.dtype)
            assert x.shape == y.shape, (name, x.shape, y.shape)
            assert np.array_equal(x, y), name
