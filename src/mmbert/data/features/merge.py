"""Join the shards of a multi-process extraction into one store, proving that nothing is missing or twice.

Each shard's metadata lists the images its rank was given and the ones it skipped as unreadable. The
merge refuses shards from different detectors or settings, a missing rank, an image in two shards, an
image a shard holds but was not given, and an image that was given but is neither stored nor reported
skipped (an interrupted rank: rerun it, it resumes). Records are written in the order of the
single-process run (ranks take images round-robin), so the merged store equals that run's.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from mmbert.data import features
from mmbert.data.features.base import FeatureStoreError, is_incomplete
from mmbert.data.features.metadata import extraction_key, read_metadata, settings_diff, write_metadata


@dataclass
class MergeReport:
    written: int = 0
    skipped_images: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        extra = f", {len(self.skipped_images)} unreadable images skipped by the ranks" if self.skipped_images else ""
        return f"{self.written} records merged{extra}"


def _few(ids: Sequence[str]) -> str:
    ids = sorted(ids)
    return ", ".join(repr(i) for i in ids[:5]) + (f" (+{len(ids) - 5} more)" if len(ids) > 5 else "")


def merge_shards(
    shards: Sequence[str | os.PathLike], out: str | os.PathLike, format: str | None = None, progress: bool = True
) -> MergeReport:
    if not shards:
        raise ValueError("merge: no shards given")
    metas = []
    for s in shards:
        meta = read_metadata(s)
        if meta is None:
            raise FeatureStoreError(f"{s}: no extraction metadata beside it ({Path(s).name}.extract.json); "
                                    "only stores written by `mmbert extract` can be merged")  # fmt: skip
        if not meta.get("complete"):
            raise FeatureStoreError(f"{s}: its extraction did not finish; rerun that rank (it resumes)")
        metas.append(meta)
    key = extraction_key(metas[0])
    for s, meta in zip(shards, metas):
        if extraction_key(meta) != key:
            raise FeatureStoreError(f"{s}: extracted with other settings than {shards[0]} "
                                    f"({settings_diff(metas[0], meta)})")  # fmt: skip
    worlds = {int((m.get("shard") or {}).get("world_size", 1)) for m in metas}
    if len(worlds) != 1:
        raise FeatureStoreError(f"shards come from runs of different sizes (world sizes {sorted(worlds)})")
    world = worlds.pop()
    ranks = [int((m.get("shard") or {}).get("rank", 0)) for m in metas]
    if sorted(ranks) != list(range(world)):
        missing = sorted(set(range(world)) - set(ranks))
        doubled = sorted({r for r in ranks if ranks.count(r) > 1})
        raise FeatureStoreError(f"shards of a {world}-process run: missing ranks {missing}, repeated ranks {doubled}")

    stores = [features.open(s) for s in shards]
    try:
        held: dict[str, int] = {}
        skipped: dict[str, str] = {}
        for r, (s, store, meta) in enumerate(zip(shards, stores, metas)):
            assigned = set(meta.get("assigned", []))
            keys = store.keys()
            stray = set(keys) - assigned
            if stray:
                raise FeatureStoreError(f"{s}: holds images it was not given: {_few(list(stray))}")
            for image_id in keys:
                if image_id in held:
                    raise FeatureStoreError(f"image {image_id!r} is in two shards: {shards[held[image_id]]} and {s}")
                held[image_id] = r
            lost = assigned - set(keys) - set(meta.get("skipped", {}))
            if lost:
                raise FeatureStoreError(f"{s}: {len(lost)} images it was given are neither stored nor reported "
                                        f"unreadable: {_few(list(lost))}; rerun that rank (it resumes)")  # fmt: skip
            skipped.update(meta.get("skipped", {}))
        by_rank = {int((m.get("shard") or {}).get("rank", 0)): (i, m) for i, m in enumerate(metas)}
        order: list[str] = []
        lists = [by_rank[r][1].get("assigned", []) for r in range(world)]
        for k in range(max(len(a) for a in lists)):
            order.extend(a[k] for a in lists if k < len(a))
        report = MergeReport(skipped_images=skipped)
        # ``with``: a failure or Ctrl-C aborts the writer, leaving the output marked incomplete; the next
        # merge into it resumes (an output left incomplete by a stopped merge is added to, not refused).
        mode = "a" if is_incomplete(out) else "w"
        with features.open(out, mode, format=format) as out_store:
            for image_id in tqdm(order, desc="merge", unit="img", disable=not progress):
                if image_id in held and image_id not in out_store:
                    out_store.write(stores[held[image_id]][image_id])
                    report.written += 1
        merged = {k: v for k, v in metas[0].items() if k not in ("version", "shard", "assigned", "skipped")}
        write_metadata(out, {**merged, "assigned": order, "skipped": skipped, "shard": None,
                             "merged_from": [str(s) for s in shards], "complete": True})  # fmt: skip
        return report
    finally:
        for store in stores:
            store.close()
