"""What the four single-stream models share: bad-input errors, attention maps split by direction,
region-order equivariance, the whole-image region, masked regions, BERT initialisation, inspect."""

from __future__ import annotations

import pytest
import torch
from helpers import encode_with_maps, make_inputs

import mmbert
from mmbert.cli import main
from mmbert.models.base import TINY_REGION_FEAT_DIM, TINY_SIZES

NAMES = ["visualbert_tiny", "unicoder_vl_tiny", "vl_bert_tiny", "uniter_tiny"]
MASKABLE = ["unicoder_vl_tiny", "vl_bert_tiny", "uniter_tiny"]


@pytest.fixture(params=NAMES)
def model_and_inputs(request):
    model = mmbert.build_model(request.param).eval()
    return model, make_inputs(model.config, batch=2, text_len=7, regions=5)


def test_feature_width_names_both_sizes(model_and_inputs):
    model, x = model_and_inputs
    bad = dict(x, region_feats=torch.randn(2, 5, 15))
    with pytest.raises(ValueError, match="feature width 15 but the model's region_feat_dim is 16"):
        model(**bad)


def test_boxes_outside_unit_square_name_example_and_region(model_and_inputs):
    model, x = model_and_inputs
    boxes = x["region_boxes"].clone()
    boxes[1, 2] = torch.tensor([0.1, 0.1, 1.3, 0.5])
    with pytest.raises(ValueError, match=r"region_boxes\[1, 2\] = .* is outside \[0, 1\]$"):
        model(**dict(x, region_boxes=boxes))
    pixels = x["region_boxes"] * 600
    with pytest.raises(ValueError, match=r"region_boxes\[0, 0\].*pixel boxes: normalise them"):
        model(**dict(x, region_boxes=pixels))
    flipped = x["region_boxes"].clone()
    flipped[0, 3] = torch.tensor([0.6, 0.1, 0.2, 0.5])
    with pytest.raises(ValueError, match=r"region_boxes\[0, 3\] .* has x2 < x1"):
        model(**dict(x, region_boxes=flipped))
    # a padded region's box is never looked at
    padded = x["region_boxes"].clone()
    padded[1, 4] = torch.tensor([5.0, 5.0, 1.0, 1.0])
    model(**dict(x, region_boxes=padded))


def test_mask_shapes_and_types(model_and_inputs):
    model, x = model_and_inputs
    with pytest.raises(ValueError, match=r"region_mask has shape \(2, 4\), expected \(2, 5\)"):
        model(**dict(x, region_mask=x["region_mask"][:, :4]))
    with pytest.raises(TypeError, match="region_mask must be boolean"):
        model(**dict(x, region_mask=x["region_mask"].long()))
    with pytest.raises(ValueError, match=r"region_boxes has shape \(2, 4, 4\), expected \(2, 5, 4\)"):
        model(**dict(x, region_boxes=x["region_boxes"][:, :4]))
    with pytest.raises(ValueError, match="region_feats has batch size 1 but text_ids has 2"):
        model(
            **dict(
                x,
                region_feats=x["region_feats"][:1],
                region_boxes=x["region_boxes"][:1],
                region_mask=x["region_mask"][:1],
            )
        )
    with pytest.raises(ValueError, match=r"text_mask has shape \(2, 6\)"):
        model(**dict(x, text_mask=x["text_mask"][:, :6]))
    with pytest.raises(ValueError, match=r"region_feats must be \(batch, regions, features\)"):
        model(**dict(x, region_feats=x["region_feats"][0]))
    if getattr(model, "text_only_input", False):  # VL-BERT: a text-only example (its general-corpus stream)
        assert model(x["text_ids"], x["text_mask"]).vision.shape[1] == 1  # [END] only
    else:
        with pytest.raises(ValueError, match="needs region_feats"):
            model(x["text_ids"], x["text_mask"])
    with pytest.raises(TypeError, match="unexpected inputs"):
        model(**x, region_colour=x["region_mask"])


def test_nan_and_inf_features_are_located(model_and_inputs):
    model, x = model_and_inputs
    feats = x["region_feats"].clone()
    feats[1, 0, 3] = float("nan")
    with pytest.raises(ValueError, match=r"region_feats\[1, 0\] contains NaN or inf"):
        model(**dict(x, region_feats=feats))
    feats = x["region_feats"].clone()
    feats[0, 4, 0] = float("inf")
    with pytest.raises(ValueError, match=r"region_feats\[0, 4\] contains NaN or inf"):
        model(**dict(x, region_feats=feats))
    feats = x["region_feats"].clone()
    feats[1, 4] = float("nan")  # a padded region
    assert torch.isfinite(model(**dict(x, region_feats=feats)).text).all()


