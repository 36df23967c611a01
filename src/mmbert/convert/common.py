"""Key maps between mmbert state dicts and foreign checkpoints, and strict, shape-checked loading.

A map is a list of ``Rule``s: one mmbert key, made from one or more foreign keys (concatenated along
dim 0, as the fused q/k/v projection needs), optionally with its two rows swapped (match heads whose
source puts "matches" at index 0). The same rules run backwards for export, so a round trip is exact.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded as asked; the message names the file and keys at fault."""


@dataclass(frozen=True)
class Rule:
    ours: str
    theirs: tuple[str, ...]
    flip_rows: bool = False
    row: int | None = None  # take this one row of the (single) foreign tensor (UNITER's mask_embedding[1])


def linear(ours: str, theirs: str, flip_rows: bool = False) -> list[Rule]:
    """weight and bias of a Linear or LayerNorm."""
    return [Rule(f"{ours}.{p}", (f"{theirs}.{p}",), flip_rows) for p in ("weight", "bias")]


def fused(ours: str, parts: Iterable[str]) -> list[Rule]:
    """One fused Linear (q|k|v or k|v) from separate foreign Linears."""
    parts = tuple(parts)
    return [Rule(f"{ours}.{p}", tuple(f"{t}.{p}" for t in parts)) for p in ("weight", "bias")]


def hf_self_attention_block(ours: str, theirs: str) -> list[Rule]:
    """An mmbert ``Block`` from a Hugging Face ``BertLayer`` (attention.self / attention.output /
    intermediate / output)."""
    return [
        *fused(f"{ours}.attn.qkv", (f"{theirs}.attention.self.{n}" for n in ("query", "key", "value"))),
        *linear(f"{ours}.attn.out", f"{theirs}.attention.output.dense"),
        *linear(f"{ours}.norm1", f"{theirs}.attention.output.LayerNorm"),
        *linear(f"{ours}.ffn.fc1", f"{theirs}.intermediate.dense"),
        *linear(f"{ours}.ffn.fc2", f"{theirs}.output.dense"),
        *linear(f"{ours}.norm2", f"{theirs}.output.LayerNorm"),
    ]


def hf_mlm_head(ours: str, theirs: str) -> list[Rule]:
    """mmbert ``MLMHead`` from HF ``cls.predictions`` (the decoder matrix is tied, so not listed)."""
    return [
        *linear(f"{ours}.transform.dense", f"{theirs}.transform.dense"),
        *linear(f"{ours}.transform.norm", f"{theirs}.transform.LayerNorm"),
        Rule(f"{ours}.bias", (f"{theirs}.bias",)),
    ]


def normalise_key(key: str) -> str:
    """Old TF-converted checkpoints name LayerNorm parameters gamma/beta."""
    if key.endswith(".gamma"):
        return key[: -len("gamma")] + "weight"
    if key.endswith(".beta"):
        return key[: -len("beta")] + "bias"
    return key


def import_state(
    rules: list[Rule], source: dict[str, Tensor], source_name: str
) -> tuple[dict[str, Tensor], set[str]]:
    """Apply rules to a foreign state dict. Returns our state and the foreign keys used.
    Raises, naming every foreign key that a rule needs and the file lacks."""
    missing = sorted({t for r in rules for t in r.theirs if t not in source})
    if missing:
        raise CheckpointError(f"{source_name}: missing keys {missing}")
    state: dict[str, Tensor] = {}
    for r in rules:
        parts = [source[t] for t in r.theirs]
        value = parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)
        if r.row is not None:
            value = value[r.row]
        state[r.ours] = value.flip(0) if r.flip_rows else value
    return state, {t for r in rules for t in r.theirs}


def export_state(rules: list[Rule], ours: dict[str, Tensor]) -> dict[str, Tensor]:
    """Run rules backwards: split fused tensors, swap flipped rows back."""
    out: dict[str, Tensor] = {}
    for r in rules:
        if r.row is not None:
            raise ValueError(f"rule for {r.ours} takes one row of {r.theirs[0]} and cannot run backwards")
        value = ours[r.ours]
        if r.flip_rows:
            value = value.flip(0)
        for name, part in zip(r.theirs, value.chunk(len(r.theirs), dim=0)):
            out[name] = part.clone().contiguous()
    return out


