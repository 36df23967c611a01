"""``mmbert inspect NAME|DIR``: layer plan, shapes and parameter counts of a preset or checkpoint."""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import torch


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="show a model's layer plan, shapes and parameter counts")
    p.add_argument(
        "model",
        help="a preset name (see `mmbert models`), a checkpoint directory or an authors' checkpoint file",
    )
    p.add_argument("--shapes", action="store_true", help="also list every parameter tensor with its shape")
    from mmbert.commands.convert import add_source_arguments

    add_source_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mmbert.commands.convert import source_options
    from mmbert.convert import load_model
    from mmbert.models import MODELS, build_model

    if Path(args.model).exists():
        model = load_model(args.model, **source_options(args))
    elif args.model in MODELS:
        with torch.device("meta"):
            model = build_model(args.model)
    else:
        raise ValueError(f"{args.model!r} is neither a directory nor a preset; presets: {', '.join(MODELS)}")
    config = model.config
    print(f"{args.model}: {type(model).__name__} ({config.model_type})")
    if hasattr(model, "source"):
        origin = getattr(model, "converted_from", None)
        print(f"detected source: {model.source}" + (f" (converted from {origin})" if origin else ""))
    report = getattr(model, "source_report", None)
    if report is not None:
        print("\n".join(f"  {line}" for line in report.summary().splitlines()))
    print("config: " + ", ".join(f"{k}={v}" for k, v in config.to_dict().items() if k != "model_type"))
    print("layer plan:")
    for line in model.layer_plan():
        print(f"  {line}")
    groups: dict[str, int] = defaultdict(int)
    for name, p in model.named_parameters():
        groups[name.split(".")[0]] += p.numel()
    print("parameters:")
    for group, n in groups.items():
        print(f"  {group:<24} {n:>14,}")
    print(f"  {'total':<24} {model.num_parameters():>14,}")
    if args.shapes:
        for name, p in model.named_parameters():
            print(f"  {name:<60} {tuple(p.shape)}")
    return 0
