"""ViLBERT pinned to the reference (vilbert-multi-task vilbert/vilbert.py): parameter count, the order
in which the streams and co-attention layers run, co-attention from pre-update states, padding
invariance, attention maps, BERT initialisation and clear errors for bad region inputs."""

from __future__ import annotations

import pytest
import torch
from helpers import assert_input_refused, encode_with_maps, layer_run_order, make_inputs

import mmbert
from mmbert.models.vilbert import ViLBert, ViLBertConfig, interleave, vilbert_tiny


def lin(i: int, o: int) -> int:
    return i * o + o


def reference_parameter_count(with_heads: bool = False) -> tuple[int, int]:
    """(total, dead) parameters of the reference ``BertModel`` (+ ``BertPreTrainingHeads``) built from
    config/bert_base_6layer_6conect.json. ``dead``: ``BertBiOutput.q_dense1/q_dense2``, created but
    never used in the reference's forward pass (mmbert omits them)."""
    V, P, TY, D, FF, L = 30522, 512, 2, 768, 3072, 12
    F, DV, FFV, LV = 2048, 1024, 1024, 6
    BI, CO = 1024, 6
    ln = 2
    embeddings = V * D + P * D + TY * D + ln * D
    image_embeddings = lin(F, DV) + lin(5, DV) + ln * DV
    text_layer = 4 * lin(D, D) + ln * D + lin(D, FF) + lin(FF, D) + ln * D
    vision_layer = 4 * lin(DV, DV) + ln * DV + lin(DV, FFV) + lin(FFV, DV) + ln * DV
    bi_attention = 3 * lin(DV, BI) + 3 * lin(D, BI)  # query1/key1/value1 (vision), query2/key2/value2 (text)
    dead = lin(BI, DV) + lin(BI, D)  # q_dense1, q_dense2
    bi_output = lin(BI, DV) + ln * DV + lin(BI, D) + ln * D + dead
    connection = (
        bi_attention + bi_output + lin(DV, FFV) + lin(FFV, DV) + ln * DV + lin(D, FF) + lin(FF, D) + ln * D
    )
    poolers = lin(D, BI) + lin(DV, BI)
    total = embeddings + image_embeddings + L * text_layer + LV * vision_layer + CO * connection + poolers
    if with_heads:
        # predictions (transform + bias; decoder tied), bi_seq_relationship, imagePredictions (1601)
        total += lin(D, D) + ln * D + V + lin(BI, 2) + lin(DV, DV) + ln * DV + lin(DV, 1601)
    return total, CO * dead


def test_parameter_count_matches_the_reference():
    with torch.device("meta"):
        model = mmbert.build_model("vilbert_base")
        pt = mmbert.PretrainingModel(model)
    total, dead = reference_parameter_count()
    assert model.num_parameters() == total - dead == 235_705_856
    total, dead = reference_parameter_count(with_heads=True)
    assert sum(p.numel() for p in pt.parameters()) == total - dead


def steps(text: str) -> list[tuple[str, int]]:
    kinds = {"T": "text", "V": "vision", "C": "co"}
    return [(kinds[s[0]], int(s[1:])) for s in text.split()]


BASE_ORDER = "T0 T1 T2 T3 T4 T5 C0 T6 V0 C1 T7 V1 C2 T8 V2 C3 T9 V3 C4 T10 V4 C5 V5 T11"
TWO_LAYER_ORDER = "T0 T1 T2 T3 T4 T5 T6 T7 T8 T9 C0 T10 V0 C1 V1 T11"


def test_layer_plans_follow_the_reference():
    base, two = mmbert.MODELS["vilbert_base"](), mmbert.MODELS["vilbert_2layer"]()
    assert interleave(base.num_layers, base.num_vision_layers, base.text_co_ids, base.vision_co_ids) == steps(
        BASE_ORDER
    )
    assert interleave(two.num_layers, two.num_vision_layers, two.text_co_ids, two.vision_co_ids) == steps(
        TWO_LAYER_ORDER
    )


def base_shaped_tiny() -> ViLBertConfig:
    """vilbert_base's layer counts and co-attention placement at tiny widths."""
    return vilbert_tiny().replace(
        num_layers=12, num_vision_layers=6, vision_co_ids=(0, 1, 2, 3, 4, 5), text_co_ids=(6, 7, 8, 9, 10, 11)
    )