def load_state_strict(module: nn.Module, state: dict[str, Tensor], source_name: str) -> None:
    """Copy ``state`` into ``module``: every parameter must be present with the right shape, and no key
    may be left over. Never leaves a weight silently at its random initialisation."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    problems = []
    if missing:
        problems.append(f"missing keys {missing}")
    if unexpected:
        problems.append(f"unexpected keys {unexpected}")
    for key in sorted(set(expected) & set(state)):
        if expected[key].shape != state[key].shape:
            problems.append(
                f"shape mismatch for {key}: checkpoint has {tuple(state[key].shape)}, "
                f"model expects {tuple(expected[key].shape)}"
            )
    if problems:
        raise CheckpointError(f"{source_name}: " + "; ".join(problems))
    module.load_state_dict(state, strict=True)


WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def read_config(path: Path) -> dict:
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a directory (expected a checkpoint directory with config.json)")
    config_file = path / "config.json"
    if not config_file.exists():
        raise CheckpointError(
            f"{path}: no config.json; expected config.json plus one of {', '.join(WEIGHT_FILES)} "
            f"(found: {sorted(p.name for p in path.iterdir()) or 'nothing'})"
        )
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{config_file}: not valid JSON ({e})") from e
    if not isinstance(config, dict):
        raise CheckpointError(f"{config_file}: expected a JSON object of settings, got a {type(config).__name__}")
    return config


def _load_safetensors(file: Path) -> dict[str, Tensor]:
    """One safetensors file; a truncated, empty or garbage one is named, not a traceback from the parser."""
    from safetensors.torch import load_file

    try:
        return load_file(str(file))
    except FileNotFoundError:
        raise CheckpointError(f"{file}: listed by the checkpoint but missing") from None
    except Exception as e:  # noqa: BLE001 - safetensors reports corruption through its own error types
        raise CheckpointError(
            f"{file}: not a readable safetensors file (truncated, empty or corrupt: {str(e).splitlines()[0][:200]})"
        ) from None


def _shard_files(index_file: Path) -> list[Path]:
    """The shards a ``model.safetensors.index.json`` lists, each refused unless it lies inside the
    checkpoint directory (an index could otherwise make us read any file on the machine)."""
    try:
        index = json.loads(index_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{index_file}: not valid JSON ({e})") from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckpointError(f"{index_file}: expected {{'weight_map': {{tensor name: shard file}}}}")
    root = index_file.parent.resolve()
    shards = []
    for name in sorted(set(weight_map.values())):
        shard = (index_file.parent / name).resolve()
        if shard.parent != root or Path(name).is_absolute():
            raise CheckpointError(
                f"{index_file}: shard {name!r} lies outside the checkpoint directory {root}; refused"
            )
        shards.append(shard)
    return shards


def read_weights(path: Path) -> tuple[dict[str, Tensor], str]:
    """All tensors of a checkpoint directory (safetensors, sharded safetensors, or pytorch_model.bin)."""
    import pickle

    path = Path(path)
    if (path / "model.safetensors").exists():
        f = path / "model.safetensors"
        state = _load_safetensors(f)
    elif (path / "model.safetensors.index.json").exists():
        f = path / "model.safetensors.index.json"
        state = {}
        for shard in _shard_files(f):
            state.update(_load_safetensors(shard))
    elif (path / "pytorch_model.bin").exists():
        f = path / "pytorch_model.bin"
        try:
            state = torch.load(f, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            first = str(e).strip().splitlines()[0][:200]
            raise CheckpointError(
                f"{f}: refused: the pickle asks for objects beyond tensors and containers, which could run code "
                f"(torch.load weights_only=True: {first}); convert it where you trust it, or use safetensors"
            ) from None
        except (RuntimeError, EOFError, ValueError) as e:
            raise CheckpointError(f"{f}: not a readable PyTorch checkpoint ({str(e).splitlines()[0][:200]})") from None
        if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
            raise CheckpointError(f"{f}: expected a dict of tensors (a state dict)")
    else:
        raise CheckpointError(
            f"{path}: no weights; expected one of {', '.join(WEIGHT_FILES)} "
            f"(found: {sorted(p.name for p in path.iterdir())})"
        )
    return {normalise_key(k): v for k, v in state.items()}, str(f)
