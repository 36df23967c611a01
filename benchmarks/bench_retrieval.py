"""Retrieval evaluation speed: N captions x M images, full forward per pair vs the dual-stream stages
(``encode_text`` / ``encode_vision`` once per caption / image, only ``fuse`` per pair).

Random weights and inputs (speed does not depend on them); both paths score the same pool and the
largest score difference is reported. Eval mode, no_grad, fp32. The two paths alternate ``--repeats``
times and the medians are reported (on a shared machine single timings drift a lot).

    python benchmarks/bench_retrieval.py                                   # lxmert_base, 8 images x 5 captions
    python benchmarks/bench_retrieval.py --model vilbert_base --images 16 --device cuda
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

import mmbert
from mmbert.data.batch import RegionFeatures
from mmbert.models.dual_stream import DualStreamModel
from mmbert.tasks.base import TaskModel, View
from mmbert.tasks.retrieval import MatchHead, pool_scores


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="lxmert_base")
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--captions-per-image", type=int, default=5)
    p.add_argument("--regions", type=int, default=36)
    p.add_argument("--text-len", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=40, help="pairs per forward")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = leave as is)")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    encoder = mmbert.build_model(args.model).eval()
    if not isinstance(encoder, DualStreamModel):
        raise SystemExit(f"{args.model} is not a dual-stream model: it has no stages to run apart")
    pooled_dim = getattr(encoder.config, "pooled_dim", encoder.config.dim)
    model = TaskModel(encoder, MatchHead(pooled_dim)).to(args.device).eval()
    rng = np.random.default_rng(0)
    n_text = args.images * args.captions_per_image
    top = min(1000, encoder.config.vocab_size)
    texts = [
        View([2, *rng.integers(5, top, args.text_len - 2).tolist(), 3], [0] * args.text_len)
        for _ in range(n_text)
    ]
    images = []
    for i in range(args.images):
        xy = rng.uniform(0, 300, (args.regions, 2))
        wh = rng.uniform(10, 300, (args.regions, 2))
        images.append(
            RegionFeatures(
                str(i),
                rng.normal(size=(args.regions, encoder.config.region_feat_dim)).astype(np.float32),
                np.concatenate([xy, xy + wh], 1).astype(np.float32),
                (600, 600),
            )
        )

    def timed(fast: bool) -> tuple[float, torch.Tensor]:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        scores = pool_scores(model, texts, images, args.batch_size, args.device, fast=fast)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - start, scores

    full_times, split_times = [], []
    with torch.no_grad():
        timed(True)  # warm-up (allocator, kernels)
        for _ in range(args.repeats):
            t, full = timed(False)
            full_times.append(t)
            t, split = timed(True)
            split_times.append(t)
    full_s, split_s = statistics.median(full_times), statistics.median(split_times)
    pairs = n_text * args.images
    print(
        json.dumps(
            {
                "model": args.model,
                "device": args.device,
                "threads": torch.get_num_threads(),
                "captions": n_text,
                "images": args.images,
                "pairs": pairs,
                "regions": args.regions,
                "text_len": args.text_len,
                "batch_size": args.batch_size,
                "full_forward_s": round(full_s, 3),
                "split_s": round(split_s, 3),
                "full_pairs_per_s": round(pairs / full_s, 1),
                "split_pairs_per_s": round(pairs / split_s, 1),
                "speedup": round(full_s / split_s, 2),
                "repeats": args.repeats,
                "full_times_s": [round(t, 2) for t in full_times],
                "split_times_s": [round(t, 2) for t in split_times],
                "max_abs_score_diff": float((full - split).abs().max()),
            }
        )
    )


if __name__ == "__main__":
    main()
