"""Hugging Face LXMERT (``LxmertModel``, ``LxmertForPreTraining``, ``LxmertForQuestionAnswering``)
<-> mmbert ``Lxmert``.

``load_model`` / ``load_pretraining`` / ``export_hf`` use the module-level functions (the converter
protocol of ``convert/load.py``). The question-answering head of ``LxmertForQuestionAnswering`` is a
task head, not a pre-training head: ``mmbert.convert.hf_tasks.load_question_answering`` reads it (with
the encoder) and ``export_question_answering`` writes both back.
"""

from __future__ import annotations

from typing import Any

from mmbert.config import ModelConfig
from mmbert.convert.common import (
    CheckpointError,
    Rule,
    fused,
    hf_mlm_head,
    hf_self_attention_block,
    linear,
)
from mmbert.convert.hf_bert import common_fields_from_hf, hf_text_embeddings
from mmbert.models.lxmert import LxmertConfig

HF_MODEL_TYPE = "lxmert"
# Keys under these prefixes belong to heads, which load_model skips.
HEAD_PREFIXES = ("cls.", "obj_predict_head.", "answer_head.")
# Hugging Face hard-codes every LayerNorm of LXMERT at this eps (its config has no field for it).
HF_LAYER_NORM_EPS = 1e-12
HF_DEFAULT_QA_LABELS = 9500


def config_from_hf(hf: dict[str, Any], source: str) -> LxmertConfig:
    fields = common_fields_from_hf(hf, source)
    fields.pop("num_layers", None)  # HF's num_hidden_layers is a dict of the three layer counts
    fields["layer_norm_eps"] = HF_LAYER_NORM_EPS
    pos_dim = hf.get("visual_pos_dim", 4)
    if pos_dim != 4:
        raise CheckpointError(f"{source}: visual_pos_dim {pos_dim} is not supported (LXMERT boxes are 4-d)")
    obj_predict = hf.get("task_obj_predict", True)
    return LxmertConfig(
        **fields,
        num_layers=hf.get("l_layers", 9),
        num_vision_layers=hf.get("r_layers", 5),
        num_cross_layers=hf.get("x_layers", 5),
        region_feat_dim=hf.get("visual_feat_dim", 2048),
        num_qa_labels=hf.get("num_qa_labels", HF_DEFAULT_QA_LABELS) if hf.get("task_qa", True) else 0,
        num_object_labels=hf.get("num_object_labels", 1600)
        if obj_predict and hf.get("visual_obj_loss", True)
        else 0,
        num_attr_labels=hf.get("num_attr_labels", 400)
        if obj_predict and hf.get("visual_attr_loss", True)
        else 0,
        predict_region_feats=bool(obj_predict and hf.get("visual_feat_loss", True)),
    )


def to_hf_config(config: LxmertConfig, with_heads: bool, architecture: str | None = None) -> dict[str, Any]:
    if config.layer_norm_eps != HF_LAYER_NORM_EPS:
        raise CheckpointError(
            f"Hugging Face LXMERT fixes LayerNorm eps at {HF_LAYER_NORM_EPS}; this model uses {config.layer_norm_eps}"
        )
    volta = {
        "global_region": (config.global_region, "none", "whole-image region"),
        "location_dims": (config.location_dims, 4, "5-d locations"),
        "pooling": (config.pooling, "cls", "fused whole-image pooler"),
    }
    for name, (value, hf, what) in volta.items():
        if value != hf:
            raise CheckpointError(
                f"LXMERT with {name}={value!r} (VOLTA's controlled LXMERT) has no Hugging Face counterpart: "
                f"Hugging Face LXMERT has no {what}; only {name}={hf!r} exports"
            )
    c = config
    return {
        "model_type": HF_MODEL_TYPE,
        "architectures": [architecture or ("LxmertForPreTraining" if with_heads else "LxmertModel")],
        "vocab_size": c.vocab_size,
        "hidden_size": c.dim,
        "num_attention_heads": c.num_heads,
        "intermediate_size": c.ffn_dim,
        "hidden_act": "gelu",
        "hidden_dropout_prob": c.dropout,
        "attention_probs_dropout_prob": c.attn_dropout,
        "max_position_embeddings": c.max_positions,
        "type_vocab_size": c.type_vocab_size,
        "initializer_range": c.init_std,
        "pad_token_id": c.pad_token_id,
        "l_layers": c.num_layers,
        "r_layers": c.num_vision_layers,
        "x_layers": c.num_cross_layers,
        "visual_feat_dim": c.region_feat_dim,
        "visual_pos_dim": 4,
        "num_qa_labels": c.num_qa_labels or HF_DEFAULT_QA_LABELS,
        "num_object_labels": c.num_object_labels,
        "num_attr_labels": c.num_attr_labels,
        "task_matched": True,
        "task_mask_lm": True,
        "task_qa": c.num_qa_labels > 0,
        "task_obj_predict": bool(c.region_outputs()),
        "visual_obj_loss": c.num_object_labels > 0,
        "visual_attr_loss": c.num_attr_labels > 0,
        "visual_feat_loss": c.predict_region_feats,
        "tie_word_embeddings": True,
    }


