"""VL-BERT's own checkpoints (jackroos/VL-BERT) <-> mmbert ``VLBert``.

Files: ``<MODEL_PREFIX>-<epoch:04d>.model`` written by common/callbacks/epoch_end_callbacks/checkpoint.py:
a dict ``{'state_dict', 'optimizer', 'validation_monitor'}`` whose state dict comes from the
DistributedDataParallel-wrapped module, so every key starts with ``module.``. The config is the YAML of
cfgs/ (``NETWORK.VLBERT`` holds the BERT sizes). The precomputed-feature path (``IMAGE_FEAT_PRECOMPUTED``)
keeps only ``image_feature_extractor.obj_downsample`` of the image network; any other
``image_feature_extractor.*`` weight (the ResNet backbone and RoI head of the end-to-end path) is not
part of mmbert's model: it is reported by name as not loaded.

Heads: ``vlbert.mlm_head`` (MLM with visual clues) and ``vlbert.mvrc_head`` (masked RoI classification,
``gelu(dense)`` with no LayerNorm). The pre-training configs build no pooler (``with_pooler: false``) and
no relationship head.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from mmbert.convert.authors_common import bert_fields, require
from mmbert.convert.common import CheckpointError, Rule, hf_mlm_head, hf_self_attention_block, linear
from mmbert.models.vl_bert import VLBertConfig

NAME = "vl-bert"
TITLE = "VL-BERT (jackroos/VL-BERT)"
FILES = "<prefix>-<epoch>.model (dict with state_dict, 'module.' keys) + cfgs/pretrain/*.yaml"
SIGNATURE = "vlbert.word_embeddings, vlbert.embedding_LayerNorm, image_feature_extractor.obj_downsample"
MATCH_ORDER = None
FEATURES = "image_feature_extractor.obj_downsample.1"


def detect(keys: set[str]) -> bool:
    return "vlbert.embedding_LayerNorm.weight" in keys


def config_from(
    raw: Mapping[str, Any] | None, state: Mapping[str, Tensor], source: str, options: Mapping[str, Any]
) -> VLBertConfig:
    raw = require(raw, ("NETWORK",), source, "VL-BERT (YAML)")
    net = raw["NETWORK"]
    vl = net.get("VLBERT", {})
    require(vl, ("hidden_size", "num_attention_heads", "intermediate_size", "vocab_size"), source, "VL-BERT")
    if not net.get("IMAGE_FEAT_PRECOMPUTED", True):
        raise CheckpointError(
            f"{source}: IMAGE_FEAT_PRECOMPUTED is false (the end-to-end image path); mmbert runs on "
            "precomputed region features only"
        )
    for key, want in (("object_word_embed_mode", 2), ("visual_ln", True), ("obj_pos_id_relative", True)):
        if vl.get(key, want) != want:
            raise CheckpointError(
                f"{source}: NETWORK.VLBERT.{key} = {vl[key]!r} is not supported (only {want!r})"
            )
    feat_dim = state["object_mask_visual_embedding.weight"].shape[1]
    proj_in = state[f"{FEATURES}.weight"].shape[1]
    if (proj_in - feat_dim) % 8:
        raise CheckpointError(
            f"{source}: {FEATURES} takes {proj_in} inputs: not 8 x geometry + {feat_dim} features"
        )
    classes = state.get("vlbert.mvrc_head.region_cls_pred.weight")
    return VLBertConfig(
        **bert_fields(vl),
        region_feat_dim=feat_dim,
        geometry_dim=(proj_in - feat_dim) // 8,
        visual_dim=state[f"{FEATURES}.weight"].shape[0],
        num_region_classes=classes.shape[0] if classes is not None else 1601,
        with_pooler="vlbert.pooler.dense.weight" in state,
        global_region="first",  # the authors' loaders add the image as box 0
    )


def encoder_rules(c: VLBertConfig) -> list[Rule]:
    v = "vlbert"
    rules = [
        Rule("embeddings.text.word.weight", (f"{v}.word_embeddings.weight",)),
        Rule("embeddings.text.position.weight", (f"{v}.position_embeddings.weight",)),
        Rule("embeddings.text.segment.weight", (f"{v}.token_type_embeddings.weight",)),
        *linear("embeddings.text.norm", f"{v}.embedding_LayerNorm"),
        *linear("embeddings.region_proj", FEATURES),
        *linear("embeddings.visual_text_norm", f"{v}.visual_ln_text"),
        *linear("embeddings.visual_object_norm", f"{v}.visual_ln_object"),
        Rule("embeddings.image_token", ("object_linguistic_embeddings.weight",), row=0),
        Rule("embeddings.masked_token", ("object_mask_word_embedding.weight",), row=0),
        Rule("embeddings.masked_feature", ("object_mask_visual_embedding.weight",), row=0),
        Rule("embeddings.end_token", (f"{v}.end_embedding.weight",), row=0),
        Rule("embeddings.text_only_visual", ("aux_text_visual_embedding.weight",), row=0),
    ]
    if c.visual_dim != c.dim:
        rules += [
            *linear("embeddings.visual_text_proj", f"{v}.visual_1x1_text"),
            *linear("embeddings.visual_object_proj", f"{v}.visual_1x1_object"),
        ]
    for i in range(c.num_layers):
        rules += hf_self_attention_block(f"layers.{i}", f"{v}.encoder.layer.{i}")
    if c.with_pooler:
        rules += linear("pooler.dense", f"{v}.pooler.dense")
    return rules


def head_rules(c: VLBertConfig) -> list[Rule]:
    return [
        *hf_mlm_head("mlm", "vlbert.mlm_head.predictions"),
        *linear("region.transform.dense", "vlbert.mvrc_head.transform.dense"),
        *linear("region.decoders.class", "vlbert.mvrc_head.region_cls_pred"),
    ]


def task_heads(c: VLBertConfig, state: Mapping[str, Tensor]) -> dict[str, tuple[nn.Module, dict, set[str]]]:
    return {}


def ignored(key: str) -> str | None:
    if key == "vlbert.mlm_head.predictions.decoder.weight":
        return "tied copy of the word embeddings"
    if key.startswith("image_feature_extractor.") and not key.startswith(FEATURES):
        return "image backbone of the end-to-end path (mmbert takes precomputed region features)"
    return None
