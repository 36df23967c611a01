"""The original VisualBERT checkpoints (uclanlp/visualbert) <-> mmbert ``VisualBert``.

Files: ``model_state_epoch_<n>.th`` written by visualbert/models/model_wrapper.py (the AllenNLP model's
state dict: ``bert.`` for the wrapper's attribute, then ``TrainVisualBERTObjective``'s own ``bert.``
(``BertVisualModel``) or ``cls.``), and the released ``*.th`` pre-trained files of the same layout. The
layout differs from Hugging Face's (``token_type_embeddings_visual``, ``position_embeddings_visual``,
``projection`` vs ``visual_token_type_embeddings`` ...), hence this map. The config is the BERT archive's
``bert_config.json``; the visual width (``visual_embedding_dim`` of the experiment config) is read from
``projection``'s shape.

The original pre-training data passes no visual token types, so regions take type 0 (Hugging Face and
mmbert's default: 1): the loaded config sets ``region_segment=0``. ``cls.seq_relationship`` index 1 =
caption matches (``is_random_next`` 1), as in mmbert. Its MLM head scores region positions too; mmbert's
scores the text (the same head applies to ``Encoded.vision`` for the region rows).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from mmbert.convert.authors_common import bert_fields, require
from mmbert.convert.common import CheckpointError, Rule, hf_mlm_head, hf_self_attention_block, linear
from mmbert.convert.hf_bert import hf_text_embeddings
from mmbert.models.visualbert import VisualBertConfig

NAME = "visualbert"
TITLE = "VisualBERT (uclanlp/visualbert)"
FILES = "model_state_epoch_<n>.th and the released *.th files + bert_config.json"
SIGNATURE = "[bert.]bert.embeddings.projection, token_type_embeddings_visual, position_embeddings_visual"
MATCH_ORDER = 1


def _prefix(keys: set[str]) -> str | None:
    for p in ("bert.bert.", "bert."):
        # the BERT layer names (attention.self) tell it from VOLTA's (attention_self), which shares the embeddings
        if f"{p}embeddings.token_type_embeddings_visual.weight" in keys and any(
            k.startswith(f"{p}encoder.layer.") and ".attention.self." in k for k in keys
        ):
            return p
    return None


def normalise(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """``bert.bert.*`` / ``bert.cls.*`` (inside the AllenNLP wrapper) -> ``bert.*`` / ``cls.*``."""
    if _prefix(set(state)) != "bert.bert.":
        return state
    return {
        k[len("bert.") :] if k.startswith(("bert.bert.", "bert.cls.")) else k: v for k, v in state.items()
    }


def detect(keys: set[str]) -> bool:
    return _prefix(keys) is not None


def _count(state: Mapping[str, Tensor], prefix: str) -> int:
    ids = {int(k[len(prefix) :].split(".")[0]) for k in state if k.startswith(prefix)}
    return max(ids) + 1 if ids else 0


def config_from(
    raw: Mapping[str, Any] | None, state: Mapping[str, Tensor], source: str, options: Mapping[str, Any]
) -> VisualBertConfig:
    raw = require(
        raw,
        ("hidden_size", "num_attention_heads", "intermediate_size", "vocab_size"),
        source,
        "VisualBERT (its BERT bert_config.json)",
    )
    fields = bert_fields(raw)
    layers = _count(state, "bert.encoder.layer.")
    if fields["num_layers"] != layers:
        raise CheckpointError(
            f"{source}: the config says {fields['num_layers']} layers, the weights have {layers}"
        )
    return VisualBertConfig(
        **fields,
        region_feat_dim=state["bert.embeddings.projection.weight"].shape[1],
        special_visual_initialize=False,  # the weights are loaded: no copy at construction needed
        region_segment=0,
    )


def encoder_rules(c: VisualBertConfig) -> list[Rule]:
    e = "bert.embeddings"
    rules = [
        *hf_text_embeddings("embeddings.text", e),
        Rule("embeddings.visual_segment.weight", (f"{e}.token_type_embeddings_visual.weight",)),
        Rule("embeddings.visual_position.weight", (f"{e}.position_embeddings_visual.weight",)),
        *linear("embeddings.visual_proj", f"{e}.projection"),
    ]
    for i in range(c.num_layers):
        rules += hf_self_attention_block(f"layers.{i}", f"bert.encoder.layer.{i}")
    rules += linear("pooler.dense", "bert.pooler.dense")
    return rules


def head_rules(c: VisualBertConfig) -> list[Rule]:
    return [*hf_mlm_head("mlm", "cls.predictions"), *linear("pair.proj", "cls.seq_relationship")]


def task_heads(
    c: VisualBertConfig, state: Mapping[str, Tensor]
) -> dict[str, tuple[nn.Module, dict, set[str]]]:
    return {}


def ignored(key: str) -> str | None:
    if key == "cls.predictions.decoder.weight":
        return "tied copy of the word embeddings"
    return None
