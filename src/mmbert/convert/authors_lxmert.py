"""LXMERT's own checkpoints (airsplay/lxmert) <-> mmbert ``Lxmert``.

Files: ``Epoch20_LXRT.pth`` written by src/pretrain/lxmert_pretrain.py (a plain state dict of
``LXRTPretraining``, every key prefixed ``module.`` by DataParallel), and the fine-tuned
``BEST.pth`` files of src/tasks (vqa / gqa / nlvr2: ``lxrt_encoder.model.[module.]bert.*`` plus
``logit_fc``). Below the prefix the names are Hugging Face's (``bert.`` instead of ``lxmert.``), so the
key map is ``hf_lxmert``'s. The config is the BERT archive's ``bert_config.json``; the layer counts are
command-line arguments of the authors' scripts (``--llayers 9 --xlayers 5 --rlayers 5``): they are read
from the weights, and ``llayers`` / ``xlayers`` / ``rlayers`` options, when given, must agree.
``cls.seq_relationship`` index 1 = matches, as in mmbert.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from mmbert.convert import hf_lxmert
from mmbert.convert.authors_common import bert_fields, module_state, require
from mmbert.convert.common import CheckpointError, Rule, linear
from mmbert.models.lxmert import LxmertConfig
from mmbert.nn import MLPClassifier

NAME = "lxmert"
TITLE = "LXMERT (airsplay/lxmert)"
FILES = "Epoch20_LXRT.pth (pre-training), BEST.pth (vqa / gqa / nlvr2 fine-tuning) + bert_config.json"
SIGNATURE = "bert.encoder.visn_fc.*, bert.encoder.x_layers.* (optionally under lxrt_encoder.model.)"
MATCH_ORDER = 1
PAPER_LAYERS = {"llayers": 9, "xlayers": 5, "rlayers": 5}
TASK_PREFIX = "lxrt_encoder.model."


def normalise(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A fine-tuned file's encoder keys (``lxrt_encoder.model.[module.]bert.*``) -> ``bert.*``."""
    out = {}
    for k, v in state.items():
        if k.startswith(TASK_PREFIX):
            k = k[len(TASK_PREFIX) :].removeprefix("module.")
        out[k] = v
    return out


def detect(keys: set[str]) -> bool:
    return any(
        k.startswith(
            (
                "bert.encoder.visn_fc.",
                f"{TASK_PREFIX}bert.encoder.visn_fc.",
                f"{TASK_PREFIX}module.bert.encoder.visn_fc.",
            )
        )
        for k in keys
    )


def _count(state: Mapping[str, Tensor], prefix: str) -> int:
    ids = {int(k[len(prefix) :].split(".")[0]) for k in state if k.startswith(prefix)}
    return max(ids) + 1 if ids else 0


def config_from(
    raw: Mapping[str, Any] | None, state: Mapping[str, Tensor], source: str, options: Mapping[str, Any]
) -> LxmertConfig:
    raw = require(
        raw, ("hidden_size", "num_attention_heads", "intermediate_size", "vocab_size"), source, "LXMERT"
    )
    fields = bert_fields(raw)
    counts = {
        "llayers": _count(state, "bert.encoder.layer."),
        "xlayers": _count(state, "bert.encoder.x_layers."),
        "rlayers": _count(state, "bert.encoder.r_layers."),
    }
    for name, n in counts.items():
        if name in options and options[name] != n:
            raise CheckpointError(f"{source}: --{name} {options[name]} but the weights hold {n} such layers")
    fields["num_layers"] = counts["llayers"]
    decoders = {
        n: state[f"obj_predict_head.decoder_dict.{n}.weight"].shape[0]
        for n in ("obj", "attr")
        if f"obj_predict_head.decoder_dict.{n}.weight" in state
    }
    qa = state.get("answer_head.logit_fc.3.weight")
    return LxmertConfig(
        **fields,
        num_vision_layers=counts["rlayers"],
        num_cross_layers=counts["xlayers"],
        region_feat_dim=state["bert.encoder.visn_fc.visn_fc.weight"].shape[1],
        num_qa_labels=qa.shape[0] if qa is not None else 0,
        num_object_labels=decoders.get("obj", 1600),
        num_attr_labels=decoders.get("attr", 400),
        predict_region_feats=True,
    )


def encoder_rules(c: LxmertConfig) -> list[Rule]:
    return hf_lxmert.encoder_rules(c, "bert.")


def head_rules(c: LxmertConfig) -> list[Rule]:
    return hf_lxmert.head_rules(c)


def task_heads(c: LxmertConfig, state: Mapping[str, Tensor]) -> dict[str, tuple[nn.Module, dict, set[str]]]:
    """The fine-tuned ``logit_fc`` (Linear, GeLU, LayerNorm, Linear): NLVR2's over two pooled outputs
    (2 answers), otherwise the VQA / GQA answer classifier."""
    if "logit_fc.3.weight" not in state:
        return {}
    rules = [*linear("x.fc1", "logit_fc.0"), *linear("x.norm", "logit_fc.2"), *linear("x.fc2", "logit_fc.3")]
    out, inp = state["logit_fc.3.weight"].shape[0], state["logit_fc.0.weight"].shape[1]
    head = MLPClassifier(inp, 2 * c.dim, out, c.layer_norm_eps)
    name = "nlvr2" if inp == 2 * c.dim and out == 2 else "vqa"
    return {name: (head, *module_state(rules, state, "logit_fc"))}


def ignored(key: str) -> str | None:
    if key.startswith("cls.predictions.decoder."):
        return "tied copy of the word embeddings"
    return None