def config_class_matches(config: ModelConfig) -> bool:
    return isinstance(config, LxmertConfig)


def encoder_prefix(keys: set[str]) -> str:
    return "lxmert." if any(k.startswith("lxmert.") for k in keys) else ""


def export_prefix(with_heads: bool) -> str:
    return "lxmert." if with_heads else ""


def _cross_modality_layer(ours: str, theirs: str) -> list[Rule]:
    """``CrossModalityLayer`` from ``LxmertXLayer``: the shared ``visual_attention``, then
    ``lang_self_att`` + ``lang_inter``/``lang_output`` and the same for ``visn_``."""
    rules = [
        *linear(f"{ours}.cross.attn.q", f"{theirs}.visual_attention.att.query"),
        *fused(f"{ours}.cross.attn.kv", (f"{theirs}.visual_attention.att.{n}" for n in ("key", "value"))),
        *linear(f"{ours}.cross.attn.out", f"{theirs}.visual_attention.output.dense"),
        *linear(f"{ours}.cross.norm1", f"{theirs}.visual_attention.output.LayerNorm"),
    ]
    for stream, hf in (("text", "lang"), ("vision", "visn")):
        rules += [
            *fused(
                f"{ours}.{stream}.attn.qkv",
                (f"{theirs}.{hf}_self_att.self.{n}" for n in ("query", "key", "value")),
            ),
            *linear(f"{ours}.{stream}.attn.out", f"{theirs}.{hf}_self_att.output.dense"),
            *linear(f"{ours}.{stream}.norm1", f"{theirs}.{hf}_self_att.output.LayerNorm"),
            *linear(f"{ours}.{stream}.ffn.fc1", f"{theirs}.{hf}_inter.dense"),
            *linear(f"{ours}.{stream}.ffn.fc2", f"{theirs}.{hf}_output.dense"),
            *linear(f"{ours}.{stream}.norm2", f"{theirs}.{hf}_output.LayerNorm"),
        ]
    return rules


def encoder_rules(config: LxmertConfig, prefix: str) -> list[Rule]:
    enc = f"{prefix}encoder"
    rules = hf_text_embeddings("embeddings", f"{prefix}embeddings")
    rules += [
        *linear("region_embeddings.feat", f"{enc}.visn_fc.visn_fc"),
        *linear("region_embeddings.feat_norm", f"{enc}.visn_fc.visn_layer_norm"),
        *linear("region_embeddings.box", f"{enc}.visn_fc.box_fc"),
        *linear("region_embeddings.box_norm", f"{enc}.visn_fc.box_layer_norm"),
    ]
    for i in range(config.num_layers):
        rules += hf_self_attention_block(f"text_layers.{i}", f"{enc}.layer.{i}")
    for i in range(config.num_vision_layers):
        rules += hf_self_attention_block(f"vision_layers.{i}", f"{enc}.r_layers.{i}")
    for i in range(config.num_cross_layers):
        rules += _cross_modality_layer(f"cross_layers.{i}", f"{enc}.x_layers.{i}")
    rules += linear("pooler.dense", f"{prefix}pooler.dense")
    return rules


def answer_head_rules(ours: str = "answer", theirs: str = "answer_head") -> list[Rule]:
    """``MLPClassifier`` from ``LxmertVisualAnswerHead.logit_fc`` (Linear, GeLU, LayerNorm, Linear)."""
    return [
        *linear(f"{ours}.fc1", f"{theirs}.logit_fc.0"),
        *linear(f"{ours}.norm", f"{theirs}.logit_fc.2"),
        *linear(f"{ours}.fc2", f"{theirs}.logit_fc.3"),
    ]


# Our region decoder names -> LXMERT's decoder_dict keys.
REGION_DECODERS = {"class": "obj", "attr": "attr", "feat": "feat"}


def head_rules(config: LxmertConfig) -> list[Rule]:
    """The pre-training heads of ``LxmertForPreTraining``. Matching keeps its index order: LXMERT's
    ``matched_label`` 1 = matches, as ours."""
    rules = [*hf_mlm_head("mlm", "cls.predictions"), *linear("pair.proj", "cls.seq_relationship")]
    outputs = config.region_outputs()
    if outputs:
        rules += [
            *linear("region.transform.dense", "obj_predict_head.transform.dense"),
            *linear("region.transform.norm", "obj_predict_head.transform.LayerNorm"),
        ]
        for name in outputs:
            rules += linear(
                f"region.decoders.{name}", f"obj_predict_head.decoder_dict.{REGION_DECODERS[name]}"
            )
    if config.num_qa_labels:
        rules += answer_head_rules()
    return rules


def ignorable(key: str) -> bool:
    """Buffers and the tied MLM decoder copy."""
    return key.endswith(("position_ids", "token_type_ids")) or key.startswith("cls.predictions.decoder.")
