"""The metadata an extraction leaves beside its store: ``<store>.extract.json``.

It says which detector produced the features and with which settings (so that a resumed run or a merge
refuses to mix detectors), which images this process was given (so that a merge can prove nothing is
missing or duplicated), and which images were skipped as unreadable, by path. The store formats have no
common place for free-form metadata, hence a side file next to every kind of store.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from mmbert.atomic import atomic_write_json
from mmbert.data.features.base import FeatureStoreError

SUFFIX = ".extract.json"
VERSION = 1
SHARD_PATTERN = re.compile(r"\.rank(\d+)of(\d+)$")


def metadata_path(store: str | os.PathLike) -> Path:
    store = Path(store)
    return store.with_name(store.name + SUFFIX)


def read_metadata(store: str | os.PathLike) -> dict[str, Any] | None:
    """The store's extraction metadata, or None when it has none (a store from elsewhere)."""
    path = metadata_path(store)
    if not path.exists():
        return None
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise FeatureStoreError(f"{path}: unreadable extraction metadata: {e}") from e
    if not isinstance(meta, dict) or "detector" not in meta:
        raise FeatureStoreError(f"{path}: not extraction metadata (no 'detector' entry)")
    return meta


def write_metadata(store: str | os.PathLike, meta: dict[str, Any]) -> Path:
    return atomic_write_json(metadata_path(store), {"version": VERSION, **meta})


def shard_path(store: str | os.PathLike, rank: int, world_size: int) -> Path:
    """``feats.h5`` -> ``feats.rank0of2.h5``; ``feats`` (npz directory) -> ``feats.rank0of2``."""
    store = Path(store)
    tag = f".rank{rank}of{world_size}"
    suffix = store.suffix if store.suffix.lower() in (".tsv", ".h5", ".hdf5", ".lmdb") else ""
    stem = store.name[: -len(suffix)] if suffix else store.name
    return store.with_name(stem + tag + suffix)


def extraction_key(meta: dict[str, Any]) -> dict[str, Any]:
    """The part of the metadata two stores must share to be mixed: detector, weights and settings."""
    return {k: meta.get(k) for k in ("detector", "weights", "weights_sha256", "selection", "settings")}


def settings_diff(old: dict[str, Any], new: dict[str, Any]) -> str:
    """``name: stored -> new`` for each differing entry of the two extraction keys."""
    a, b = extraction_key(old), extraction_key(new)
    flat_a = {**{k: v for k, v in a.items() if k != "settings"}, **(a.get("settings") or {})}
    flat_b = {**{k: v for k, v in b.items() if k != "settings"}, **(b.get("settings") or {})}
    diffs = [f"{k}: {flat_a.get(k)!r} -> {flat_b.get(k)!r}" for k in sorted(set(flat_a) | set(flat_b))
             if flat_a.get(k) != flat_b.get(k)]  # fmt: skip
    return "; ".join(diffs) or "identical"