def test_layers_run_in_the_reference_order():
    model = ViLBert(base_shaped_tiny()).eval()
    stacks = {"T": model.text_layers, "V": model.vision_layers, "C": model.co_layers}
    assert " ".join(layer_run_order(model, stacks)) == BASE_ORDER
    assert [line.split(":")[0] for line in model.layer_plan()[2:-1]] == [
        {"T": "text_layers", "V": "vision_layers", "C": "co_layers"}[s[0]] + "." + s[1:]
        for s in BASE_ORDER.split()
    ]


def test_co_attention_reads_the_states_before_the_layer():
    torch.manual_seed(0)
    c = vilbert_tiny()
    layer = ViLBert(c).co_layers[0].eval()
    text, vision = torch.randn(2, 5, c.dim), torch.randn(2, 4, c.vision_dim)
    with torch.no_grad():
        new_text, new_vision, _, _ = layer(text, vision, None, None, False)
        expect_text, _ = layer.text(text, vision)
        expect_vision, _ = layer.vision(vision, text)
    torch.testing.assert_close(new_text, expect_text, atol=0, rtol=0)
    torch.testing.assert_close(new_vision, expect_vision, atol=0, rtol=0)
    assert layer.text.attn.q.out_features == c.co_dim and layer.vision.attn.kv.in_features == c.dim
    assert (
        layer.text.ffn.fc1.out_features == c.ffn_dim and layer.vision.ffn.fc1.out_features == c.vision_ffn_dim
    )


