"""LXMERT structure: sizes of the reference, one cross-attention shared by both directions and fed the
pre-update states, heads with the reference shapes, attention maps, BERT initialisation, bad inputs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import transformers
from helpers import assert_input_refused, encode_with_maps, layer_run_order, make_inputs

import mmbert
from mmbert.models.lxmert import Lxmert, LxmertConfig
from mmbert.objectives import recipe_for


def lin(i: int, o: int) -> int:
    return i * o + o


def test_parameter_count_matches_the_reference():
    V, P, TY, D, FF, F = 30522, 512, 2, 768, 3072, 2048
    block = 4 * lin(D, D) + 2 * D + lin(D, FF) + lin(FF, D) + 2 * D
    cross = 4 * lin(D, D) + 2 * D  # the one shared visual_attention (query, key, value, output, LN)
    expected = (
        V * D
        + P * D
        + TY * D
        + 2 * D  # text embeddings
        + lin(F, D)
        + 2 * D
        + lin(4, D)
        + 2 * D  # visual feature encoder
        + 9 * block
        + 5 * block
        + 5 * (cross + 2 * block)
        + lin(D, D)  # pooler
    )
    with torch.device("meta"):
        ours = mmbert.build_model("lxmert_base")
        pt = mmbert.PretrainingModel(ours)
        ref = transformers.LxmertForPreTraining(transformers.LxmertConfig())
    assert ours.num_parameters() == expected == sum(p.numel() for p in ref.lxmert.parameters())
    heads = sum(p.numel() for p in pt.heads.parameters())
    ref_heads = sum(p.numel() for n, p in ref.named_parameters() if not n.startswith("lxmert."))
    assert heads == ref_heads  # (the tied MLM decoder is counted once, in the embeddings, in both)
    assert pt.heads.answer.fc1.out_features == 1536 and pt.heads.answer.fc2.out_features == 9500
    assert {k: d.out_features for k, d in pt.heads.region.decoders.items()} == {
        "class": 1600,
        "attr": 400,
        "feat": 2048,
    }


def test_one_cross_attention_serves_both_directions_from_pre_update_states():
    torch.manual_seed(0)
    c = mmbert.MODELS["lxmert_tiny"]()
    layer = Lxmert(c).cross_layers[0].eval()
    calls = []
    layer.cross.register_forward_hook(lambda m, args, out: calls.append(tuple(a.shape for a in args[:2])))
    text, vision = torch.randn(2, 5, c.dim), torch.randn(2, 4, c.dim)
    with torch.no_grad():
        new_text, new_vision, _ = layer(text, vision, None, None, False)
        calls_in_forward = list(calls)
        t, _ = layer.cross(text, vision)
        v, _ = layer.cross(vision, text)
        expect_text, _ = layer.text(t)
        expect_vision, _ = layer.vision(v)
    assert calls_in_forward == [((2, 5, c.dim), (2, 4, c.dim)), ((2, 4, c.dim), (2, 5, c.dim))]
    assert layer.cross.ffn is None
    torch.testing.assert_close(new_text, expect_text, atol=0, rtol=0)
    torch.testing.assert_close(new_vision, expect_vision, atol=0, rtol=0)


def test_encoders_run_language_then_relations_then_cross():
    model = mmbert.build_model("lxmert_tiny").eval()
    stacks = {"L": model.text_layers, "R": model.vision_layers, "X": model.cross_layers}
    assert layer_run_order(model, stacks) == ["L0", "L1", "R0", "X0", "X1"]


def test_pretraining_outputs_have_the_reference_shapes():
    model = mmbert.build_model("lxmert_tiny")
    pt = mmbert.PretrainingModel(model).eval()
    inputs = make_inputs(model.config, batch=2, text_len=7, regions=5)
    with torch.no_grad():
        out = pt(**inputs)
        gathered = pt(**inputs, mlm_positions=inputs["text_mask"])
    c = model.config
    assert out.mlm_logits.shape == (2, 7, c.vocab_size)
    torch.testing.assert_close(gathered.mlm_logits, out.mlm_logits[inputs["text_mask"]])
    assert out.pair_logits.shape == (2, 2)
    assert out.region_class_logits.shape == (2, 5, c.num_object_labels)
    assert out.region_attr_logits.shape == (2, 5, c.num_attr_labels)
    assert out.region_feat_pred.shape == (2, 5, c.region_feat_dim)
    assert out.answer_logits.shape == (2, c.num_qa_labels)
    assert out.encoded.pooled.shape == (2, c.dim)


def test_optional_heads_follow_the_config():
    c = mmbert.MODELS["lxmert_tiny"]().replace(num_qa_labels=0, num_attr_labels=0, predict_region_feats=False)
    heads = Lxmert(c).build_pretraining_heads()
    assert heads.answer is None and list(heads.region.decoders) == ["class"]
    c = c.replace(num_object_labels=0)
    assert Lxmert(c).build_pretraining_heads().region is None


def test_attention_maps_have_named_shapes_and_are_off_by_default():
    model = mmbert.build_model("lxmert_tiny").eval()
    c = model.config
    inputs = make_inputs(c, batch=2, text_len=7, regions=5)
    enc, plain = encode_with_maps(model, inputs)
    real = inputs["region_mask"]  # real regions: the fast path skips padding (zeros there)
    torch.testing.assert_close(enc.vision[real], plain.vision[real], atol=1e-5, rtol=0)
    maps = enc.attentions
    x = c.num_cross_layers
    assert [len(maps[k]) for k in ("text_text", "vision_vision", "text_vision", "vision_text")] == [
        c.num_layers + x,
        c.num_vision_layers + x,
        x,
        x,
    ]
    h, t, r = c.num_heads, 7, 5
    assert all(m.shape == (2, h, t, t) for m in maps["text_text"])
    assert all(m.shape == (2, h, r, r) for m in maps["vision_vision"])
    assert all(m.shape == (2, h, t, r) for m in maps["text_vision"])
    assert all(m.shape == (2, h, r, t) for m in maps["vision_text"])
    # padded text tokens (last 3 of example 1) receive no attention from the regions
    assert float(maps["vision_text"][-1][1, :, :, -3:].abs().max()) == 0.0


def test_language_encoder_initialised_from_bert(tmp_path):
    torch.manual_seed(0)
    bert = mmbert.build_model("bert_tiny")
    bert.save(tmp_path)
    model = mmbert.build_model("lxmert_tiny", init_text_from=tmp_path)
    for i in range(model.config.num_layers):
        assert torch.equal(model.text_layers[i].ffn.fc1.weight, bert.layers[i].ffn.fc1.weight)
    assert torch.equal(model.pooler.dense.weight, bert.pooler.dense.weight)
    new = model.init_report.new
    assert any(k.startswith("cross_layers.") for k in new) and any(
        k.startswith("vision_layers.") for k in new
    )
    assert "region_embeddings.feat" in new
    assert not any(k.startswith(("text_layers.", "embeddings.", "pooler.")) for k in new)
    with pytest.raises(ValueError, match="language encoder needs 3"):
        mmbert.build_model("lxmert_tiny", num_layers=3, init_text_from=tmp_path)


BAD_INPUTS = [
    (
        "region_feats",
        lambda x: torch.cat([x, x[..., :1]], -1),
        "feature width 17 but the model's region_feat_dim is 16",
    ),
    (
        "region_feats",
        lambda x: x.index_put((torch.tensor(1), torch.tensor(2)), torch.tensor(float("inf"))),
        r"region_feats\[1, 2\] contains NaN or inf",
    ),
    ("region_boxes", lambda x: x - 0.7, r"region_boxes\[0, 0\].*outside \[0, 1\]"),
    ("region_boxes", lambda x: x[..., [0, 3, 2, 1]], r"region_boxes\[0, 0\].*y2 < y1"),
    ("region_boxes", lambda x: x[:, :-1], r"region_boxes has shape \(2, 4, 4\), expected \(2, 5, 4\)"),
    ("region_mask", lambda x: x[:1], r"region_mask has shape \(1, 5\)"),
    ("region_feats", lambda x: x[:1], "region_feats has batch size 1 but text_ids has 2"),
]


@pytest.mark.parametrize("name,corrupt,message", BAD_INPUTS, ids=[m[:40] for _, _, m in BAD_INPUTS])
def test_bad_inputs_fail_clearly(name, corrupt, message):
    assert_input_refused("lxmert_tiny", name, corrupt, message)


def test_nan_in_padded_regions_is_inert():
    """Padding may hold anything, NaN included: only real regions are checked, and only they count."""
    model = mmbert.build_model("lxmert_tiny").eval()
    inputs = make_inputs(model.config)
    dirty = dict(
        inputs, region_feats=inputs["region_feats"].clone(), region_boxes=inputs["region_boxes"].clone()
    )
    dirty["region_feats"][1, -1] = float("nan")
    dirty["region_boxes"][1, -2] = float("nan")
    with torch.no_grad():
        a, b = model(**inputs), model(**dirty)
    real = inputs["region_mask"]
    torch.testing.assert_close(b.text, a.text, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b.vision[real], a.vision[real], atol=1e-5, rtol=1e-5)
    assert bool(torch.isfinite(b.vision).all())


def test_regions_are_required():
    model = mmbert.build_model("lxmert_tiny")
    with pytest.raises(ValueError, match="LXMERT needs region_feats"):
        model(torch.ones(1, 3, dtype=torch.long))


def test_config_refuses_unknown_and_negative_fields():
    with pytest.raises(ValueError, match="num_cross_layers must be >= 0"):
        LxmertConfig(num_cross_layers=-1)
    with pytest.raises(ValueError, match="unknown keys"):
        LxmertConfig.from_dict({"x_layers": 5})


def volta_tiny() -> LxmertConfig:
    """``ctrl_lxmert``'s options (VOLTA's controlled LXMERT) at the tiny sizes."""
    base = mmbert.MODELS["ctrl_lxmert"]()
    tiny = mmbert.MODELS["lxmert_tiny"]()
    return tiny.replace(
        num_qa_labels=0,
        num_object_labels=13,
        num_attr_labels=0,
        predict_region_feats=False,
        global_region=base.global_region,
        location_dims=base.location_dims,
        pooling=base.pooling,
        pooled_dim=24,
    )


def test_voltas_options_whole_image_region_5d_locations_and_fused_pooler():
    torch.manual_seed(0)
    model = Lxmert(volta_tiny()).eval()
    inputs = make_inputs(model.config)
    with torch.no_grad():
        enc = model(**inputs)
        real = inputs["region_mask"][..., None]
        mean = (inputs["region_feats"] * real).sum(1) / real.sum(1)
        explicit = model(**inputs, global_feats=mean)
        other = model(**inputs, global_feats=mean + 1.0)
    r = inputs["region_feats"].shape[1]
    assert enc.vision.shape == (2, r + 1, model.config.dim)
    mask = model.vision_mask(inputs)
    assert not mask[:, 0].any() and torch.equal(mask[:, 1:], inputs["region_mask"])
    torch.testing.assert_close(explicit.vision, enc.vision)  # default whole-image feature: the real regions' mean
    assert not torch.allclose(other.vision[:, 0], enc.vision[:, 0])
    assert model.region_embeddings.box.in_features == 5  # x1, y1, x2, y2, area
    fused = F.relu(model.text_pooler.dense(enc.text[:, 0])) * F.relu(model.vision_pooler.dense(enc.vision[:, 0]))
    torch.testing.assert_close(enc.pooled, fused)
    assert enc.pooled.shape == (2, 24) and not hasattr(model, "pooler")


def test_voltas_heads_and_recipe():
    """VOLTA's heads: matching on the fused vector through dropout 0.1, one 1601-style class decoder for every
    vision position (the whole image included), no answer head; VOLTA's recipe (MLM, KL, matching)."""
    pt = mmbert.PretrainingModel(Lxmert(volta_tiny())).eval()
    inputs = make_inputs(pt.encoder.config)
    with torch.no_grad():
        out = pt(**inputs)
    assert out.pair_logits.shape == (2, 2) and pt.heads.pair.dropout == 0.1
    assert out.region_class_logits.shape == (2, 6, 13)
    assert out.region_attr_logits is None and out.region_feat_pred is None and pt.heads.answer is None
    assert recipe_for(pt.encoder.config).objectives == ("mlm", "mrc_kl", "itm")
    assert recipe_for(mmbert.MODELS["lxmert_tiny"]()).objectives == recipe_for("lxmert").objectives


def test_ctrl_lxmert_parameter_count_is_voltas():
    """ctrl_lxmert.json: BERT-base text embeddings, LxmertImageEmbeddings with a 5-d location, 9 + 5 stream
    layers, 5 x (one shared cross-attention + two stream layers), two 768 -> 1024 poolers."""
    V, P, TY, D, FF, F_, PO = 30522, 512, 2, 768, 3072, 2048, 1024
    block = 4 * lin(D, D) + 2 * D + lin(D, FF) + lin(FF, D) + 2 * D
    cross = 4 * lin(D, D) + 2 * D
    expected = (V + P + TY) * D + 2 * D + lin(F_, D) + 2 * D + lin(5, D) + 2 * D
    expected += 14 * block + 5 * (cross + 2 * block) + 2 * lin(D, PO)
    with torch.device("meta"):
        assert mmbert.build_model("ctrl_lxmert").num_parameters() == expected


def test_voltas_pooler_needs_the_whole_image_region():
    with pytest.raises(ValueError, match="global_region='first'"):
        LxmertConfig(pooling="volta")
    with pytest.raises(ValueError, match="location_dims must be 4 or 5"):
        LxmertConfig(location_dims=7)
