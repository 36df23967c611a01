"""Hugging Face BERT (``BertModel``, ``BertForPreTraining``, ``BertForMaskedLM``) <-> mmbert ``Bert``."""

from __future__ import annotations

from typing import Any

from mmbert.config import ModelConfig
from mmbert.convert.common import CheckpointError, Rule, hf_mlm_head, hf_self_attention_block, linear
from mmbert.models.bert import BertConfig

HF_MODEL_TYPE = "bert"
# Keys under these prefixes belong to heads, which load_model skips (pre-training and task heads).
HEAD_PREFIXES = ("cls.", "classifier.", "qa_outputs.")

# Fields of a Hugging Face transformer config and their mmbert names (shared by the BERT-family converters).
HF_FIELDS = {
    "hidden_size": "dim",
    "num_attention_heads": "num_heads",
    "num_hidden_layers": "num_layers",
    "intermediate_size": "ffn_dim",
    "hidden_dropout_prob": "dropout",
    "attention_probs_dropout_prob": "attn_dropout",
    "layer_norm_eps": "layer_norm_eps",
    "vocab_size": "vocab_size",
    "max_position_embeddings": "max_positions",
    "type_vocab_size": "type_vocab_size",
    "pad_token_id": "pad_token_id",
    "initializer_range": "init_std",
}


def common_fields_from_hf(hf: dict[str, Any], source: str) -> dict[str, Any]:
    act = hf.get("hidden_act", "gelu")
    if act != "gelu":
        raise CheckpointError(
            f"{source}: hidden_act {act!r} is not supported (mmbert's BERT blocks use exact GELU)"
        )
    pos = hf.get("position_embedding_type", "absolute")
    if pos != "absolute":
        raise CheckpointError(f"{source}: position_embedding_type {pos!r} is not supported (only 'absolute')")
    out = {ours: hf[theirs] for theirs, ours in HF_FIELDS.items() if theirs in hf and hf[theirs] is not None}
    return out


def common_fields_to_hf(config: ModelConfig) -> dict[str, Any]:
    return {theirs: getattr(config, ours) for theirs, ours in HF_FIELDS.items()} | {
        "hidden_act": "gelu",
        "position_embedding_type": "absolute",
    }


def hf_text_embeddings(ours: str, theirs: str) -> list[Rule]:
    return [
        Rule(f"{ours}.word.weight", (f"{theirs}.word_embeddings.weight",)),
        Rule(f"{ours}.position.weight", (f"{theirs}.position_embeddings.weight",)),
        Rule(f"{ours}.segment.weight", (f"{theirs}.token_type_embeddings.weight",)),
        *linear(f"{ours}.norm", f"{theirs}.LayerNorm"),
    ]


def config_from_hf(hf: dict[str, Any], source: str) -> BertConfig:
    return BertConfig(**common_fields_from_hf(hf, source))


def encoder_prefix(keys: set[str]) -> str:
    return "bert." if any(k.startswith("bert.") for k in keys) else ""


def encoder_rules(config: BertConfig, prefix: str) -> list[Rule]:
    rules = hf_text_embeddings("embeddings", f"{prefix}embeddings")
    for i in range(config.num_layers):
        rules += hf_self_attention_block(f"layers.{i}", f"{prefix}encoder.layer.{i}")
    rules += linear("pooler.dense", f"{prefix}pooler.dense")
    return rules


def head_rules(config: BertConfig) -> list[Rule]:
    # HF's NSP head puts "is next" at index 0; ours at index 1.
    return [
        *hf_mlm_head("mlm", "cls.predictions"),
        *linear("pair.proj", "cls.seq_relationship", flip_rows=True),
    ]


def ignorable(key: str) -> bool:
    """Buffers and tied copies that carry no information of their own."""
    return key.endswith(("position_ids", "token_type_ids")) or key.startswith("cls.predictions.decoder.")


def to_hf_config(config: BertConfig, with_heads: bool) -> dict[str, Any]:
    return {
        "model_type": HF_MODEL_TYPE,
        "architectures": ["BertForPreTraining" if with_heads else "BertModel"],
        **common_fields_to_hf(config),
        "tie_word_embeddings": True,
    }


def config_class_matches(config: ModelConfig) -> bool:
    return isinstance(config, BertConfig)


def export_prefix(with_heads: bool) -> str:
    return "bert." if with_heads else ""
