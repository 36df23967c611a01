"""``mmbert synthetic generate --out DIR [--images N --seed S]``: write the built-in synthetic world in the
real corpora's formats (see ``mmbert.data.synthetic.generate`` for the file list)."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synthetic", help="the built-in synthetic V&L world")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    g = actions.add_parser("generate", help="generate a world and write it in the real data formats")
    g.add_argument("--out", required=True, help="output directory (must be new or empty)")
    g.add_argument("--images", type=int, default=1000, help="number of images (default 1000)")
    g.add_argument("--seed", type=int, default=0, help="random seed: the same seed gives the same bytes")
    g.add_argument("--feat-dim", type=int, default=2048, help="detector feature width (default 2048)")
    g.add_argument("--nlvr2-pairs", type=int, default=None, help="NLVR2 image pairs (default: images / 4)")
    g.add_argument("--no-images", action="store_true", help="skip rendering PNGs (features and text only)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.set_defaults(func=run_generate)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def run_generate(args: argparse.Namespace) -> int:
    from mmbert.data.synthetic import WorldConfig, generate

    if args.images < 3:
        raise ValueError(f"--images must be at least 3 (train, val and test), got {args.images}")
    config = WorldConfig(feat_dim=args.feat_dim)
    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=None, desc="generating", unit="image")

    def progress(done: int, total: int) -> None:
        if bar is not None:
            bar.total = total
            bar.update(done - bar.n)

    try:
        manifest = generate(args.out, args.images, args.seed, config, args.nlvr2_pairs,
                            render_images=not args.no_images, progress=progress)  # fmt: skip
    finally:
        if bar is not None:
            bar.close()
    print(json.dumps({"out": str(args.out), "seed": manifest["seed"], "splits": manifest["splits"],
                      "counts": manifest["counts"]}))  # fmt: skip
    return 0
