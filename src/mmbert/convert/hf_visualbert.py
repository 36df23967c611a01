"""Hugging Face VisualBERT (``VisualBertModel``, ``VisualBertForPreTraining``, and the task heads of
``VisualBertForQuestionAnswering`` / ``ForVisualReasoning`` / ``ForMultipleChoice``) <-> mmbert ``VisualBert``.

``load_model`` / ``load_pretraining`` / ``export_hf`` use the module-level functions through
``HF_CONVERTERS``. The task classifiers (HF ``cls.weight`` / ``cls.bias``) are not pre-training heads:
``load_task_head`` reads them with their encoder as a ``VisualBertTaskHead``, ``export_task_head`` writes
both back as the matching Hugging Face class. HF's ``sentence_image_labels`` use 0 = matches; ours 1,
so the match head's rows are swapped on the way in and out.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from mmbert.atomic import atomic_write, atomic_write_json
from mmbert.config import ModelConfig
from mmbert.convert import common
from mmbert.convert.common import (
    CheckpointError,
    Rule,
    hf_mlm_head,
    hf_self_attention_block,
    linear,
    load_state_strict,
    read_config,
    read_weights,
)
from mmbert.convert.hf_bert import common_fields_from_hf, common_fields_to_hf, hf_text_embeddings
from mmbert.models.visualbert import VisualBert, VisualBertConfig, VisualBertTaskHead

HF_MODEL_TYPE = "visual_bert"
# Pre-training heads (cls.predictions / cls.seq_relationship), task classifiers (cls.weight / cls.bias)
# and the region-to-phrase attention head: skipped by load_model.
HEAD_PREFIXES = ("cls.", "attention.")

# Hugging Face class -> our task-head kind.
TASK_ARCHITECTURES = {
    "VisualBertForQuestionAnswering": "question_answering",
    "VisualBertForVisualReasoning": "visual_reasoning",
    "VisualBertForMultipleChoice": "multiple_choice",
}


def config_from_hf(hf: dict[str, Any], source: str) -> VisualBertConfig:
    if hf.get("bypass_transformer", False):
        raise CheckpointError(
            f"{source}: bypass_transformer=True is not supported (no released checkpoint uses it)"
        )
    return VisualBertConfig(
        **common_fields_from_hf(hf, source),
        region_feat_dim=hf.get("visual_embedding_dim", 512),
        special_visual_initialize=hf.get("special_visual_initialize", True),
    )


def encoder_prefix(keys: set[str]) -> str:
    return "visual_bert." if any(k.startswith("visual_bert.") for k in keys) else ""


def encoder_rules(config: VisualBertConfig, prefix: str) -> list[Rule]:
    e = f"{prefix}embeddings"
    rules = [
        *hf_text_embeddings("embeddings.text", e),  # includes the one LayerNorm over [text ; regions]
        Rule("embeddings.visual_segment.weight", (f"{e}.visual_token_type_embeddings.weight",)),
        Rule("embeddings.visual_position.weight", (f"{e}.visual_position_embeddings.weight",)),
        *linear("embeddings.visual_proj", f"{e}.visual_projection"),
    ]
    for i in range(config.num_layers):
        rules += hf_self_attention_block(f"layers.{i}", f"{prefix}encoder.layer.{i}")
    rules += linear("pooler.dense", f"{prefix}pooler.dense")
    return rules


def head_rules(config: VisualBertConfig) -> list[Rule]:
    # HF's sentence-image head puts "matches" at index 0; ours at index 1.
    return [
        *hf_mlm_head("mlm", "cls.predictions"),
        *linear("pair.proj", "cls.seq_relationship", flip_rows=True),
    ]


def ignorable(key: str) -> bool:
    """Buffers and tied copies that carry no information of their own."""
    return key.endswith(("position_ids", "token_type_ids")) or key.startswith("cls.predictions.decoder.")


def _check_exportable(config: VisualBertConfig) -> None:
    if config.global_region != "none":
        raise CheckpointError(
            f"VisualBERT with global_region={config.global_region!r} has no Hugging Face counterpart "
            "(HF VisualBERT has no whole-image region); only global_region='none' exports"
        )


def to_hf_config(
    config: VisualBertConfig, with_heads: bool, architecture: str | None = None
) -> dict[str, Any]:
    _check_exportable(config)
    arch = architecture or ("VisualBertForPreTraining" if with_heads else "VisualBertModel")
    return {
        "model_type": HF_MODEL_TYPE,
        "architectures": [arch],
        **common_fields_to_hf(config),
        "visual_embedding_dim": config.region_feat_dim,
        "bypass_transformer": False,
        "special_visual_initialize": config.special_visual_initialize,
        "tie_word_embeddings": True,
    }


def config_class_matches(config: ModelConfig) -> bool:
    return isinstance(config, VisualBertConfig)


def export_prefix(with_heads: bool) -> str:
    return "visual_bert." if with_heads else ""


def load_task_head(path: str | os.PathLike) -> tuple[VisualBert, VisualBertTaskHead]:
    """The encoder and the task classifier of a Hugging Face ``VisualBertForQuestionAnswering``,
    ``...ForVisualReasoning`` or ``...ForMultipleChoice`` directory (which one: ``architectures`` in
    config.json). Both come back in eval mode."""
    from mmbert.convert.load import load_model

    path = Path(path)
    raw = read_config(path)
    source = str(path / "config.json")
    if raw.get("model_type") != HF_MODEL_TYPE:
        raise CheckpointError(
            f"{source}: not a Hugging Face VisualBERT checkpoint (model_type {raw.get('model_type')!r})"
        )
    archs = [a for a in raw.get("architectures") or [] if a in TASK_ARCHITECTURES]
    if not archs:
        raise CheckpointError(
            f"{source}: architectures {raw.get('architectures')} name no VisualBERT task head; expected one of "
            f"{sorted(TASK_ARCHITECTURES)}"
        )
    encoder = load_model(path)
    state, weights_file = read_weights(path)
    missing = [k for k in ("cls.weight", "cls.bias") if k not in state]
    if missing:
        raise CheckpointError(f"{weights_file}: no task-head weights {missing} for {archs[0]}")
    num_labels = state["cls.weight"].shape[0]
    head = VisualBertTaskHead(
        TASK_ARCHITECTURES[archs[0]], encoder.config.dim, num_labels, encoder.config.dropout
    )
    load_state_strict(
        head, {"proj.weight": state["cls.weight"], "proj.bias": state["cls.bias"]}, weights_file
    )
    return encoder, head.eval()


def export_task_head(encoder: VisualBert, head: VisualBertTaskHead, path: str | os.PathLike) -> Path:
    """Write encoder + task classifier as the Hugging Face class ``transformers`` loads for that task."""
    path = Path(path)
    arch = next(a for a, kind in TASK_ARCHITECTURES.items() if kind == head.kind)
    state = common.export_state(encoder_rules(encoder.config, "visual_bert."), encoder.state_dict())
    state["cls.weight"] = head.proj.weight.detach().clone().contiguous()
    state["cls.bias"] = head.proj.bias.detach().clone().contiguous()
    config = to_hf_config(encoder.config, with_heads=False, architecture=arch)
    labels = head.proj.out_features
    config["id2label"] = {str(i): f"LABEL_{i}" for i in range(labels)}
    config["label2id"] = {f"LABEL_{i}": i for i in range(labels)}
    path.mkdir(parents=True, exist_ok=True)
    atomic_write(path / "model.safetensors", lambda f: save_file(state, f, metadata={"format": "pt"}))
    atomic_write_json(path / "config.json", config)
    return path
