"""Helpers the authors' source modules share (``authors_*.py``, ``volta.py``): reading their config
files' BERT fields, and turning key-map rules into a head's state."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from mmbert.convert.common import CheckpointError, Rule, import_state


def module_state(
    rules: list[Rule], state: Mapping[str, Tensor], file: str
) -> tuple[dict[str, Tensor], set[str]]:
    """A task head's state from ``rules`` whose mmbert names start with ``<head>.``: that prefix removed,
    plus the file's keys used (for ``task_heads``)."""
    ours, used = import_state(rules, state, file)
    return {k.split(".", 1)[1]: v for k, v in ours.items()}, used


def require(
    raw: Mapping[str, Any] | None, keys: tuple[str, ...], source: str, what: str
) -> Mapping[str, Any]:
    """The authors' config, refusing one that lacks the keys this source cannot infer from the weights."""
    if raw is None:
        raise CheckpointError(
            f"{source}: {what} checkpoints carry no config; pass config=<the authors' config file>"
        )
    missing = [k for k in keys if k not in raw]
    if missing:
        raise CheckpointError(f"{source}: the config lacks {missing} (is it a {what} config?)")
    return raw


def bert_fields(raw: Mapping[str, Any], eps: float = 1e-12) -> dict[str, Any]:
    """The BERT sizes every authors' config spells the same way (Google's bert_config.json names)."""
    act = raw.get("hidden_act", "gelu")
    if act != "gelu":
        raise CheckpointError(f"hidden_act {act!r} is not supported (every released checkpoint uses 'gelu')")
    return dict(
        dim=raw["hidden_size"],
        num_heads=raw["num_attention_heads"],
        num_layers=raw.get("num_hidden_layers", 12),
        ffn_dim=raw["intermediate_size"],
        dropout=raw.get("hidden_dropout_prob", 0.1),
        attn_dropout=raw.get("attention_probs_dropout_prob", 0.1),
        vocab_size=raw["vocab_size"],
        max_positions=raw.get("max_position_embeddings", 512),
        type_vocab_size=raw.get("type_vocab_size", 2),
        init_std=raw.get("initializer_range", 0.02),
        layer_norm_eps=eps,
    )
