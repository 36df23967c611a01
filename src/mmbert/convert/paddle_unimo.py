"""UNIMO's released Paddle checkpoints (``unimo_base_en``, ``unimo_large_en``, fine-tuned ones) -> mmbert.

Parameter names from PaddlePaddle/Research ``NLP/UNIMO/src/model/unimo_finetune.py`` and
``transformer_encoder.py`` (listed in REFERENCE.md). Paddle FC weights are [in, out]: transposed here;
the separate query / key / value FCs become our fused ``qkv``. Exact or nothing: every parameter of the
model must be in the directory with its shape; files that look like encoder parameters but are not used
(a config with too few layers) are refused; optimizer state and fine-tuning heads are left alone and
listed in ``model.paddle_unused``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from mmbert.convert.common import CheckpointError, load_state_strict
from mmbert.convert.paddle import read_float_parameter
from mmbert.models import PretrainingModel
from mmbert.models.unimo import Unimo, UnimoConfig, config_from_unimo


@dataclass(frozen=True)
class PaddleRule:
    """One mmbert tensor from Paddle files: concatenated along our dim 0, each FC weight transposed."""

    ours: str
    theirs: tuple[str, ...]
    transpose: bool = False


def _fc(ours: str, theirs: str) -> list[PaddleRule]:
    return [
        PaddleRule(f"{ours}.weight", (f"{theirs}.w_0",), True),
        PaddleRule(f"{ours}.bias", (f"{theirs}.b_0",)),
    ]


def _norm(ours: str, theirs: str) -> list[PaddleRule]:
    return [PaddleRule(f"{ours}.weight", (f"{theirs}_layer_norm_scale",)),
            PaddleRule(f"{ours}.bias", (f"{theirs}_layer_norm_bias",))]  # fmt: skip


def encoder_rules(config: UnimoConfig) -> list[PaddleRule]:
    rules = [
        PaddleRule("text_embeddings.word.weight", ("word_embedding",)),
        PaddleRule("text_embeddings.position.weight", ("pos_embedding",)),
        *_norm("text_embeddings.norm", "pre_encoder"),
        *_fc("region_embeddings.feat_proj", "image_emb"),
        *_fc("region_embeddings.loc_proj", "image_loc"),
        *_norm("region_embeddings.norm", "v_pre_encoder"),
        *_fc("text_pooler.dense", "pooled_fc_text"),
        *_fc("vision_pooler.dense", "pooled_fc_image"),
    ]
    for i in range(config.num_layers):
        p = f"encoder_layer_{i}"
        qkv = tuple(f"{p}_multi_head_att_{n}_fc" for n in ("query", "key", "value"))
        rules += [
            PaddleRule(f"layers.{i}.attn.qkv.weight", tuple(f"{t}.w_0" for t in qkv), True),
            PaddleRule(f"layers.{i}.attn.qkv.bias", tuple(f"{t}.b_0" for t in qkv)),
            *_fc(f"layers.{i}.attn.out", f"{p}_multi_head_att_output_fc"),
            *_norm(f"layers.{i}.norm1", f"{p}_post_att"),
            *_fc(f"layers.{i}.ffn.fc1", f"{p}_ffn_fc_0"),
            *_fc(f"layers.{i}.ffn.fc2", f"{p}_ffn_fc_1"),
            *_norm(f"layers.{i}.norm2", f"{p}_post_ffn"),
        ]
    return rules


def mlm_head_rules() -> list[PaddleRule]:
    """The LM head (``mask_lm_trans_fc`` + LN; decoder tied to ``word_embedding``, own bias)."""
    return [
        *_fc("mlm.transform.dense", "mask_lm_trans_fc"),
        *_norm("mlm.transform.norm", "mask_lm_trans"),
        PaddleRule("mlm.bias", ("mask_lm_out_fc.b_0",)),
    ]


SOURCE = "unimo_paddle"  # what ``--from`` / ``source=`` takes


# Files that are encoder parameters by name: left unused, they mean the config does not fit the weights.
_ENCODER_NAME = re.compile(
    r"^(encoder_layer_\d+_|word_embedding$|pos_embedding$|image_(emb|loc)\.|pooled_fc_)"
)


def is_persistables_dir(path: str | os.PathLike) -> bool:
    """Whether a directory looks like UNIMO's Paddle persistables (it holds ``word_embedding``)."""
    path = Path(path)
    return path.is_dir() and (path / "word_embedding").is_file() and not (path / "config.json").exists()


