"""``mmbert convert SRC DST --to hf|mmbert``: between Hugging Face and mmbert checkpoint directories."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="convert a checkpoint directory (Hugging Face <-> mmbert)",
        description="Read SRC (an mmbert or Hugging Face directory; detected from config.json) and write DST. "
        "Pre-training heads are kept when SRC has them.",
    )
    p.add_argument("src", help="source checkpoint directory")
    p.add_argument("dst", help="destination directory (created)")
    p.add_argument("--to", choices=["hf", "mmbert"], default="mmbert", help="output format (default: mmbert)")
    p.add_argument("--encoder-only", action="store_true", help="drop pre-training heads")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mmbert.convert import CheckpointError, export_hf, load_model, load_pretraining

    model = None
    if not args.encoder_only:
        try:
            model = load_pretraining(args.src)
        except CheckpointError as e:
            if "no pre-training head weights" not in str(e):
                raise
    if model is None:
        model = load_model(args.src)
    kind = "encoder + pre-training heads" if model is not None and hasattr(model, "heads") else "encoder"
    if args.to == "hf":
        export_hf(model, args.dst)
    else:
        model.save(args.dst)
    print(f"wrote {kind} ({type(model).__name__}) to {args.dst} in {args.to} format")
    return 0
