"""``mmbert`` command line. Each sub-command lives in its own module under ``mmbert.commands`` and
registers itself through ``register(subparsers)``; this file only lists them."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from mmbert.commands import (
    convert,
    demo,
    evaluate,
    features,
    finetune,
    inspect,
    models,
    pretrain,
    score,
    synthetic,
)

COMMANDS = [models, inspect, convert, demo, features, synthetic, pretrain, finetune, evaluate, score]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmbert",
        description="BERT and the vision-and-language BERT family: models, checkpoints, pre-training, tasks.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, KeyError, TypeError) as e:
        # Bad input gets one clear line, not a stack trace (set MMBERT_DEBUG=1 for the trace).
        import os

        if os.environ.get("MMBERT_DEBUG"):
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"mmbert {args.command}: error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
