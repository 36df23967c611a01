"""Every registered model, tested the same way: shapes, gradients, determinism, padding invariance,
save/load. A new model in MODELS is covered here for free (its ``*_tiny`` preset)."""

from __future__ import annotations

import pytest
import torch
from helpers import input_kinds, make_inputs, make_kind_inputs

import mmbert
from mmbert.models import MODELS, model_class

TINY = [name for name in MODELS if name.endswith("_tiny")]


def test_every_family_has_a_tiny_preset():
    # ctrl_<model>: VOLTA's controlled <model> (no size suffix)
    families = {n.removeprefix("ctrl_") if n.startswith("ctrl_") else n.rsplit("_", 1)[0] for n in MODELS}
    assert families <= {name.rsplit("_", 1)[0] for name in TINY}


def test_list_models_matches_registry():
    assert mmbert.list_models() == list(MODELS)


# (preset, input kind): every model takes pairs; UNIMO also text-only and image-only inputs.
KINDS = [(name, kind) for name in TINY for kind in input_kinds(model_class(MODELS[name]()))]


@pytest.mark.parametrize("name,kind", KINDS)
def test_output_shapes(name, kind):
    model = mmbert.build_model(name).eval()
    inputs = make_kind_inputs(model.config, kind)
    enc = model(**inputs)
    b = 2
    if inputs["text_ids"] is not None:
        assert enc.text.shape == (b, inputs["text_ids"].shape[1], model.config.dim)
    else:
        assert enc.text is None
    assert enc.pooled.shape[0] == b and enc.pooled.dim() == 2
    if "region_feats" in inputs:
        assert enc.vision is not None and enc.vision.shape[0] == b and enc.vision.dim() == 3
        assert enc.vision.shape[1] >= inputs["region_feats"].shape[1]
    else:
        assert enc.vision is None


# Gates a paper starts closed, opened so that every parameter is on the gradient path of the first step
# (VL-BERT's visual LayerNorm gains start at 0, as the authors': the gains learn, the rest waits for them).
OPEN_GATES = {"vl_bert_tiny": {"visual_scale_init": 1.0}}


