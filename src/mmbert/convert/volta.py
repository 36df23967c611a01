"""VOLTA's checkpoints (e-bug/volta) <-> mmbert models.

Files: ``pytorch_model_<epoch>.bin`` written by volta/train_utils.py (a plain state dict of
``BertForVLPreTraining``) with a config of config/ (``ctrl_vilbert_base.json``, ``vilbert_base.json``,
...). VOLTA's encoder is a flat list of numbered sublayers, ``bert.encoder.layer.<n>``: an attention
sublayer (``attention_self.{query,key,value}`` for text queries, ``v_query/v_key/v_value`` for vision,
``attention_output.{dense,LayerNorm}`` and ``v_dense/v_LayerNorm``) or a feed-forward one
(``intermediate``/``output``, ``v_`` for vision), and per-sublayer lists saying which streams use it
(``tt/tv/vt/vv_attn_sublayers``, ``t/v_ff_sublayers``, ``shared_sublayers``). ``plan`` reads those lists
into mmbert's named blocks, one attention sublayer and the feed-forward after it per block:

* tt alone (+ t ff): a text ``Block``; vv alone: a vision ``Block``; tt and vv together, not shared: one
  of each (the two streams' layers that run side by side);
* tv and vt, not shared (+ ff for both): a ViLBERT co-attention layer (text queries over ``v_key`` /
  ``v_value``, vision queries over ``key`` / ``value``, as volta/encoders.py ``BertGatedSelfAttention``).

* tt, tv, vt and vv, shared, with a shared feed-forward: one single-stream ``Block`` over [text ; vision].
* tv and vt, shared, with no feed-forward after it: LXMERT's one cross-attention serving both directions
  (``query``/``key``/``value`` and ``attention_output`` for both; the ``v_*`` names are the same tensors,
  checked equal); the tt + vv attention and the feed-forwards after it are the two per-stream ``Block``s
  of that cross-modality layer.

Layouts built from the first kinds (``ctrl_vilbert_base``, ``vilbert_base``) load into ``ViLBert``; the
single-stream ``ctrl_visualbert_base`` / ``ctrl_uniter_base`` into ``VisualBert`` / ``Uniter`` with the
whole-image region first, VOLTA's fused ReLU pooler ([CLS] x whole-image region, ``pooling="volta"``)
and its region head (UNITER also with 5-d locations, its own region type table, no mask embedding);
``ctrl_lxmert`` into ``Lxmert`` with the same whole-image region, pooler and region head and 5-d locations;
``ctrl_vl-bert_base`` into ``VLBert`` with VOLTA's embeddings (``embeddings="volta"``) and, so that its
outputs are VOLTA's, ``volta_position_shift=True`` (VOLTA's batch-dependent text positions; reported).

The matching head ``cls.bi_seq_relationship`` puts "matches" at index 0 (``is_match`` 0); rows swapped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from mmbert.config import ModelConfig
from mmbert.convert.authors_common import bert_fields, require
from mmbert.convert.common import CheckpointError, Rule, fused, hf_mlm_head, linear
from mmbert.convert.hf_bert import hf_text_embeddings
from mmbert.models.lxmert import LxmertConfig
from mmbert.models.uniter import UniterConfig
from mmbert.models.vilbert import ViLBertConfig
from mmbert.models.visualbert import VisualBertConfig
from mmbert.models.vl_bert import VOLTA_PRETRAINING_SLOTS, VLBertConfig

NAME = "volta"
TITLE = "VOLTA (e-bug/volta: ctrl_* and original configs)"
FILES = "pytorch_model_<epoch>.bin + config/ctrl_vilbert_base.json, vilbert_base.json, ..."
SIGNATURE = "bert.encoder.layer.<n>.attention_self.*, .attention_output.v_dense (flat sublayers)"
MATCH_ORDER = 0
# single-stream VOLTA layouts mmbert reproduces, by their image_embeddings
SINGLE_STREAM = ("visualbert", "uniter", "vl-bert")
LISTS = (
    "tt_attn_sublayers",
    "tv_attn_sublayers",
    "vt_attn_sublayers",
    "vv_attn_sublayers",
    "t_ff_sublayers",
    "v_ff_sublayers",
)


def detect(keys: set[str]) -> bool:
    return any(".attention_self." in k for k in keys) and any(
        k.startswith("bert.encoder.layer.") for k in keys
    )


@dataclass(frozen=True)
class Layout:
    """What ``config_from`` read beyond the config: the blocks in run order (``encoder_rules`` needs the
    sublayer ids) and the shared sublayers' ``v_*`` keys checked equal to their text twins (the only
    ``v_*`` keys ``ignored`` excuses)."""

    steps: list[Step]
    twins: frozenset[str]


@dataclass(frozen=True)
class Step:
    """One mmbert block made of VOLTA sublayers: ``kind`` text | vision | co | joint | cross, ``attn`` and
    ``ff`` ids (``ff`` None for LXMERT's cross-attention, which has none), ``index`` its number among the
    blocks of that kind."""

    kind: str
    attn: int
    ff: int | None
    index: int


def plan(raw: Mapping[str, Any], source: str) -> list[Step]:
    """The sublayer lists as mmbert blocks, in run order; a layout outside ViLBERT's building blocks is
    refused naming the sublayer and the missing mmbert model."""
    sets = {name: set(raw.get(name, [])) for name in LISTS}
    shared = set(raw.get("shared_sublayers", []))
    tt, tv, vt, vv = (sets[f"{k}_attn_sublayers"] for k in ("tt", "tv", "vt", "vv"))
    t_ff, v_ff = sets["t_ff_sublayers"], sets["v_ff_sublayers"]
    depth = 1 + max(max(s) for s in sets.values() if s)
    single = {"tt", "tv", "vt", "vv"}
    if shared and len(shared) == depth and raw.get("image_embeddings") in SINGLE_STREAM:
        steps = []
        for i in range(0, depth, 2):
            a = {name for name, s in (("tt", tt), ("tv", tv), ("vt", vt), ("vv", vv)) if i in s}
            if a != single or i + 1 not in t_ff or i + 1 not in v_ff:
                raise CheckpointError(
                    f"{source}: single-stream sublayers {i}, {i + 1} are not attention + feed-forward"
                )
            steps.append(Step("joint", i, i + 1, i // 2))
        return steps
    if shared and len(shared) == depth:
        raise CheckpointError(
            f"{source}: a single-stream (every sublayer shared) VOLTA layout with {raw.get('image_embeddings')} "
            f"embeddings; the single-stream layouts that load: {', '.join(SINGLE_STREAM)}"
        )
    steps: list[Step] = []
    counts = {"text": 0, "vision": 0, "co": 0, "cross": 0}
    i = 0
    while i < depth:
        a = {name for name, s in (("tt", tt), ("tv", tv), ("vt", vt), ("vv", vv)) if i in s}
        f = i + 1
        ff = {name for name, s in (("t", t_ff), ("v", v_ff)) if f in s}
        if a == {"tv", "vt"} and i in shared and not ff and f not in shared:  # LXMERT: no FFN after it
            steps.append(Step("cross", i, None, counts["cross"]))
            counts["cross"] += 1
            i += 1
            continue
        if i in shared or f in shared:
            raise CheckpointError(
                f"{source}: sublayers {i} (attention {sorted(a) or 'none'}) and {f} (feed-forward "
                f"{sorted(ff) or 'none'}) are shared between the streams; mmbert shares only LXMERT's "
                "cross-attention (tv + vt, no feed-forward) and whole single-stream layouts"
            )
        if a == {"tv", "vt"} and ff == {"t", "v"}:
            kinds = ["co"]
        elif a and a <= {"tt", "vv"} and ff == {{"tt": "t", "vv": "v"}[x] for x in a}:
            kinds = [{"tt": "text", "vv": "vision"}[x] for x in sorted(a)]
        else:
            raise CheckpointError(
                f"{source}: sublayers {i} (attention {sorted(a) or 'none'}) and {f} (feed-forward "
                f"{sorted(ff) or 'none'}) form no mmbert block (text, vision, co-attention or LXMERT "
                "cross-attention layer)"
            )
        for kind in kinds:
            steps.append(Step(kind, i, f, counts[kind]))
            counts[kind] += 1
        i += 2
    if counts["cross"] and counts["co"]:
        raise CheckpointError(f"{source}: both ViLBERT co-attention and LXMERT cross-attention sublayers")
    return steps


def config_from(
    raw: Mapping[str, Any] | None, state: Mapping[str, Tensor], source: str, options: Mapping[str, Any]
) -> tuple[ModelConfig, Layout]:
    """The mmbert config and the ``Layout`` (block sublayer ids, verified shared-sublayer twins)."""
    raw = require(raw, ("hidden_size", "tt_attn_sublayers", "image_embeddings"), source, "VOLTA")
    if options.get("volta_region_slots") is not None and raw.get("image_embeddings") != "vl-bert":
        raise CheckpointError(
            f"{source}: volta_region_slots applies to VOLTA's VL-BERT only (image_embeddings 'vl-bert'), "
            f"this config has {raw.get('image_embeddings')!r}"
        )
    steps = plan(raw, source)
    if steps and steps[0].kind == "joint":
        config = _single_stream_config(raw, state, steps, source, options)
    elif any(s.kind == "cross" for s in steps):
        config = _lxmert_config(raw, state, steps, source)
    else:
        config = _vilbert_config(raw, state, steps, source)
    return config, Layout(steps, _check_shared(raw, state, source))


def _vilbert_config(
    raw: Mapping[str, Any], state: Mapping[str, Tensor], steps: list[Step], source: str
) -> ViLBertConfig:
    """VOLTA's ViLBERT layouts (text, vision and co-attention blocks, nothing shared): mmbert's ViLBERT."""
    _require_settings(raw, source, "ViLBERT", image_embeddings="vilbert", num_locs=5)
    for key in ("sublayer2intermediate_size", "sublayer2v_intermediate_size"):
        if raw.get(key):
            raise CheckpointError(f"{source}: per-sublayer FFN sizes ({key}) are not supported")
    if raw.get("pooler_size") != raw.get("v_pooler_size"):
        raise CheckpointError(
            f"{source}: pooler_size and v_pooler_size differ; the 'mul' fusion needs them equal"
        )
    text_before, vision_before, co = 0, 0, []
    for s in steps:
        if s.kind == "co":
            co.append((s.attn, text_before, vision_before))
        elif s.kind == "text":
            text_before += 1
        else:
            vision_before += 1
    co_widths = {raw.get("sublayer2attn_hidden_size", {}).get(str(a), raw["hidden_size"]) for a, _, _ in co}
    co_heads = {
        raw.get("sublayer2num_attention_heads", {}).get(str(a), raw["num_attention_heads"]) for a, _, _ in co
    }
    if len(co_widths) > 1 or len(co_heads) > 1:
        raise CheckpointError(f"{source}: co-attention sublayers of different widths are not supported")
    classes = state.get("cls.imagePredictions.decoder_dict.0.weight")
    config = ViLBertConfig(
        **{**bert_fields(raw), "num_layers": text_before},
        region_feat_dim=raw["v_feature_size"],
        vision_dim=raw["v_hidden_size"],
        vision_heads=raw["v_num_attention_heads"],
        vision_ffn_dim=raw["v_intermediate_size"],
        num_vision_layers=vision_before,
        co_dim=co_widths.pop() if co_widths else raw["hidden_size"],
        co_heads=co_heads.pop() if co_heads else raw["num_attention_heads"],
        text_co_ids=tuple(t for _, t, _ in co),
        vision_co_ids=tuple(v for _, _, v in co),
        pooled_dim=raw["pooler_size"],
        num_region_classes=classes.shape[0] if classes is not None else 1601,
    )
    return config


# volta/config.py BertConfig's defaults for the settings checked below: what VOLTA runs with when a config
# file leaves the key out (config/lxmert.json has no add_global_imgfeat: no whole-image region)
VOLTA_DEFAULTS: dict[str, Any] = {
    "add_global_imgfeat": None,
    "fusion_method": "mul",
    "num_locs": 5,
    "image_embeddings": "vilbert",
}


def _require_settings(raw: Mapping[str, Any], source: str, model: str, **want: Any) -> None:
    """The VOLTA settings mmbert's ``model`` reproduces: ``want`` plus, for every layout, the whole-image
    region first and the "mul" fusion of the two poolers. A key the file leaves out takes VOLTA's default
    (``VOLTA_DEFAULTS``), so a missing ``add_global_imgfeat`` means no whole-image region and is refused."""
    for key, value in {"add_global_imgfeat": "first", "fusion_method": "mul", **want}.items():
        got = raw.get(key, VOLTA_DEFAULTS.get(key, value))
        if got != value:
            shown = f"= {got!r}" if key in raw else f"absent (VOLTA's default {got!r})"
            raise CheckpointError(f"{source}: {key} {shown}; mmbert's {model} reproduces {value!r} only")


def _check_shared(raw: Mapping[str, Any], state: Mapping[str, Tensor], source: str) -> frozenset[str]:
    """A shared sublayer's ``v_*`` modules are its text ones, so the file lists each tensor twice: the
    twins must be equal (one is loaded, the other reported as ignored). Returns the verified ``v_*`` keys."""
    shared = {f"bert.encoder.layer.{n}." for n in raw.get("shared_sublayers", [])}
    twins = set()
    for k, v in state.items():
        if ".v_" in k and any(k.startswith(p) for p in shared):
            text = k.replace(".v_", ".")
            if text not in state or not torch.equal(state[text], v):
                raise CheckpointError(f"{source}: shared sublayer key {k} differs from {text}")
            twins.add(k)
    return frozenset(twins)


def _lxmert_config(
    raw: Mapping[str, Any], state: Mapping[str, Tensor], steps: list[Step], source: str
) -> LxmertConfig:
    """VOLTA's controlled LXMERT: the language and object-relationship layers (text / vision steps before
    the first cross-attention), then per cross-attention one text and one vision layer from the same
    sublayers; mmbert's LXMERT with the whole-image region first, 5-d locations, VOLTA's pooler and its
    1601-class region head."""
    _require_settings(raw, source, "LXMERT", image_embeddings="lxmert", num_locs=5)
    for key in ("hidden_size", "num_attention_heads", "intermediate_size", "pooler_size"):
        if raw.get(f"v_{key}", raw[key]) != raw[key]:
            raise CheckpointError(
                f"{source}: v_{key} = {raw[f'v_{key}']} but {key} = {raw[key]}; mmbert's LXMERT has one width "
                "for both streams"
            )
    for key in [k for k in raw if k.startswith("sublayer2")]:
        if raw[key]:
            raise CheckpointError(f"{source}: per-sublayer sizes ({key}) are not supported for LXMERT")
    first = next(k for k, s in enumerate(steps) if s.kind == "cross")
    before, after = steps[:first], steps[first:]
    if any(s.kind not in ("text", "vision") for s in before):
        raise CheckpointError(f"{source}: LXMERT layout with a non-stream layer before its first cross-attention")
    for k in range(0, len(after), 3):
        group = after[k : k + 3]
        if [s.kind for s in group] != ["cross", "text", "vision"] or group[1].attn != group[2].attn:
            raise CheckpointError(
                f"{source}: after cross-attention sublayer {group[0].attn}, mmbert's LXMERT needs one text and "
                f"one vision layer from the same sublayers; found {[(s.kind, s.attn) for s in group[1:]]}"
            )
    classes = state.get("cls.imagePredictions.decoder_dict.0.weight")
    return LxmertConfig(
        **{**bert_fields(raw), "num_layers": sum(s.kind == "text" for s in before)},
        num_vision_layers=sum(s.kind == "vision" for s in before),
        num_cross_layers=len(after) // 3,
        region_feat_dim=raw["v_feature_size"],
        num_qa_labels=0,
        num_object_labels=classes.shape[0] if classes is not None else 1601,
        num_attr_labels=0,
        predict_region_feats=False,
        global_region="first",
        location_dims=5,
        pooling="volta",
        pooled_dim=raw["pooler_size"],
    )


def _single_stream_config(
    raw: Mapping[str, Any],
    state: Mapping[str, Tensor],
    steps: list[Step],
    source: str,
    options: Mapping[str, Any],
) -> ModelConfig:
    """VOLTA's controlled VisualBERT, UNITER and VL-BERT: mmbert's model with the whole-image region first,
    VOLTA's fused ReLU pooler and its region head (UNITER and VL-BERT with their VOLTA embedding options).
    Shared sublayers list each tensor under both names: checked equal, loaded once. VL-BERT's vision slot
    count is not in the files (it is the loader's max_region_num + 1): the ``volta_region_slots`` option,
    else VOLTA's pre-training 37."""
    _require_settings(raw, source, f"{raw['image_embeddings']} model")
    if raw.get("pooler_size") != raw.get("v_pooler_size"):
        raise CheckpointError(
            f"{source}: pooler_size and v_pooler_size differ; the 'mul' fusion needs them equal"
        )
    classes = state.get("cls.imagePredictions.decoder_dict.0.weight")
    if raw.get("image_embeddings") == "vl-bert":
        targets = {k for k, w in raw.get("visual_target_weights", {}).items() if w > 0}
        if targets - {"0"}:
            raise CheckpointError(
                f"{source}: visual targets {sorted(targets)}; mmbert's VOLTA VL-BERT reproduces target 0 (KL) only"
            )
        if raw.get("image_head_ln", True):
            raise CheckpointError(f"{source}: image_head_ln true; VOLTA's VL-BERT configs have false")
        return VLBertConfig(
            **{**bert_fields(raw), "num_layers": len(steps)},
            region_feat_dim=raw["v_feature_size"],
            geometry_dim=raw["v_coordinate_embeddings_dim"],
            visual_dim=raw["v_hidden_size"],
            num_region_classes=classes.shape[0] if classes is not None else 1601,
            global_region="first",
            embeddings="volta",
            volta_position_shift=True,  # VOLTA's own outputs; mmbert's positions with False
            volta_region_slots=(
                VOLTA_PRETRAINING_SLOTS if options.get("volta_region_slots") is None else options["volta_region_slots"]
            ),
            pooling="volta",
            pooled_dim=raw["pooler_size"],
        )
    if raw.get("image_embeddings") == "uniter":
        if raw.get("num_locs", 5) != 5:
            raise CheckpointError(f"{source}: num_locs = {raw['num_locs']}; VOLTA's UNITER runs with 5")
        return UniterConfig(
            **{**bert_fields(raw), "num_layers": len(steps)},
            region_feat_dim=raw["v_feature_size"],
            num_region_classes=classes.shape[0] if classes is not None else 1601,
            global_region="first",
            location_dims=5,
            own_region_segment=True,
            mask_embedding=False,
            pooling="volta",
            pooled_dim=raw["pooler_size"],
            region_head="volta",
        )
    return VisualBertConfig(
        **{**bert_fields(raw), "num_layers": len(steps)},
        region_feat_dim=raw["v_feature_size"],
        special_visual_initialize=False,
        global_region="first",
        region_segment=1,  # VOLTA's VisualBertEmbeddings: visual token type 1, visual position 0
        pooling="volta",
        pooled_dim=raw["pooler_size"],
        num_region_classes=classes.shape[0] if classes is not None else 1601,
    )


def _stream_block(ours: str, attn: int, ff: int, v: str) -> list[Rule]:
    """A ``Block`` from one stream's half of an attention and a feed-forward sublayer (``v`` = "" or "v_")."""
    a, f = f"bert.encoder.layer.{attn}", f"bert.encoder.layer.{ff}"
    return [
        *fused(f"{ours}.attn.qkv", (f"{a}.attention_self.{v}{n}" for n in ("query", "key", "value"))),
        *linear(f"{ours}.attn.out", f"{a}.attention_output.{v}dense"),
        *linear(f"{ours}.norm1", f"{a}.attention_output.{v}LayerNorm"),
        *linear(f"{ours}.ffn.fc1", f"{f}.intermediate.{v}dense"),
        *linear(f"{ours}.ffn.fc2", f"{f}.output.{v}dense"),
        *linear(f"{ours}.norm2", f"{f}.output.{v}LayerNorm"),
    ]


def _co_layer(ours: str, attn: int, ff: int) -> list[Rule]:
    a, f = f"bert.encoder.layer.{attn}", f"bert.encoder.layer.{ff}"
    rules = []
    for side, q, kv, v in (("text", "", "v_", ""), ("vision", "v_", "", "v_")):
        rules += [
            *linear(f"{ours}.{side}.attn.q", f"{a}.attention_self.{q}query"),
            *fused(
                f"{ours}.{side}.attn.kv", (f"{a}.attention_self.{kv}key", f"{a}.attention_self.{kv}value")
            ),
            *linear(f"{ours}.{side}.attn.out", f"{a}.attention_output.{v}dense"),
            *linear(f"{ours}.{side}.norm1", f"{a}.attention_output.{v}LayerNorm"),
            *linear(f"{ours}.{side}.ffn.fc1", f"{f}.intermediate.{v}dense"),
            *linear(f"{ours}.{side}.ffn.fc2", f"{f}.output.{v}dense"),
            *linear(f"{ours}.{side}.norm2", f"{f}.output.{v}LayerNorm"),
        ]
    return rules


def encoder_rules(c: ModelConfig, layout: Layout) -> list[Rule]:
    """``layout``: what ``config_from`` read (the config keeps no sublayer ids)."""
    steps = layout.steps
    e = "bert.embeddings"
    if isinstance(c, VLBertConfig):  # VOLTA's VLBertEmbeddings
        rules = [
            *hf_text_embeddings("embeddings.text", e),
            *linear("embeddings.region_proj", f"{e}.obj_downsample.1"),
            *linear("embeddings.visual_text_norm", f"{e}.visual_ln_text"),
            *linear("embeddings.visual_object_norm", f"{e}.visual_ln_object"),
            Rule("embeddings.image_token", (f"{e}.object_linguistic_embeddings.weight",), row=0),
            Rule("embeddings.masked_feature", (f"{e}.object_mask_visual_embedding.weight",), row=0),
            Rule("embeddings.end_token", (f"{e}.end_embedding.weight",), row=0),
        ]
        if c.visual_dim != c.dim:
            rules += [
                *linear("embeddings.visual_text_proj", f"{e}.visual_1x1_text"),
                *linear("embeddings.visual_object_proj", f"{e}.visual_1x1_object"),
            ]
    elif isinstance(c, UniterConfig):  # VOLTA's UniterEmbeddings
        rules = [
            *hf_text_embeddings("embeddings.text", e),
            *linear("embeddings.region.feat_proj", f"{e}.image_embeddings"),
            *linear("embeddings.region.feat_norm", f"{e}.image_layer_norm"),
            *linear("embeddings.region.loc_proj", f"{e}.image_location_embeddings"),
            *linear("embeddings.region.loc_norm", f"{e}.image_location_layer_norm"),
            *linear("embeddings.region.norm", f"{e}.v_LayerNorm"),
            Rule("embeddings.region_segment.weight", (f"{e}.image_token_type_embeddings.weight",)),
        ]
    elif isinstance(c, VisualBertConfig):
        rules = [
            *hf_text_embeddings("embeddings.text", e),
            Rule("embeddings.visual_segment.weight", (f"{e}.token_type_embeddings_visual.weight",)),
            Rule("embeddings.visual_position.weight", (f"{e}.position_embeddings_visual.weight",)),
            *linear("embeddings.visual_proj", f"{e}.projection"),
        ]
    if isinstance(c, (UniterConfig, VisualBertConfig, VLBertConfig)):
        for s in steps:
            rules += _stream_block(f"layers.{s.index}", s.attn, s.ff, "")
        return (
            rules
            + linear("text_pooler.dense", "bert.t_pooler.dense")
            + linear("vision_pooler.dense", "bert.v_pooler.dense")
        )
    if isinstance(c, LxmertConfig):
        return _lxmert_rules(steps)
    rules = hf_text_embeddings("embeddings", "bert.embeddings")
    rules += [
        *linear("region_embeddings.feat", "bert.v_embeddings.image_embeddings"),
        *linear("region_embeddings.location", "bert.v_embeddings.image_location_embeddings"),
        *linear("region_embeddings.norm", "bert.v_embeddings.LayerNorm"),
    ]
    for s in steps:
        if s.kind == "text":
            rules += _stream_block(f"text_layers.{s.index}", s.attn, s.ff, "")
        elif s.kind == "vision":
            rules += _stream_block(f"vision_layers.{s.index}", s.attn, s.ff, "v_")
        else:
            rules += _co_layer(f"co_layers.{s.index}", s.attn, s.ff)
    rules += linear("text_pooler.dense", "bert.t_pooler.dense")
    rules += linear("vision_pooler.dense", "bert.v_pooler.dense")
    return rules


def _lxmert_rules(steps: list[Step]) -> list[Rule]:
    """VOLTA's LxmertImageEmbeddings and sublayers onto mmbert's LXMERT (steps as ``_lxmert_config`` checked
    them: stream layers, then cross, text, vision per cross-modality layer)."""
    v = "bert.v_embeddings"
    rules = [
        *hf_text_embeddings("embeddings", "bert.embeddings"),
        *linear("region_embeddings.feat", f"{v}.image_embeddings"),
        *linear("region_embeddings.feat_norm", f"{v}.ImgLayerNorm"),
        *linear("region_embeddings.box", f"{v}.image_location_embeddings"),
        *linear("region_embeddings.box_norm", f"{v}.LocLayerNorm"),
    ]
    cross = -1
    for s in steps:
        if s.kind == "cross":
            cross = s.index
            a = f"bert.encoder.layer.{s.attn}"
            ours = f"cross_layers.{cross}.cross"
            rules += [
                *linear(f"{ours}.attn.q", f"{a}.attention_self.query"),
                *fused(f"{ours}.attn.kv", (f"{a}.attention_self.key", f"{a}.attention_self.value")),
                *linear(f"{ours}.attn.out", f"{a}.attention_output.dense"),
                *linear(f"{ours}.norm1", f"{a}.attention_output.LayerNorm"),
            ]
            continue
        assert s.ff is not None
        side = "" if s.kind == "text" else "v_"
        ours = f"{s.kind}_layers.{s.index}" if cross < 0 else f"cross_layers.{cross}.{s.kind}"
        rules += _stream_block(ours, s.attn, s.ff, side)
    rules += linear("text_pooler.dense", "bert.t_pooler.dense")
    rules += linear("vision_pooler.dense", "bert.v_pooler.dense")
    return rules


def head_rules(c: ViLBertConfig) -> list[Rule]:
    return [
        *hf_mlm_head("mlm", "cls.predictions"),
        *linear("pair.proj", "cls.bi_seq_relationship", flip_rows=True),  # index 0 = matches there
        *linear("region.transform.dense", "cls.imagePredictions.transform.dense"),
        *linear("region.transform.norm", "cls.imagePredictions.transform.LayerNorm"),
        *linear("region.decoders.class", "cls.imagePredictions.decoder_dict.0"),  # target 0: KL to 1601
    ]


def task_heads(c: ViLBertConfig, state: Mapping[str, Tensor]) -> dict[str, tuple[nn.Module, dict, set[str]]]:
    return {}


def notes(c: ModelConfig) -> list[str]:
    """What the load set that a user should know (VL-BERT): the fixed vision slot count, which makes the
    [END] slot, the text's visual feature and the shift the same in every batch, and VOLTA's text
    positions, which still depend on the batch's shortest text."""
    if not isinstance(c, VLBertConfig) or c.embeddings != "volta":
        return []
    notes = [
        f"volta_region_slots={c.volta_region_slots}: every image is padded to {c.volta_region_slots} vision "
        "slots (VOLTA's loaders: max_region_num + the whole image), so the last slot ([END], the text's visual "
        "feature) and the position shift do not depend on the batch; the checkpoint does not record it "
        f"({VOLTA_PRETRAINING_SLOTS} = pre-training's 36 boxes + 1; a model fine-tuned with another "
        "max_region_num needs volta_region_slots = that + 1)"
    ]
    if c.volta_position_shift:
        notes.append(
            "volta_position_shift=True: text positions reproduce VOLTA's, which depend on the batch: in a batch "
            f"of mixed text lengths, every row's positions from the shortest text on are shifted by "
            f"{c.volta_region_slots}, real tokens of longer texts included; config.replace("
            "volta_position_shift=False) gives mmbert's positions, which depend on no other row"
        )
    return notes


def ignored(key: str, layout: Layout) -> str | None:
    """The tied decoder copy and, of the ``v_*`` keys, only the shared-sublayer twins checked equal."""
    if key == "cls.predictions.decoder.weight":
        return "tied copy of the word embeddings"
    if key in layout.twins:
        return "shared sublayer: the same tensor as its text name (checked equal)"
    return None
