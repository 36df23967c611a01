"""The synthetic world the demo runs on: generated once per (plan, seed) into the cache, then reused."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from mmbert.commands.demo.plan import DemoPlan


def ensure_world(cache: Path, plan: DemoPlan, seed: int, nlvr2_pairs: int = 0) -> Path:
    """The world for this plan and seed, generated once and then reused. ``nlvr2_pairs``: image pairs for
    NLVR2 (none by default: the demo does not run it; ``mmbert compare`` does)."""
    from mmbert.data.synthetic import WorldConfig, generate

    config = WorldConfig(feat_dim=plan.feat_dim, max_objects=plan.max_objects, max_extra_regions=2)
    pairs = f"-p{nlvr2_pairs}" if nlvr2_pairs else ""
    path = cache / f"world-s{seed}-n{plan.images}-f{plan.feat_dim}-o{plan.max_objects}{pairs}-v4"
    if (path / "manifest.json").exists():
        return path
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    from tqdm import tqdm

    bar = tqdm(desc="generate world", unit="image")

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    generate(tmp, plan.images, seed, config, nlvr2_pairs=nlvr2_pairs, progress=progress)
    bar.close()
    try:
        tmp.rename(path)
    except OSError:  # another process (``mmbert compare`` workers) generated it meanwhile: keep theirs
        if not (path / "manifest.json").exists():
            raise
        shutil.rmtree(tmp)
    return path


def vqa_files(world: Path, split: str) -> dict[str, Path]:
    return {"questions": world / "vqa" / f"v2_OpenEnded_synthetic_{split}_questions.json",
            "annotations": world / "vqa" / f"v2_synthetic_{split}_annotations.json"}  # fmt: skip