@pytest.mark.parametrize("name", TINY)
def test_gradients_reach_every_parameter(name):
    torch.manual_seed(0)
    model = mmbert.build_model(name, **OPEN_GATES.get(name, {})).train()
    pt = mmbert.PretrainingModel(model)
    inputs = make_inputs(model.config, batch=3)
    if getattr(
        model, "masked_region_input", False
    ):  # masked-region embeddings learn only from masked regions
        inputs["region_masked"] = torch.zeros_like(inputs["region_mask"])
        inputs["region_masked"][:, 0] = True
    out = pt(**inputs)
    loss = sum(
        v.float().pow(2).mean()
        for v in (
            out.mlm_logits,
            out.pair_logits,
            out.region_class_logits,
            out.region_attr_logits,
            out.region_feat_pred,
            out.answer_logits,
            out.encoded.vision,
            out.encoded.pooled,  # models without a match head (VL-BERT) still pool
            out.encoded.pooled_vision,  # UNIMO's [IMG] pooler
        )
        if v is not None
    )
    if getattr(model, "text_only_input", False):  # its text-only embedding learns from text-only examples
        loss = loss + pt(inputs["text_ids"], text_mask=inputs.get("text_mask")).mlm_logits.pow(2).mean()
    loss.backward()
    dead = [n for n, p in pt.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert not dead, f"no gradient reaches {dead}"


@pytest.mark.parametrize("name,kind", KINDS)
def test_eval_is_deterministic(name, kind):
    model = mmbert.build_model(name).eval()
    inputs = make_kind_inputs(model.config, kind)
    with torch.no_grad():
        a, b = model(**inputs), model(**inputs)
    for part in ("text", "vision", "pooled"):
        x, y = getattr(a, part), getattr(b, part)
        assert (x is None and y is None) or torch.equal(x, y)


@pytest.mark.parametrize("name,kind", KINDS)
def test_padding_invariance(name, kind):
    """Appending padded tokens (and padded regions) changes nothing at the real positions."""
    model = mmbert.build_model(name).eval()
    inputs = make_kind_inputs(model.config, kind, batch=2)
    padded = dict(inputs)
    extra = 4
    if inputs["text_ids"] is not None:
        padded["text_ids"] = torch.cat(
            [inputs["text_ids"], torch.full((2, extra), model.config.pad_token_id)], 1
        )
        padded["text_mask"] = torch.cat([inputs["text_mask"], torch.zeros(2, extra, dtype=torch.bool)], 1)
        padded["segment_ids"] = torch.cat([inputs["segment_ids"], torch.zeros(2, extra, dtype=torch.long)], 1)
    if "region_feats" in inputs:
        f = inputs["region_feats"].shape[-1]
        padded["region_feats"] = torch.cat([inputs["region_feats"], torch.randn(2, 3, f)], 1)
        padded["region_boxes"] = torch.cat([inputs["region_boxes"], torch.rand(2, 3, 4).sort(-1).values], 1)
        padded["region_mask"] = torch.cat([inputs["region_mask"], torch.zeros(2, 3, dtype=torch.bool)], 1)
    with torch.no_grad():
        a, b = model(**inputs), model(**padded)
    if a.text is not None:
        m = inputs["text_mask"]
        t = inputs["text_ids"].shape[1]
        torch.testing.assert_close(b.text[:, :t][m], a.text[m], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b.pooled, a.pooled, atol=1e-5, rtol=1e-5)
    if a.vision is not None:
        r = a.vision.shape[1]
        real = model.vision_mask(inputs) if hasattr(model, "vision_mask") else None
        va, vb = a.vision, b.vision[:, :r]
        if real is not None:
            va, vb = va[real], vb[real]
        torch.testing.assert_close(vb, va, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", TINY)
def test_save_and_load_roundtrip(name, tmp_path):
    model = mmbert.build_model(name).eval()
    model.save(tmp_path / "m")
    loaded = mmbert.load_model(tmp_path / "m")
    inputs = make_inputs(model.config)
    with torch.no_grad():
        assert torch.equal(model(**inputs).text, loaded(**inputs).text)
    pt = mmbert.PretrainingModel(model).eval()
    pt.save(tmp_path / "p")
    pt2 = mmbert.load_pretraining(tmp_path / "p")
    with torch.no_grad():
        o1, o2 = pt(**inputs), pt2(**inputs)
    assert torch.equal(o1.mlm_logits, o2.mlm_logits)


@pytest.mark.parametrize("name", TINY)
def test_every_vision_language_model_declares_its_global_region(name):
    """``global_region`` is an explicit, validated config field of every V&L model (BERT has no regions)."""
    config = MODELS[name]()
    if not hasattr(config, "region_feat_dim"):
        assert not hasattr(config, "global_region")
        return
    assert config.global_region in ("first", "last", "none")
    with pytest.raises(ValueError, match="global_region"):
        config.replace(global_region="middle")


@pytest.mark.parametrize(
    ("name", "allowed"), [("vilbert_tiny", ("first",)), ("lxmert_tiny", ("none", "first"))]
)
def test_dual_stream_models_refuse_another_global_region(name, allowed):
    """ViLBERT's vision pooler needs the whole-image region first; LXMERT has none, or VOLTA's first."""
    assert MODELS[name]().global_region == allowed[0]
    for where in allowed[1:]:
        assert MODELS[name]().replace(global_region=where).global_region == where
    for other in {"first", "last", "none"} - set(allowed):
        with pytest.raises(ValueError, match="global_region must be one of"):
            MODELS[name]().replace(global_region=other)


def test_models_build_model_leaves_checkpoints_to_convert(tmp_path):
    from mmbert.models import build_model

    with pytest.raises(TypeError, match="mmbert.build_model"):
        build_model("bert_tiny", init_text_from=tmp_path)
