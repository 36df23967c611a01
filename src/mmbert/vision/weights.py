"""Reading detector weights from a local file (``torch.save`` state dict or safetensors)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import Tensor


def load_state_dict_file(path: str | Path) -> dict[str, Tensor]:
    """A state dict from ``path``: ``.safetensors``, or a ``torch.save`` pickle read with
    ``weights_only=True`` (a file that needs more than tensors is refused). Errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling / format errors come in many types
        raise ValueError(f"{path}: cannot read detector weights: {type(e).__name__}: {e}") from e
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]  # detectron2 / torchvision training checkpoints keep it under "model"
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{path}: not a state dict of tensors")
    return dict(state)


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def load_into(model: torch.nn.Module, state: dict[str, Tensor], path: str | Path, what: str) -> None:
    """Strict load with a message naming the file and the first mismatching keys or shapes."""
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches
        raise ValueError(f"{path}: weights do not fit the {what}: {str(e).splitlines()[-1].strip()}") from e
    if result.missing_keys or result.unexpected_keys:
        def few(keys: list[str]) -> str:
            return ", ".join(keys[:4]) + (f" (+{len(keys) - 4} more)" if len(keys) > 4 else "")

        raise ValueError(
            f"{path}: not weights of the {what}: missing [{few(result.missing_keys)}], "
            f"unexpected [{few(result.unexpected_keys)}]"
        )
