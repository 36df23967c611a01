"""``mmbert convert SRC DST --to hf|mmbert``: an mmbert, Hugging Face or authors' checkpoint to an mmbert or
Hugging Face directory (``--to hf`` refuses, with the reason, what Hugging Face cannot hold exactly)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="convert a checkpoint (mmbert, Hugging Face or the authors' files) to mmbert or Hugging Face",
        description="Read SRC (an mmbert or Hugging Face directory, detected from config.json, or an authors' "
        "checkpoint file, detected from its keys) and write DST. Pre-training and task heads are kept when SRC "
        "has them; --to hf refuses, naming the reason, what Hugging Face cannot hold exactly.",
    )
    p.add_argument("src", help="source checkpoint directory, or an authors' checkpoint file")
    p.add_argument("dst", help="destination directory (created; an existing non-empty one is refused unless it "
                   "holds an earlier `mmbert convert` output of the same format, or --force)")
    p.add_argument("--to", choices=["hf", "mmbert"], default="mmbert", help="output format (default: mmbert)")
    p.add_argument("--encoder-only", action="store_true", help="drop pre-training heads")
    p.add_argument("--force", action="store_true", help="write into a non-empty DST of another kind")
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
        "--volta-region-slots",
        type=int,
        help="VOLTA VL-BERT: the vision slots its loader padded to (max_region_num + 1; default 37, pre-training)",
    )


def source_options(args: argparse.Namespace) -> dict:
    opts = {
        k: getattr(args, k)
        for k in ("llayers", "xlayers", "rlayers", "volta_region_slots")
        if getattr(args, k, None) is not None
    }
    return {"config": args.config, "source": args.source, **opts}


MARKER = ".mmbert-convert.json"  # what `mmbert convert` leaves in DST: its output format


def check_destination(src: str, dst: str, to: str, force: bool) -> None:
    """Refuse SRC = DST, and a non-empty DST that is not an earlier ``mmbert convert`` output in the same
    format (a fine-tuned model there would become a mix of files) unless ``force``."""
    import json
    from pathlib import Path

    source, target = Path(src), Path(dst)
    if target.exists() and source.exists() and source.resolve() == target.resolve():
        raise ValueError(f"{dst}: the destination is the source directory; choose another DST")
    if target.exists() and not target.is_dir():
        raise ValueError(f"{dst}: exists and is not a directory")
    if force or not target.is_dir() or not any(target.iterdir()):
        return
    try:
        previous = json.loads((target / MARKER).read_text(encoding="utf-8")).get("to")
    except (OSError, ValueError, AttributeError):
        previous = None
    if previous == to:
        return
    what = f"an `mmbert convert --to {previous}` output" if previous else "files not written by `mmbert convert`"
    raise ValueError(f"{dst}: not empty ({what}); refusing to write {to} files into it: choose an empty DST, "
                     "or pass --force")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from mmbert.atomic import atomic_write_json
    from mmbert.convert import CheckpointError, export_hf, load_model, load_pretraining
    from mmbert.convert.hf_tasks import export_question_answering
    from mmbert.convert.load import is_lxmert_question_answering

    check_destination(args.src, args.dst, args.to, args.force)
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
    kind = _what(model)
    if args.to == "hf" and is_lxmert_question_answering(model):  # a fine-tuned VQA / GQA file
        (name,) = model.task_heads
        export_question_answering(model.encoder, model.task_heads[name], args.dst)
    elif args.to == "hf":
        export_hf(model, args.dst)
    else:
        model.save(args.dst)
    atomic_write_json(f"{args.dst}/{MARKER}", {"to": args.to, "src": str(args.src)})
    print(f"wrote {kind} ({type(model).__name__}) to {args.dst} in {args.to} format")
    return 0


def _what(model) -> str:
    """The parts of the model the command writes, for its closing line."""
    if not hasattr(model, "heads"):
        return "encoder"
    heads = [n for n in ("mlm", "pair", "region", "answer") if getattr(model.heads, n) is not None]
    parts = ["encoder"]
    if heads:
        parts.append(f"pre-training heads {', '.join(heads)}")
    if len(model.task_heads):
        parts.append(f"task heads {', '.join(model.task_heads)}")
    return " + ".join(parts)
