"""Region-feature extraction speed: images/s of each detector at the 600 px scale (shorter side 600,
longer at most 1000), one image per forward pass and batched.

Weights are random (the speed does not depend on their values; the published ones are not on this
machine). The inputs are scikit-image's astronaut photograph and its mirror image, all 512 x 512 -> 600 x
600, so that a batch really shares one backbone pass (mmbert batches only equally sized images). The time
is the detector's (preprocessing included), not image decoding or the store. After one warm-up call per
setting the best of ``--repeats`` runs over ``--images`` images is reported (the machine is shared: the
best is the least disturbed). butd is the full-size ResNet-101 C4 detector (2048-d): its res5 head over
300 proposals of 14 x 14 is most of its cost.

    python benchmarks/bench_extract.py                         # CPU, all four detectors, batch 1 and 2
    python benchmarks/bench_extract.py --device cuda --batch 8 --images 16
Prints one line per setting, then one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from mmbert.vision.extract import DETECTORS, ExtractOptions, build_detector


def photos(n: int) -> list[np.ndarray]:
    import skimage.data

    base = skimage.data.astronaut()
    return [np.ascontiguousarray(base if i % 2 == 0 else base[:, ::-1]) for i in range(n)]


def images_per_second(model, images: list[np.ndarray], batch: int, repeats: int, device: str) -> float:
    model.detect(images[:batch])  # warm-up
    best = float("inf")
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        for i in range(0, len(images), batch):
            model.detect(images[i : i + batch])
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return len(images) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--detectors", default=",".join(DETECTORS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=2, help="the batched setting's images per forward")
    parser.add_argument("--images", type=int, default=2, help="images per timed run (a multiple of --batch)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    images = photos(args.images)
    results = []
    for name in args.detectors.split(","):
        opts = ExtractOptions(detector=name, weights="random", min_size=600, max_size=1000, device=args.device,
                              **({} if name == "grid" else {"boxes": 36}))  # fmt: skip
        model, _ = build_detector(opts)
        for batch in sorted({1, args.batch}):
            ips = images_per_second(model, images, batch, args.repeats, args.device)
            row = {"detector": name, "batch": batch, "images_per_s": round(ips, 3), "feature_dim": model.feature_dim}
            results.append(row)
            print(f"{name:<14} batch {batch:<3} {ips:8.3f} images/s", flush=True)
        del model
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"cpu, {args.threads} threads"
    print(json.dumps({"benchmark": "extract", "scale": "600/1000", "device": device, "torch": torch.__version__,
                      "input": "512x512 photographs -> 600x600", "results": results}))  # fmt: skip


if __name__ == "__main__":
    main()