def test_attention_maps_are_split_by_direction(model_and_inputs):
    model, x = model_and_inputs
    enc, plain = encode_with_maps(model, x, atol=1e-5, rtol=1e-5)
    b, t = x["text_ids"].shape
    v = enc.vision.shape[1]
    h = model.config.num_heads
    shapes = {
        "text_text": (b, h, t, t),
        "text_vision": (b, h, t, v),
        "vision_text": (b, h, v, t),
        "vision_vision": (b, h, v, v),
    }
    for key, shape in shapes.items():
        assert len(enc.attentions[key]) == model.config.num_layers
        assert enc.attentions[key][0].shape == shape, key
    layer = 1
    rows = enc.attentions["text_text"][layer].sum(-1) + enc.attentions["text_vision"][layer].sum(-1)
    torch.testing.assert_close(rows, torch.ones_like(rows))
    # no attention goes to padded tokens or padded regions
    assert enc.attentions["text_text"][layer][1, :, :, ~x["text_mask"][1]].abs().max() == 0
    if model.config.global_region == "none":
        assert enc.attentions["vision_vision"][layer][1, :, :, ~x["region_mask"][1]].abs().max() == 0


@pytest.mark.parametrize("name", NAMES)
def test_region_order_is_only_a_permutation(name):
    """No region carries an order: permuting the regions permutes the vision outputs and leaves text as is."""
    model = mmbert.build_model(name, global_region="none").eval()
    x = make_inputs(model.config, batch=1, regions=5)
    perm = torch.tensor([3, 0, 4, 1, 2])
    y = dict(
        x,
        region_feats=x["region_feats"][:, perm],
        region_boxes=x["region_boxes"][:, perm],
        region_mask=x["region_mask"][:, perm],
    )
    with torch.no_grad():
        a, b = model(**x), model(**y)
    torch.testing.assert_close(b.text, a.text, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b.vision[:, :5], a.vision[:, perm], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("where", ["first", "last"])
@pytest.mark.parametrize("name", NAMES)
def test_whole_image_region_placement_and_padding(name, where):
    model = mmbert.build_model(name, global_region=where).eval()
    x = make_inputs(model.config, batch=2, regions=5)
    padded = dict(
        x,
        region_feats=torch.cat([x["region_feats"], torch.randn(2, 2, 16)], 1),
        region_boxes=torch.cat([x["region_boxes"], torch.rand(2, 2, 4)], 1),
        region_mask=torch.cat([x["region_mask"], torch.zeros(2, 2, dtype=torch.bool)], 1),
    )
    with torch.no_grad():
        a, b = model(**x), model(**padded)
    real_a, real_b = model.vision_mask(x), model.vision_mask(padded)
    assert a.vision.shape[1] == real_a.shape[1] == 6 + model.num_trailing_elements
    assert int(real_a.sum()) == int(x["region_mask"].sum())
    assert not real_a[:, 0 if where == "first" else 5].any()
    torch.testing.assert_close(b.vision[real_b], a.vision[real_a], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b.pooled, a.pooled, atol=1e-5, rtol=1e-5)
    # the whole-image element itself is padding-invariant too
    g = 0 if where == "first" else 5
    gb = 0 if where == "first" else 7
    torch.testing.assert_close(b.vision[:, gb], a.vision[:, g], atol=1e-5, rtol=1e-5)


def test_unknown_global_region_is_refused():
    with pytest.raises(ValueError, match="global_region must be one of"):
        mmbert.build_model("uniter_tiny", global_region="middle")


@pytest.mark.parametrize("name", MASKABLE)
def test_masked_region_features_do_not_leak(name):
    model = mmbert.build_model(name).eval()
    x = make_inputs(model.config, batch=2)
    masked = torch.zeros(2, 5, dtype=torch.bool)
    masked[0, 2] = masked[1, 0] = True
    changed = x["region_feats"].clone()
    changed[masked] = torch.randn(2, 16) * 5
    with torch.no_grad():
        a = model(**x, region_masked=masked)
        b = model(**dict(x, region_feats=changed), region_masked=masked)
        c = model(**x)
    torch.testing.assert_close(b.text, a.text, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(b.vision, a.vision, atol=1e-6, rtol=1e-6)
    assert not torch.allclose(c.text, a.text)
    with pytest.raises(ValueError, match=r"region_masked has shape \(2, 4\), expected \(2, 5\)"):
        model(**x, region_masked=masked[:, :4])
    with pytest.raises(TypeError, match="region_masked must be boolean"):
        model(**x, region_masked=masked.long())


@pytest.mark.parametrize("name", NAMES)
def test_init_text_from_bert_reports_new_parameters(name, tmp_path):
    bert = mmbert.build_model("bert_tiny")
    bert.save(tmp_path / "bert")
    model = mmbert.build_model(name, init_text_from=tmp_path / "bert")
    report = model.init_report
    state, src = model.state_dict(), bert.state_dict()
    assert torch.equal(state["layers.1.ffn.fc2.weight"], src["layers.1.ffn.fc2.weight"])
    assert torch.equal(state["embeddings.text.word.weight"], src["embeddings.word.weight"])
    assert torch.equal(state["pooler.dense.weight"], src["pooler.dense.weight"])
    assert "layers.0.attn.qkv.weight" in report.initialised
    assert report.new and not any(k.startswith("layers.") for k in report.new)
    with pytest.raises(ValueError, match="layers"):
        mmbert.build_model(name, num_layers=3, init_text_from=tmp_path / "bert")


@pytest.mark.parametrize("name", ["visualbert_base", "unicoder_vl_base", "vl_bert_base", "uniter_base"])
def test_inspect_prints_layer_plan_and_counts(name, capsys):
    assert main(["inspect", name]) == 0
    out = capsys.readouterr().out
    assert "layers.11: Block(dim 768, heads 12, ffn 3072) over [text ; vision]" in out
    assert "embeddings" in out and "total" in out


def test_captioning_mask_makes_text_causal_over_the_regions(model_and_inputs):
    """With ``captioning_mask(caption_first=True)`` a text position depends on the regions and the earlier
    tokens only: changing the last token leaves the others' outputs alone (it changes them without)."""
    from mmbert.nn.masks import captioning_mask

    model, x = model_and_inputs
    text_mask = torch.ones_like(x["text_ids"], dtype=torch.bool)
    x = dict(x, text_mask=text_mask)
    with torch.no_grad():
        vision_len = model(**x).vision.shape[1]
        joint_vision = torch.ones(2, vision_len, dtype=torch.bool)
        mask = captioning_mask(text_mask, joint_vision, caption_first=True)
        changed = dict(x, text_ids=x["text_ids"].clone())
        changed["text_ids"][:, -1] = (changed["text_ids"][:, -1] + 1) % model.config.vocab_size
        a, b = model(**x, attention_mask=mask), model(**changed, attention_mask=mask)
        torch.testing.assert_close(a.text[:, :-1], b.text[:, :-1], atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(a.vision, b.vision, atol=1e-6, rtol=1e-6)
        assert not torch.allclose(model(**x).text[:, 0], model(**changed).text[:, 0])
        with pytest.raises(ValueError, match="attention_mask has shape"):
            model(**x, attention_mask=mask[:, 1:])


@pytest.mark.parametrize("name", ["ctrl_visualbert", "ctrl_uniter", "ctrl_vl_bert"])
def test_voltas_matching_head_reads_the_fused_vector_through_dropout(name):
    """VOLTA's ``BertPreTrainingHeads``: ``bi_seq_relationship(Dropout(0.1)(pooled_t * pooled_v))``: in
    training the matching logits vary with the dropout draw, in eval they do not; the plan names the
    fused pooler."""
    torch.manual_seed(0)
    model = mmbert.build_model(name, **TINY_SIZES, pooled_dim=24, region_feat_dim=TINY_REGION_FEAT_DIM)
    pair = mmbert.PretrainingModel(model).heads.pair
    assert pair.dropout == pytest.approx(0.1)
    pooled = torch.ones(64, 24)
    pair.train()
    dropped = pair(pooled)
    assert not torch.allclose(dropped, pair(pooled))
    pair.eval()
    assert torch.equal(pair(pooled), pair.proj(pooled))
    assert "ReLU(Linear(32, 24)) on [CLS] * ReLU(Linear(32, 24)) on the whole-image region" in "\n".join(
        model.layer_plan()
    )


@pytest.mark.parametrize("name", NAMES)
def test_plain_matching_head_has_no_dropout(name):
    model = mmbert.build_model(name)
    pair = mmbert.PretrainingModel(model).heads.pair
    if pair is not None:  # VL-BERT pre-trains without one
        assert pair.dropout == 0.0 and pair.proj.in_features == model.config.dim