def _import(rules: list[PaddleRule], path: Path) -> tuple[dict[str, Tensor], set[str]]:
    missing = sorted({t for r in rules for t in r.theirs if not (path / t).is_file()})
    if missing:
        raise CheckpointError(f"{path}: missing Paddle parameters {missing}")
    state = {}
    for r in rules:
        parts = [read_float_parameter(path / t) for t in r.theirs]
        for name, t in zip(r.theirs, parts):
            if r.transpose and t.dim() != 2:
                raise CheckpointError(
                    f"{path / name}: an FC weight must be 2-d [in, out], got shape {list(t.shape)}"
                )
        parts = [t.t() if r.transpose else t for t in parts]
        state[r.ours] = parts[0].contiguous() if len(parts) == 1 else torch.cat(parts, 0)
    return state, {t for r in rules for t in r.theirs}


def _config(config: UnimoConfig | str | os.PathLike) -> UnimoConfig:
    return config if isinstance(config, UnimoConfig) else config_from_unimo(config)


def resolve_config(path: Path, config) -> UnimoConfig:
    """The model config: given (a ``UnimoConfig`` or the official JSON's path), or the one official
    config JSON in the parameters' directory; otherwise an error saying to pass it."""
    if config is not None:
        return _config(config)
    found = sorted(p for p in Path(path).glob("*.json") if p.is_file())
    if len(found) == 1:
        return config_from_unimo(found[0])
    raise CheckpointError(
        f"{path}: UNIMO's Paddle parameters carry no model config; pass the official one "
        "(--config unimo_base_en.json, or config=...)"
    )


def load_unimo_paddle(path: str | os.PathLike, config: UnimoConfig | str | os.PathLike) -> Unimo:
    """The UNIMO encoder from a persistables directory; ``config`` is a ``UnimoConfig`` or the path of
    the official config JSON (the released archives keep it apart from the parameters)."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(
            f"{path}: not a directory (expected Paddle persistables, one file per parameter)"
        )
    config = _config(config)
    model = Unimo(config)
    state, used = _import(encoder_rules(config), path)
    leftover = sorted(p.name for p in path.iterdir() if p.name not in used and _ENCODER_NAME.match(p.name))
    if leftover:
        raise CheckpointError(f"{path}: encoder parameters {leftover} are not used (does the config match?)")
    load_state_strict(model, state, str(path))
    model.paddle_unused = sorted(p.name for p in path.iterdir() if p.name not in used)
    model.source = SOURCE
    return model.eval()


def load_unimo_paddle_pretraining(
    path: str | os.PathLike, config: UnimoConfig | str | os.PathLike, allow_new_heads: bool = False
) -> PretrainingModel:
    """Encoder + heads. The LM head is read from the directory. UNIMO's region heads were never released:
    refused unless ``allow_new_heads``, with which they keep their fresh initialisation and are listed
    in ``model.new_heads``."""
    path = Path(path)
    encoder = load_unimo_paddle(path, config).train()
    model = PretrainingModel(encoder)
    heads_state, used = _import(mlm_head_rules(), path)
    fresh = {k: v for k, v in model.heads.state_dict().items() if not k.startswith("mlm.")}
    if fresh and not allow_new_heads:
        raise CheckpointError(
            f"{path}: no pre-training head weights for ['region'] (UNIMO released its LM head only); use "
            "load_model for the encoder, or load_pretraining(..., allow_new_heads=True) to start them fresh"
        )
    load_state_strict(model.heads, {**fresh, **heads_state}, str(path))
    model.new_heads = sorted({k.split(".")[0] for k in fresh})
    encoder.paddle_unused = [n for n in encoder.paddle_unused if n not in used]
    return model.eval()