def test_padding_invariance_with_the_base_plan():
    model = ViLBert(base_shaped_tiny()).eval()
    inputs = make_inputs(model.config, batch=2, text_len=6, regions=4)
    padded = dict(inputs)
    padded["text_ids"] = torch.cat([inputs["text_ids"], torch.zeros(2, 3, dtype=torch.long)], 1)
    padded["text_mask"] = torch.cat([inputs["text_mask"], torch.zeros(2, 3, dtype=torch.bool)], 1)
    padded["segment_ids"] = torch.cat([inputs["segment_ids"], torch.zeros(2, 3, dtype=torch.long)], 1)
    padded["region_feats"] = torch.cat([inputs["region_feats"], 50 * torch.randn(2, 2, 16)], 1)
    padded["region_boxes"] = torch.cat([inputs["region_boxes"], torch.rand(2, 2, 4).sort(-1).values], 1)
    padded["region_mask"] = torch.cat([inputs["region_mask"], torch.zeros(2, 2, dtype=torch.bool)], 1)
    with torch.no_grad():
        a, b = model(**inputs), model(**padded)
    m = inputs["text_mask"]
    torch.testing.assert_close(b.text[:, :6][m], a.text[m], atol=1e-5, rtol=1e-5)
    real = model.vision_mask(inputs)
    torch.testing.assert_close(b.vision[:, :5][real], a.vision[real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b.vision[:, 0], a.vision[:, 0], atol=1e-5, rtol=1e-5)  # the whole-image region
    torch.testing.assert_close(b.pooled, a.pooled, atol=1e-5, rtol=1e-5)


def test_global_region_is_first_and_pooled_is_the_product():
    model = mmbert.build_model("vilbert_tiny").eval()
    inputs = make_inputs(model.config)
    real = model.vision_mask(inputs)
    assert real.shape == (2, 6) and not bool(real[:, 0].any())  # the whole-image region is no input region
    assert torch.equal(real[:, 1:], inputs["region_mask"])
    with torch.no_grad():
        enc = model(**inputs)
        expected = model.text_pooler(enc.text) * model.vision_pooler(enc.vision)
        out = mmbert.PretrainingModel(model).eval()(**inputs)
    torch.testing.assert_close(enc.pooled, expected, atol=0, rtol=0)
    assert enc.pooled.shape == (2, model.config.pooled_dim)
    assert out.region_class_logits.shape == (2, 6, model.config.num_region_classes)
    assert out.pair_logits.shape == (2, 2)


def test_attention_maps_have_named_shapes_and_are_off_by_default():
    model = ViLBert(base_shaped_tiny()).eval()
    c = model.config
    inputs = make_inputs(c, batch=2, text_len=7, regions=5)
    enc, _ = encode_with_maps(model, inputs)
    maps = enc.attentions
    b, t, r = 2, 7, 6  # r includes the global region
    assert [len(maps[k]) for k in ("text_text", "vision_vision", "text_vision", "vision_text")] == [
        12,
        6,
        6,
        6,
    ]
    assert all(m.shape == (b, c.num_heads, t, t) for m in maps["text_text"])
    assert all(m.shape == (b, c.vision_heads, r, r) for m in maps["vision_vision"])
    assert all(m.shape == (b, c.co_heads, t, r) for m in maps["text_vision"])
    assert all(m.shape == (b, c.co_heads, r, t) for m in maps["vision_text"])
    # probabilities over real keys only: padded regions of example 1 get no attention
    torch.testing.assert_close(maps["text_vision"][0].sum(-1), torch.ones(b, c.co_heads, t))
    assert float(maps["text_vision"][0][1, :, :, -2:].abs().max()) == 0.0


def test_text_stream_initialised_from_bert(tmp_path):
    torch.manual_seed(0)
    bert = mmbert.build_model("bert_tiny")
    bert.save(tmp_path)
    model = mmbert.build_model("vilbert_tiny", init_text_from=tmp_path)
    for i in range(2):
        assert torch.equal(model.text_layers[i].attn.qkv.weight, bert.layers[i].attn.qkv.weight)
    assert torch.equal(model.embeddings.word.weight, bert.embeddings.word.weight)
    new = model.init_report.new
    assert any(k.startswith("co_layers.") for k in new) and any(k.startswith("vision_layers.") for k in new)
    assert "text_pooler.dense" in new and "region_embeddings.feat" in new
    assert not any(k.startswith(("text_layers.", "embeddings.")) for k in new)


BAD_INPUTS = [
    ("region_feats", lambda x: x[..., :-1], "feature width 15"),
    (
        "region_feats",
        lambda x: x.index_put(
            (torch.tensor(0), torch.tensor(3), torch.tensor(2)), torch.tensor(float("nan"))
        ),
        r"region_feats\[0, 3\] contains NaN",
    ),
    ("region_boxes", lambda x: x * 640, r"region_boxes\[0, 0\].*outside \[0, 1\].*pixel"),
    ("region_boxes", lambda x: x[..., [2, 3, 0, 1]], r"region_boxes\[0, 0\].*x2 < x1"),
    ("region_mask", lambda x: x[:, :-1], r"region_mask has shape \(2, 4\)"),
    ("region_mask", lambda x: x.long(), "region_mask must be boolean"),
    ("text_mask", lambda x: x[:, :-1], "text_mask has shape"),
]


@pytest.mark.parametrize("name,corrupt,message", BAD_INPUTS, ids=[m for _, _, m in BAD_INPUTS])
def test_bad_inputs_fail_clearly(name, corrupt, message):
    assert_input_refused("vilbert_tiny", name, corrupt, message)


def test_regions_are_required():
    model = mmbert.build_model("vilbert_tiny")
    inputs = make_inputs(model.config)
    with pytest.raises(ValueError, match="ViLBERT needs region_feats"):
        model(inputs["text_ids"], inputs["text_mask"])


def test_config_rejects_mismatched_co_attention_ids():
    with pytest.raises(ValueError, match="one entry per co-attention layer"):
        ViLBertConfig(vision_co_ids=(0, 1), text_co_ids=(6,))
    with pytest.raises(ValueError, match="within 0..12"):
        ViLBertConfig(vision_co_ids=(0,), text_co_ids=(13,))


def test_nan_in_padded_regions_is_inert():
    """The global region averages the real regions only, and padding (even NaN) reaches nothing."""
    model = mmbert.build_model("vilbert_tiny").eval()
    inputs = make_inputs(model.config)
    dirty = dict(inputs, region_feats=inputs["region_feats"].clone())
    dirty["region_feats"][1, -1] = float("nan")
    with torch.no_grad():
        a, b = model(**inputs), model(**dirty)
    real = model.vision_mask(inputs)
    torch.testing.assert_close(b.pooled, a.pooled, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b.vision[real], a.vision[real], atol=1e-5, rtol=1e-5)
    assert bool(torch.isfinite(b.vision).all())
