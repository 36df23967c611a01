"""``mmbert`` command line. Each sub-command lives in its own module under ``mmbert.commands`` and
registers itself through ``register(subparsers)``; this file only lists them."""

from __future__ import annotations

import argparse
import errno
import sys
from collections.abc import Sequence

from mmbert.commands import (
    compare,
    convert,
    demo,
    evaluate,
    extract,
    features,
    field_tasks,
    finetune,
    inspect,
    models,
    pretrain,
    score,
    synthetic,
)

COMMANDS = [
    models,
    inspect,
    convert,
    demo,
    field_tasks,
    compare,
    features,
    extract,
    synthetic,
    pretrain,
    finetune,
    evaluate,
    score,
]


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
    _ignore_file_size_signal()
    try:
        if getattr(args, "lock_out", False):  # a training run: one process per run directory
            from mmbert.lock import lock_run_directory

            with lock_run_directory(args.out):
                return int(args.func(args) or 0)
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        # Ctrl-C: one line and the conventional 130; checkpoints already written are complete files
        # (atomic writes), so --resume continues from the last one.
        print(f"mmbert {args.command}: interrupted (Ctrl-C); files written so far are kept "
              "(training runs continue with --resume)", file=sys.stderr)  # fmt: skip
        return 130
    except (ValueError, FileNotFoundError, KeyError, TypeError, OSError, RuntimeError) as e:
        # Bad input and refused operations get one clear line, not a stack trace (MMBERT_DEBUG=1 for the
        # trace). RuntimeError: only mmbert's own refusals (locks, devices, lost peers), see _is_ours.
        import os

        if os.environ.get("MMBERT_DEBUG") or (isinstance(e, RuntimeError) and not _is_ours(e)):
            raise
        print(f"mmbert {args.command}: error: {describe_error(e)}", file=sys.stderr)
        return 1


def describe_error(e: BaseException) -> str:
    """The one line for an error: the message, or for an OS error the file and what went wrong with it."""
    if isinstance(e, KeyError) and e.args:
        return str(e.args[0])
    if isinstance(e, OSError) and not isinstance(e, FileNotFoundError) and e.strerror:
        where = f"{e.filename}: " if e.filename else ""
        hint = _OS_HINTS.get(e.errno, "")
        return f"{where}{e.strerror}{hint}"
    return str(e).splitlines()[0] if str(e) else type(e).__name__


_OS_HINTS = {
    errno.ENOSPC: " (the disk is full: free space or write elsewhere)",
    errno.EFBIG: " (the file size limit was reached: see `ulimit -f`)",
    errno.EROFS: " (read-only file system: choose a writable output path)",
    errno.EACCES: " (no permission: choose a writable output path)",
    errno.ENOTDIR: " (a file stands where a directory is needed)",
    errno.EEXIST: " (a file stands where a directory is needed)",
}


def _is_ours(e: RuntimeError) -> bool:
    from mmbert.lock import LockedError
    from mmbert.train.distributed import DeviceError, PeerLostError

    return isinstance(e, (LockedError, DeviceError, PeerLostError))


def _ignore_file_size_signal() -> None:
    """Past ``ulimit -f`` the kernel sends SIGXFSZ, which kills the process without a word; ignored, the
    write fails with EFBIG instead, which is reported like a full disk."""
    import signal

    if hasattr(signal, "SIGXFSZ"):
        try:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        except ValueError:  # not the main thread
            pass


if __name__ == "__main__":
    sys.exit(main())
