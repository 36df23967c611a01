"""ViLBERT's own checkpoints (facebookresearch/vilbert-multi-task and jiasenlu/vilbert_beta, which share
one layout) <-> mmbert ``ViLBert``.

Files: ``pytorch_model_<epoch>.bin`` written by train_concap.py / train_tasks.py (a plain state dict of
``BertForMultiModalPreTraining`` or ``VILBertForVLTasks``), with a config such as
``config/bert_base_6layer_6conect.json``. Key names follow vilbert/vilbert.py: ``bert.encoder.layer``
(text), ``v_layer`` (vision), ``c_layer`` (co-attention: ``biattention.query1/key1/value1`` project the
vision stream, ``query2/key2/value2`` the text stream; ``biOutput.dense1/LayerNorm1`` close the vision
side, ``dense2/LayerNorm2`` the text side; ``q_dense1/2`` are never used in its forward).

The alignment head ``cls.bi_seq_relationship`` puts "matches" at index 0 (``is_next`` 0); its rows are
swapped so that index 1 = matches. Task heads of the multi-task model mapped onto mmbert's: the VQA and
GQA classifiers (``vil_prediction``, ``vil_prediction_gqa``), NLVR2 (``vil_binary_prediction``), the
retrieval score ``vil_logit`` (as a match head whose match score is that logit), the referring-
expression region logit ``vision_logit`` and the SNLI-VE classifier ``vil_tri_prediction`` (one Linear on
the pooled output; its rows follow visual_entailment_dataset.py's LABEL_MAP, contradiction / neutral /
entailment, and are reversed into mmbert's SNLI-VE order, entailment / neutral / contradiction).
``linguisic_logit`` (the authors' spelling: one logit per text token) is reported as not loaded: no task
type of vilbert-multi-task's task_utils.py reads it, so it is never trained, and mmbert has no task for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from mmbert.convert.authors_common import bert_fields, module_state, require
from mmbert.convert.common import CheckpointError, Rule, fused, hf_mlm_head, hf_self_attention_block, linear
from mmbert.convert.hf_bert import hf_text_embeddings
from mmbert.models.vilbert import ViLBertConfig
from mmbert.nn import MLPClassifier, PairHead

NAME = "vilbert"
TITLE = "ViLBERT (vilbert-multi-task / vilbert_beta)"
FILES = "pytorch_model_<epoch>.bin + config/bert_base_6layer_6conect.json (or 2layer_2conect, 8layer_8conect)"
SIGNATURE = "bert.encoder.c_layer.*.biattention.*, bert.v_embeddings.*"
MATCH_ORDER = 0

TEXT_KEYS = ("hidden_size", "num_attention_heads", "intermediate_size", "vocab_size")
VISION_KEYS = (
    "v_feature_size",
    "v_hidden_size",
    "v_num_attention_heads",
    "v_intermediate_size",
    "v_num_hidden_layers",
    "bi_hidden_size",
    "bi_num_attention_heads",
    "v_biattention_id",
    "t_biattention_id",
)
# Heads of VILBertForVLTasks that have no mmbert task: reported as not loaded, by name.
UNMAPPED_TASK_HEADS = {
    "linguisic_logit.": "per-token text logit that no vilbert-multi-task task trains (no mmbert task uses it)",
}


def detect(keys: set[str]) -> bool:
    return any(".biattention.query1." in k for k in keys) and any(
        k.startswith("bert.v_embeddings.") for k in keys
    )


def config_from(
    raw: Mapping[str, Any] | None, state: Mapping[str, Tensor], source: str, options: Mapping[str, Any]
) -> ViLBertConfig:
    raw = require(raw, TEXT_KEYS + VISION_KEYS, source, "ViLBERT")
    fusion = raw.get("fusion_method", "mul")
    if fusion != "mul":
        raise CheckpointError(
            f"{source}: fusion_method {fusion!r} is not supported (the released models use 'mul')"
        )
    for flag in ("task_specific_tokens", "dynamic_attention"):
        if raw.get(flag):
            raise CheckpointError(f"{source}: {flag}=true is not supported by mmbert's ViLBERT")
    num_classes = (
        state["cls.imagePredictions.decoder.weight"].shape[0]
        if "cls.imagePredictions.decoder.weight" in state
        else raw.get("v_target_size", 1601)
    )
    return ViLBertConfig(
        **bert_fields(raw),
        region_feat_dim=raw["v_feature_size"],
        vision_dim=raw["v_hidden_size"],
        vision_heads=raw["v_num_attention_heads"],
        vision_ffn_dim=raw["v_intermediate_size"],
        num_vision_layers=raw["v_num_hidden_layers"],
        co_dim=raw["bi_hidden_size"],
        co_heads=raw["bi_num_attention_heads"],
        vision_co_ids=tuple(raw["v_biattention_id"]),
        text_co_ids=tuple(raw["t_biattention_id"]),
        pooled_dim=raw["bi_hidden_size"],
        num_region_classes=num_classes,
    )


def _co_layer(ours: str, theirs: str) -> list[Rule]:
    bi, out = f"{theirs}.biattention", f"{theirs}.biOutput"
    return [
        # text side: text queries (query2) over vision keys/values (key1/value1)
        *linear(f"{ours}.text.attn.q", f"{bi}.query2"),
        *fused(f"{ours}.text.attn.kv", (f"{bi}.key1", f"{bi}.value1")),
        *linear(f"{ours}.text.attn.out", f"{out}.dense2"),
        *linear(f"{ours}.text.norm1", f"{out}.LayerNorm2"),
        *linear(f"{ours}.text.ffn.fc1", f"{theirs}.t_intermediate.dense"),
        *linear(f"{ours}.text.ffn.fc2", f"{theirs}.t_output.dense"),
        *linear(f"{ours}.text.norm2", f"{theirs}.t_output.LayerNorm"),
        # vision side: vision queries (query1) over text keys/values (key2/value2)
        *linear(f"{ours}.vision.attn.q", f"{bi}.query1"),
        *fused(f"{ours}.vision.attn.kv", (f"{bi}.key2", f"{bi}.value2")),
        *linear(f"{ours}.vision.attn.out", f"{out}.dense1"),
        *linear(f"{ours}.vision.norm1", f"{out}.LayerNorm1"),
        *linear(f"{ours}.vision.ffn.fc1", f"{theirs}.v_intermediate.dense"),
        *linear(f"{ours}.vision.ffn.fc2", f"{theirs}.v_output.dense"),
        *linear(f"{ours}.vision.norm2", f"{theirs}.v_output.LayerNorm"),
    ]


def encoder_rules(c: ViLBertConfig) -> list[Rule]:
    rules = hf_text_embeddings("embeddings", "bert.embeddings")
    rules += [
        *linear("region_embeddings.feat", "bert.v_embeddings.image_embeddings"),
        *linear("region_embeddings.location", "bert.v_embeddings.image_location_embeddings"),
        *linear("region_embeddings.norm", "bert.v_embeddings.LayerNorm"),
    ]
    for i in range(c.num_layers):
        rules += hf_self_attention_block(f"text_layers.{i}", f"bert.encoder.layer.{i}")
    for i in range(c.num_vision_layers):
        rules += hf_self_attention_block(f"vision_layers.{i}", f"bert.encoder.v_layer.{i}")
    for k in range(len(c.text_co_ids)):
        rules += _co_layer(f"co_layers.{k}", f"bert.encoder.c_layer.{k}")
    rules += linear("text_pooler.dense", "bert.t_pooler.dense")
    rules += linear("vision_pooler.dense", "bert.v_pooler.dense")
    return rules


def head_rules(c: ViLBertConfig) -> list[Rule]:
    return [
        *hf_mlm_head("mlm", "cls.predictions"),
        *linear("pair.proj", "cls.bi_seq_relationship", flip_rows=True),  # index 0 = matches there
        *linear("region.transform.dense", "cls.imagePredictions.transform.dense"),
        *linear("region.transform.norm", "cls.imagePredictions.transform.LayerNorm"),
        *linear("region.decoders.class", "cls.imagePredictions.decoder"),
    ]


def _classifier(ours: str, theirs: str) -> list[Rule]:
    """``SimpleClassifier.logit_fc`` (Linear, GeLU, LayerNorm, Linear) -> ``MLPClassifier``."""
    return [
        *linear(f"{ours}.fc1", f"{theirs}.logit_fc.0"),
        *linear(f"{ours}.norm", f"{theirs}.logit_fc.2"),
        *linear(f"{ours}.fc2", f"{theirs}.logit_fc.3"),
    ]


def score_as_match_head(weight: Tensor, bias: Tensor) -> dict[str, Tensor]:
    """A single matching logit s = w.x + b as a 2-way head whose match score (logit 1 - logit 0) is s."""
    return {
        "proj.weight": torch.cat([torch.zeros_like(weight), weight]),
        "proj.bias": torch.cat([torch.zeros_like(bias), bias]),
    }


def task_heads(c: ViLBertConfig, state: Mapping[str, Tensor]) -> dict[str, tuple[nn.Module, dict, set[str]]]:
    heads: dict[str, tuple[nn.Module, dict, set[str]]] = {}
    for name, theirs, width in (
        ("vqa", "vil_prediction", c.pooled_dim),
        ("gqa", "vil_prediction_gqa", c.pooled_dim),
        ("nlvr2", "vil_binary_prediction", 2 * c.pooled_dim),  # over the two images' pooled outputs
    ):
        if f"{theirs}.logit_fc.3.weight" in state:
            head = MLPClassifier(width, 2 * c.pooled_dim, state[f"{theirs}.logit_fc.3.weight"].shape[0])
            heads[name] = (head, *module_state(_classifier("x", theirs), state, name))
    if "vil_logit.weight" in state:
        weight, bias = state["vil_logit.weight"], state["vil_logit.bias"]
        heads["retrieval"] = (
            PairHead(c.pooled_dim),
            score_as_match_head(weight, bias),
            {"vil_logit.weight", "vil_logit.bias"},
        )
    if "vil_tri_prediction.weight" in state:
        # SNLI-VE: their rows contradiction / neutral / entailment -> ours entailment / neutral / contradiction
        heads["snli-ve"] = (
            nn.Linear(c.pooled_dim, 3),
            *module_state(linear("x", "vil_tri_prediction", flip_rows=True), state, "snli-ve"),
        )
    if "vision_logit.weight" in state:
        # one logit per vision element (the referring-expression head, RegionScoreHead.score)
        heads["refexp"] = (
            nn.Linear(c.vision_dim, 1),
            *module_state(linear("x", "vision_logit"), state, "refexp"),
        )
    return heads


def ignored(key: str) -> str | None:
    if key == "cls.predictions.decoder.weight":
        return "tied copy of the word embeddings"
    if ".biOutput.q_dense" in key:
        return "dead weights: created but never used in vilbert.py's forward"
    for prefix, why in UNMAPPED_TASK_HEADS.items():
        if key.startswith(prefix):
            return why
    return None
