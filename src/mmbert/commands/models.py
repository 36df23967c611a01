"""``mmbert models``: the registered presets with their parameter counts."""

from __future__ import annotations

import argparse

import torch


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list model presets with parameter counts")
    p.add_argument("--no-count", action="store_true", help="skip building each model to count parameters")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mmbert.models import MODELS, build_model

    print(f"{'name':<22} {'type':<14} {'dim':>5} {'layers':>6} {'parameters':>14}")
    for name in MODELS:
        config = MODELS[name]()
        count = ""
        if not args.no_count:
            with torch.device("meta"):
                count = f"{build_model(name).num_parameters():,}"
        print(f"{name:<22} {config.model_type:<14} {config.dim:>5} {config.num_layers:>6} {count:>14}")
    return 0
