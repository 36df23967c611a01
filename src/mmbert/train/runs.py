"""What ``mmbert pretrain`` and ``mmbert finetune`` share around the trainer: a new run never lands on an
old run's checkpoints, and a non-finite loss stops the run with a message and exit status 1 (the
checkpoints before it stay; ``--resume`` continues from the last one)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mmbert.train.checkpoint import list_checkpoints
from mmbert.train.distributed import DistEnv, cleanup
from mmbert.train.loop import NonFiniteLossError, TrainResult, train


def refuse_old_checkpoints(out: str | os.PathLike, resume: bool) -> None:
    """Without ``--resume``, a run directory that already holds checkpoints is refused."""
    if not resume and list_checkpoints(Path(out)):
        raise ValueError(f"{out} already holds checkpoints; pass --resume to continue it or choose a new --out")


def train_or_stop(command: str, env: DistEnv, *args: Any, **kwargs: Any) -> TrainResult | None:
    """``train(*args, env=env, **kwargs)``; on a non-finite loss: print why, tear the process group
    down and return None (the caller exits with status 1)."""
    try:
        return train(*args, env=env, **kwargs)
    except NonFiniteLossError as e:
        print(f"mmbert {command}: stopped: {e}")
        cleanup(env)
        return None
