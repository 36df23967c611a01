"""UNITER's own checkpoints (ChenRocks/UNITER) <-> mmbert ``Uniter``.

Files: ``uniter-base.pt`` / ``uniter-large.pt`` and the ``ckpt/model_step_<n>.pt`` files utils/save.py
writes: a plain state dict (``uniter.*`` encoder; pre-training heads ``cls``, ``itm_output``,
``region_classifier``, ``feat_regress``; or a task head such as ``vqa_output``), in float16 when trained
with apex O2 (read as float32 here). The config (config/uniter-base.json) has BERT's keys; ``img_dim``
(the feature width) is a constructor argument there and is read from ``img_linear``'s shape here. The
released models use the cased vocabulary (28996 tokens, ``bert-base-cased``): the vocabulary size is
taken from the weights, so preset, tokenizer and file agree or the load says which differs.

``img_embeddings.mask_embedding`` is (2, F): row 0 is zeroed in UNITER's forward, row 1 is the vector
of masked regions (ours). ``itm_output`` index 1 = matches, as in mmbert.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from mmbert.convert.authors_common import bert_fields, module_state, require
from mmbert.convert.common import CheckpointError, Rule, hf_mlm_head, hf_self_attention_block, linear
from mmbert.convert.hf_bert import hf_text_embeddings
from mmbert.models.uniter import UniterConfig
from mmbert.nn import MLPClassifier

NAME = "uniter"
TITLE = "UNITER (ChenRocks/UNITER)"
FILES = (
    "uniter-base.pt, uniter-large.pt, ckpt/model_step_<n>.pt + config/uniter-base.json / uniter-large.json"
)
SIGNATURE = "uniter.img_embeddings.*, uniter.encoder.layer.*"
MATCH_ORDER = 1


def detect(keys: set[str]) -> bool:
    return "uniter.img_embeddings.img_linear.weight" in keys


def _count(state: Mapping[str, Tensor], prefix: str) -> int:
    ids = {int(k[len(prefix) :].split(".")[0]) for k in state if k.startswith(prefix)}
    return max(ids) + 1 if ids else 0


def config_from(
    raw: Mapping[str, Any] | None, state: Mapping[str, Tensor], source: str, options: Mapping[str, Any]
) -> UniterConfig:
    raw = require(raw, ("hidden_size", "num_attention_heads", "intermediate_size"), source, "UNITER")
    fields = bert_fields({**raw, "vocab_size": state["uniter.embeddings.word_embeddings.weight"].shape[0]})
    if raw.get("vocab_size") not in (None, fields["vocab_size"]):
        raise CheckpointError(
            f"{source}: the config says vocab_size {raw['vocab_size']} but the weights have "
            f"{fields['vocab_size']} word embeddings"
        )
    layers = _count(state, "uniter.encoder.layer.")
    if raw.get("num_hidden_layers", layers) != layers:
        raise CheckpointError(
            f"{source}: the config says {raw['num_hidden_layers']} layers, the weights have {layers}"
        )
    fields["num_layers"] = layers
    classes = state.get("region_classifier.net.3.weight")
    return UniterConfig(
        **fields,
        region_feat_dim=state["uniter.img_embeddings.img_linear.weight"].shape[1],
        num_region_classes=classes.shape[0] if classes is not None else 1601,
    )


def encoder_rules(c: UniterConfig) -> list[Rule]:
    img = "uniter.img_embeddings"
    rules = hf_text_embeddings("embeddings.text", "uniter.embeddings")
    rules += [
        *linear("embeddings.region.feat_proj", f"{img}.img_linear"),
        *linear("embeddings.region.feat_norm", f"{img}.img_layer_norm"),
        *linear("embeddings.region.loc_proj", f"{img}.pos_linear"),
        *linear("embeddings.region.loc_norm", f"{img}.pos_layer_norm"),
        Rule("embeddings.region.mask_embedding", (f"{img}.mask_embedding.weight",), row=1),
        *linear("embeddings.region.norm", f"{img}.LayerNorm"),
    ]
    for i in range(c.num_layers):
        rules += hf_self_attention_block(f"layers.{i}", f"uniter.encoder.layer.{i}")
    rules += linear("pooler.dense", "uniter.pooler.dense")
    return rules


def head_rules(c: UniterConfig) -> list[Rule]:
    return [
        *hf_mlm_head("mlm", "cls.predictions"),
        *linear("pair.proj", "itm_output"),
        # region_classifier / feat_regress.net: Linear, GELU, LayerNorm(, Linear)
        *linear("region.class_transform.dense", "region_classifier.net.0"),
        *linear("region.class_transform.norm", "region_classifier.net.2"),
        *linear("region.class_decoder", "region_classifier.net.3"),
        *linear("region.feat_transform.dense", "feat_regress.net.0"),
        *linear("region.feat_transform.norm", "feat_regress.net.2"),
        Rule("region.feat_bias", ("feat_regress.bias",)),
    ]


def task_heads(c: UniterConfig, state: Mapping[str, Tensor]) -> dict[str, tuple[nn.Module, dict, set[str]]]:
    """UNITER's ``vqa_output`` (Linear, GELU, LayerNorm, Linear) on the pooled output: the VQA classifier."""
    if "vqa_output.3.weight" not in state:
        return {}
    rules = [
        *linear("x.fc1", "vqa_output.0"),
        *linear("x.norm", "vqa_output.2"),
        *linear("x.fc2", "vqa_output.3"),
    ]
    head = MLPClassifier(c.dim, 2 * c.dim, state["vqa_output.3.weight"].shape[0], c.layer_norm_eps)
    return {"vqa": (head, *module_state(rules, state, "vqa_output"))}


def ignored(key: str) -> str | None:
    if key == "cls.predictions.decoder.weight":
        return "tied copy of the word embeddings"
    if key == "feat_regress.weight":
        return "tied copy of img_linear.weight (used transposed)"
    return None
