"""Training checkpoints: written atomically, the last K kept plus the best, RNG states included.

A checkpoint is one file ``step-00001234.pt`` in ``<run>/checkpoints``. It is written to a hidden
temporary file in the same directory, fsync'ed, renamed over its final name and the directory
fsync'ed: a crash at any moment (SIGKILL, power loss) leaves the previous checkpoints untouched and
at worst a ``.step-*.tmp`` file that nothing reads. ``best.pt`` is written the same way.

Loading uses ``torch.load(weights_only=True)``: tensors, numbers, strings and containers only, so the
RNG states are stored as tensors / lists rather than numpy objects.
"""

from __future__ import annotations

import os
import random
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmbert.atomic import atomic_torch_save

CHECKPOINT_RE = re.compile(r"^step-(\d{8,})\.pt$")


def checkpoint_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """(step, path) of the complete step checkpoints, oldest first (temp files are never listed)."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = CHECKPOINT_RE.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def save_checkpoint(run_dir: str | os.PathLike, step: int, state: dict[str, Any], keep_last: int = 3) -> Path:
    """Write ``step-XXXXXXXX.pt`` atomically, then delete the oldest beyond ``keep_last``."""
    if keep_last < 1:
        raise ValueError(f"keep_last must be >= 1, got {keep_last}")
    target = checkpoint_dir(run_dir) / f"step-{step:08d}.pt"
    atomic_torch_save(state, target)
    for _, old in list_checkpoints(run_dir)[:-keep_last]:
        old.unlink(missing_ok=True)
    return target


def save_best(run_dir: str | os.PathLike, state: dict[str, Any]) -> Path:
    target = checkpoint_dir(run_dir) / "best.pt"
    atomic_torch_save(state, target)
    return target


def remove_stale_temp_files(run_dir: str | os.PathLike) -> list[Path]:
    """Delete the temporary files of writes that a crash interrupted (they are never read)."""
    folder = checkpoint_dir(run_dir)
    stale = [p for p in folder.glob(".*.tmp")] if folder.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def load_latest(run_dir: str | os.PathLike) -> tuple[dict[str, Any], Path] | None:
    """The newest checkpoint that loads; a damaged newer one is reported and skipped. None if none."""
    for step, path in reversed(list_checkpoints(run_dir)):
        try:
            return load_checkpoint(path), path
        except Exception as e:  # noqa: BLE001 - any unreadable file: fall back to the previous one
            warnings.warn(f"checkpoint {path} (step {step}) is unreadable ({e}); trying the previous one", stacklevel=2)
    return None


# ------------------------------------------------------------------------------------------ RNG ---
def rng_state() -> dict[str, Any]:
    """This process's RNG states (torch CPU, every CUDA device, numpy, python) in loadable types."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": _to_lists(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    random.setstate(_to_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_lists(x: Any) -> Any:
    return [_to_lists(v) for v in x] if isinstance(x, (tuple, list)) else x


def _to_tuples(x: Any) -> Any:
    return tuple(_to_tuples(v) for v in x) if isinstance(x, list) else x
