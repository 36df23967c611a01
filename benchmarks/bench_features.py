"""Region-feature throughput: examples/s from each store through ``CaptionDataset`` + collate, and the
resident memory of a reader doing random access over the whole store.

Every store holds the same LXMERT-style records (36 regions x 2048-d float32, boxes, object and attribute
labels with confidences) for ``--images`` images, with ``--captions`` captions of 20 tokens each per image
(``max_text_length=20``). Each configuration iterates a shuffled ``DataLoader`` (batch 64) over the whole
dataset ``--epochs`` times after a warm-up batch (persistent workers); the best epoch is reported (the
machine is shared: the best is the least disturbed) with the median beside it. The stores were just
written, so the page cache is warm: this measures decoding and batching, not the disk.

RSS growth is measured in a fresh process per store that opens the store and reads every record once in
random order, split into anonymous memory (what the reader holds) and mapped file pages (LMDB reads
through a memory map: the pages it touched count in its RSS but belong to the page cache, which the
kernel reclaims under pressure).

    python benchmarks/bench_features.py                    # 1000 images, all four stores, 0 and 2 workers
    python benchmarks/bench_features.py --images 100 --workers 0     # quick check
Prints one line per configuration, then one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from mmbert.data import features
from mmbert.data.batch import RegionFeatures
from mmbert.data.captions import Caption
from mmbert.data.datasets import CaptionDataset
from mmbert.data.tokenizer import Tokenizer

STORES = {"tsv": "feats.tsv", "hdf5": "feats.h5", "lmdb": "feats.lmdb", "npz": "feats_npz"}
WORDS = "a man dog cat red blue on the with sits runs near table street car tree small big and of".split()


def make_record(i: int, rng: np.random.Generator, regions: int, dim: int) -> RegionFeatures:
    h, w = 480, 640
    xy = rng.uniform(0, [w / 2, h / 2], size=(regions, 2))
    wh = rng.uniform(8, [w / 2, h / 2], size=(regions, 2))
    return RegionFeatures(
        image_id=f"COCO_train2014_{i:012d}",
        feats=rng.standard_normal((regions, dim), dtype=np.float32),
        boxes=np.concatenate([xy, xy + wh], 1).astype(np.float32),
        image_size=(h, w),
        obj_id=rng.integers(1, 1600, regions),
        obj_conf=rng.random(regions, dtype=np.float32),
        attr_id=rng.integers(0, 400, regions),
        attr_conf=rng.random(regions, dtype=np.float32),
    )


def memory_mb() -> dict[str, float]:
    """VmRSS and its parts: RssAnon (memory the process holds) and RssFile (file pages it has mapped,
    e.g. LMDB's memory map: shared with the page cache and reclaimable by the kernel)."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) / 1024
    return out


def rss_child(path: str) -> None:
    """Run in a fresh process: memory before and after reading every record once in random order, and
    the rate of those bare reads (no tokenising, no collate)."""
    store = features.open(path)
    ids = store.keys()
    store[ids[0]]
    before = memory_mb()
    start = time.perf_counter()
    for i in random.Random(0).sample(range(len(ids)), len(ids)):
        store[ids[i]]
    seconds = time.perf_counter() - start
    after = memory_mb()
    print(
        json.dumps(
            {
                "read_only_records_per_s": round(len(ids) / seconds, 1),
                "rss_before_mb": round(before["VmRSS"], 1),
                "rss_growth_mb": round(after["VmRSS"] - before["VmRSS"], 1),
                "rss_anon_growth_mb": round(after["RssAnon"] - before["RssAnon"], 1),
                "rss_file_growth_mb": round(after["RssFile"] - before["RssFile"], 1),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--captions", type=int, default=2, help="captions per image")
    parser.add_argument("--regions", type=int, default=36)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument(
        "--epochs", type=int, default=3, help="timed epochs per configuration (best and median kept)"
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--formats", nargs="+", default=list(STORES), choices=list(STORES))
    parser.add_argument("--dir", help="where to write the stores (default: a temporary directory)")
    parser.add_argument("--rss-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(args.rss_child)
        return
    torch.set_num_threads(1)
    tmp = tempfile.TemporaryDirectory(dir=args.dir)
    root = Path(tmp.name)
    vocab = root / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    tokenizer = Tokenizer.from_vocab(vocab)
    rng = np.random.default_rng(0)
    captions = [
        Caption(f"COCO_train2014_{i:012d}", " ".join(rng.choice(WORDS, 18)))
        for i in range(args.images)
        for _ in range(args.captions)
    ]
    results: dict = {
        "device": "cpu",
        "cpu_count": os.cpu_count(),
        "load_avg_1m_at_start": round(os.getloadavg()[0], 2),
        "torch_threads": torch.get_num_threads(),
        "images": args.images,
        "examples": len(captions),
        "regions": args.regions,
        "feat_dim": args.dim,
        "text_tokens": 20,
        "batch_size": args.batch,
        "stores": {},
    }
    writers = {fmt: features.open(root / STORES[fmt], "w") for fmt in args.formats}
    t0 = time.perf_counter()
    for i in range(args.images):
        rec = make_record(i, rng, args.regions, args.dim)
        for w in writers.values():
            w.write(rec)
    for w in writers.values():
        w.close()
    results["write_s"] = round(time.perf_counter() - t0, 2)
    for fmt in args.formats:
        path = root / STORES[fmt]
        size = sum(p.stat().st_size for p in path.rglob("*")) if path.is_dir() else path.stat().st_size
        entry: dict = {"store_mb": round(size / 2**20, 1)}
        data = CaptionDataset(captions, path, tokenizer, max_text_length=20, max_regions=args.regions)
        ex = data[0]
        assert ex.text_ids.shape == (20,) and ex.regions.feats.shape == (args.regions, args.dim)
        for workers in args.workers:
            loader = DataLoader(
                data,
                batch_size=args.batch,
                shuffle=True,
                num_workers=workers,
                collate_fn=data.collate,
                generator=torch.Generator().manual_seed(0),
                persistent_workers=workers > 0,
            )
            first = next(iter(loader))  # warm-up: worker start-up, handle opening
            assert first.region_feats.shape[1:] == (args.regions, args.dim)
            rates = []
            for _ in range(args.epochs):
                start, count = time.perf_counter(), 0
                for batch in loader:
                    count += batch.size
                rates.append(count / (time.perf_counter() - start))
            del loader
            entry[f"examples_per_s_workers{workers}"] = round(max(rates), 1)
            entry[f"examples_per_s_workers{workers}_median"] = round(statistics.median(rates), 1)
            print(
                f"{fmt:<5} workers={workers}: best {max(rates):8.1f}, median {statistics.median(rates):8.1f} "
                f"examples/s over {args.epochs} epochs of {len(data)}",
                flush=True,
            )
        child = subprocess.run(
            [sys.executable, __file__, "--rss-child", str(path)], capture_output=True, text=True, check=True
        )
        entry.update(json.loads(child.stdout.strip().splitlines()[-1]))
        print(
            f"{fmt:<5} random read of all {args.images} records: RSS +{entry['rss_growth_mb']} MB "
            f"(anonymous +{entry['rss_anon_growth_mb']} MB, mapped file pages +{entry['rss_file_growth_mb']} MB; "
            f"store {entry['store_mb']} MB)",
            flush=True,
        )
        results["stores"][fmt] = entry
    tmp.cleanup()
    results["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
