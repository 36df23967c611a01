"""Hugging Face VisualBERT (``VisualBertModel``, ``VisualBertForPreTraining``, and the task heads of
``VisualBertForQuestionAnswering`` / ``ForVisualReasoning`` / ``ForMultipleChoice``) <-> mmbert ``VisualBert``.

``load_model`` / ``load_pretraining`` / ``export_hf`` use the module-level functions through
``HF_CONVERTERS``. The task classifiers (HF ``cls.weight`` / ``cls.bias``) are not pre-training heads:
``mmbert.convert.hf_tasks.load_task_head`` reads them with their encoder as a ``VisualBertTaskHead``,
``export_task_head`` writes both back as the matching Hugging Face class. HF's ``sentence_image_labels``
use 0 = matches; ours 1, so the match head's rows are swapped on the way in and out.

Regions' visual token type: Hugging Face gives every region type 1 unless ``visual_token_type_ids`` is
passed. The original uclanlp checkpoints give regions type 0 (``region_segment=0``). Such a model exports
with the two rows of ``visual_token_type_embeddings`` swapped (and ``mmbert_visual_token_types_swapped``
in config.json), so that Hugging Face's default type 1 reads the source's type-0 row: its outputs on
default inputs equal the source's (tested against the authors' fixture). A caller who passes
``visual_token_type_ids`` to such a Hugging Face model gets the rows swapped (0 <-> 1). Reading the
directory back restores ``region_segment=0`` and the source's row order.
"""

from __future__ import annotations

from typing import Any

from mmbert.config import ModelConfig
from mmbert.convert.common import (
    CheckpointError,
    Rule,
    hf_mlm_head,
    hf_self_attention_block,
    linear,
)
from mmbert.convert.hf_bert import common_fields_from_hf, common_fields_to_hf, hf_text_embeddings
from mmbert.models.visualbert import VisualBertConfig

HF_MODEL_TYPE = "visual_bert"
# config.json key: visual_token_type_embeddings rows 0 and 1 hold the mmbert model's rows 1 and 0
SWAPPED_TYPES_KEY = "mmbert_visual_token_types_swapped"
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
        region_segment=0 if hf.get(SWAPPED_TYPES_KEY, False) else 1,
    )


def encoder_prefix(keys: set[str]) -> str:
    return "visual_bert." if any(k.startswith("visual_bert.") for k in keys) else ""


def encoder_rules(config: VisualBertConfig, prefix: str) -> list[Rule]:
    e = f"{prefix}embeddings"
    rules = [
        *hf_text_embeddings("embeddings.text", e),  # includes the one LayerNorm over [text ; regions]
        Rule(
            "embeddings.visual_segment.weight",
            (f"{e}.visual_token_type_embeddings.weight",),
            flip_rows=_types_swapped(config),  # 2 rows: flipping them swaps types 0 and 1
        ),
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


def _types_swapped(config: VisualBertConfig) -> bool:
    """Whether the Hugging Face table holds this model's visual token-type rows 0 and 1 swapped (the
    regions' row at index 1, where Hugging Face looks by default)."""
    if config.region_segment == 1:
        return False
    if config.region_segment != 0 or config.type_vocab_size != 2:
        raise CheckpointError(
            f"VisualBERT with region_segment={config.region_segment} and type_vocab_size="
            f"{config.type_vocab_size} has no Hugging Face form: Hugging Face gives regions visual token "
            "type 1, and only a 2-row table with the regions at row 0 can be swapped into that"
        )
    return True


def _check_exportable(config: VisualBertConfig) -> None:
    if config.global_region != "none":
        raise CheckpointError(
            f"VisualBERT with global_region={config.global_region!r} has no Hugging Face counterpart "
            "(HF VisualBERT has no whole-image region); only global_region='none' exports"
        )
    _types_swapped(config)


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
        **({SWAPPED_TYPES_KEY: True} if _types_swapped(config) else {}),
    }


def config_class_matches(config: ModelConfig) -> bool:
    return isinstance(config, VisualBertConfig)


def export_prefix(with_heads: bool) -> str:
    return "visual_bert." if with_heads else ""
