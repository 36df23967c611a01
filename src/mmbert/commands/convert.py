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
    p.add_argument("src", help="source checkpoint directory, or an authors' checkpoint file")
    p.add_argument("dst", help="destination directory (created)")
    p.add_argument("--to", choices=["hf", "mmbert"], default="mmbert", help="output format (default: mmbert)")
    p.add_argument("--encoder-only", action="store_true", help="drop pre-training heads")
    add_source_arguments(p)
    p.set_defaults(func=run)


def add_source_arguments(p: argparse.ArgumentParser) -> None:
    """--config / --from and the authors' command-line settings (shared with ``mmbert inspect``)."""
    from mmbert.convert.load import SOURCE_CHOICES

    p.add_argument("--config", help="the authors' model config file, where the checkpoint carries none")
    p.add_argument(
        "--from",
        dest="source",
        choices=SOURCE_CHOICES,
        default="auto",
        help="source layout (default: detected from the container and key names)",
    )
    for name in ("llayers", "xlayers", "rlayers"):
        p.add_argument(f"--{name}", type=int, help=f"LXMERT's --{name}, checked against the weights")
    p.add_argument(
        "--volta-position-shift",
        choices=["true", "false"],
        help="VOLTA ctrl_vl-bert: reproduce its batch-wide text position shift (off by default)",
    )


def source_options(args: argparse.Namespace) -> dict:
    opts = {
        k: getattr(args, k) for k in ("llayers", "xlayers", "rlayers") if getattr(args, k, None) is not None
    }
    if getattr(args, "volta_position_shift", None) is not None:
        opts["volta_position_shift"] = args.volta_position_shift == "true"
    return {"config": args.config, "source": args.source, **opts}


def run(args: argparse.Namespace) -> int:
    from mmbert.convert import CheckpointError, export_hf, load_model, load_pretraining

    model = None
    opts = source_options(args)
    if not args.encoder_only:
        try:
            model = load_pretraining(args.src, **opts)
        except CheckpointError as e:
            if "no pre-training head weights" not in str(e):
                raise
    if model is None:
        model = load_model(args.src, **opts)
    report = getattr(model, "source_report", None)
    if report is not None:
        print(report.summary())
    kind = "encoder + pre-training heads" if model is not None and hasattr(model, "heads") else "encoder"
    if args.to == "hf":
        export_hf(model, args.dst)
    else:
        model.save(args.dst)
    print(f"wrote {kind} ({type(model).__name__}) to {args.dst} in {args.to} format")
    return 0
