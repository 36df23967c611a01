"""Feature-store access for tasks: open a store (or take a mapping as it is), cap the regions per image,
and count the records whose image is absent."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from mmbert.data import features as features_api
from mmbert.data.batch import RegionFeatures
from mmbert.data.features.validate import training_problem
from mmbert.tasks.records import LoadReport, TaskDataError


def open_features(source: Any, trust_pickle: bool = False) -> Mapping[str, RegionFeatures]:
    """A feature store from a path (through ``mmbert.data.features.open``) or an object that already maps
    image ids to ``RegionFeatures`` (a store, or a dict in tests)."""
    is_path = isinstance(source, (str, os.PathLike))
    if not is_path and hasattr(source, "__getitem__") and hasattr(source, "__contains__"):
        return source
    return features_api.open(source, trust_pickle=trust_pickle)


def check_feature_width(store: Mapping[str, RegionFeatures], config: Any, source: Any) -> None:
    """At start-up: the store's feature width (read off its first record) must be the model's
    ``region_feat_dim``; fail naming both rather than deep inside the first batch."""
    expected = getattr(config, "region_feat_dim", None)
    keys = store.keys() if hasattr(store, "keys") else []
    if not expected or not len(keys):
        return
    first = next(iter(keys))
    width = int(store[first].feats.shape[1])
    if width != expected:
        raise ValueError(
            f"{source}: features are {width}-d (image {first!r}) but the model's region_feat_dim is "
            f"{expected}; extract features of that width or build the model with region_feat_dim={width}"
        )


def region_lookup(
    store: Mapping[str, RegionFeatures], image_id: str, max_regions: int | None
) -> RegionFeatures:
    """``store[image_id]`` with at most ``max_regions`` regions (the detector's order, best first). A record
    that would break or poison training (NaN/inf, flipped boxes, a non-positive size) names the store
    and the image here, not as a batch position inside the model."""
    feats = store[image_id]
    problem = training_problem(feats)
    if problem is not None:
        where = getattr(store, "path", "feature store")
        raise TaskDataError(f"{where}: image {image_id!r}: {problem} (`mmbert features check` lists every such "
                            "record)")  # fmt: skip
    if max_regions is not None and feats.num_regions > max_regions:
        keep = slice(0, max_regions)
        feats = RegionFeatures(
            image_id=feats.image_id,
            feats=feats.feats[keep],
            boxes=feats.boxes[keep],
            image_size=feats.image_size,
        )
    return feats


def check_images(
    image_ids: Sequence[str], store: Mapping[str, RegionFeatures] | None, report: LoadReport, source: str
) -> set[str]:
    """The ids absent from the store (counted in ``report``; callers skip those records)."""
    if store is None:
        return set()
    missing = {i for i in dict.fromkeys(image_ids) if i not in store}
    for i in sorted(missing):
        report.add(f"records whose image is absent from the feature store ({source})", i)
    return missing
