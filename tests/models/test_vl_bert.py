"""VL-BERT specifics: whole-image feature on text, shared region position, segment 2, [END], masking."""

from __future__ import annotations

import pytest
import torch
from helpers import make_inputs

import mmbert
from mmbert.models.vl_bert import VLBertConfig


@pytest.fixture
def tiny():
    model = mmbert.build_model("vl_bert_tiny").eval()
    return model, make_inputs(model.config)


def embed(model, x, **extra):
    with torch.no_grad():
        return model.embed(
            x["text_ids"],
            x["text_mask"],
            x["segment_ids"],
            x["region_feats"],
            x["region_boxes"],
            x["region_mask"],
            **extra,
        )


def test_text_tokens_see_the_whole_image(tiny):
    model, x = tiny
    other = dict(x, region_feats=x["region_feats"] + 1.0)
    (a, _), (b, _) = embed(model, x), embed(model, other)
    assert not torch.allclose(a[:, :7], b[:, :7])  # text embeddings depend on the image
    uniter = mmbert.build_model("uniter_tiny").eval()
    (c, _), (d, _) = embed(uniter, x), embed(uniter, other)
    torch.testing.assert_close(c[:, :7], d[:, :7])  # ... unlike UNITER's


def test_sequence_layout_positions_and_segments(tiny):
    model, x = tiny
    joint, mask = embed(model, x)
    assert joint.shape == (2, 7 + 1 + 5 + 1, 32)  # text, whole image (first), regions, [END]
    assert mask[:, -1].all() and mask[:, 7].all() and mask[1, 7 + 1 + 3 :].tolist() == [False, False, True]
    e = model.embeddings
    with torch.no_grad():
        e.text.norm.weight.fill_(1.0)
        e.text.norm.bias.zero_()
        e.end_token.zero_()
        joint, _ = embed(model, x)
        # [END] of example 1 (4 real tokens) = LN(position 5 + segment 2)
        want = e.text.norm(e.text.position.weight[5] + e.text.segment.weight[2])
    torch.testing.assert_close(joint[1, -1], want)


def test_masked_regions_use_their_own_token_and_feature(tiny):
    model, x = tiny
    masked = torch.zeros(2, 5, dtype=torch.bool)
    masked[0, 0] = True
    (a, _), (b, _) = embed(model, x), embed(model, x, region_masked=masked)
    assert not torch.allclose(a[0, 8], b[0, 8])
    torch.testing.assert_close(a[1], b[1])
    e = mmbert.build_model("vl_bert_base", num_layers=0).embeddings
    assert e.masked_feature.abs().max() == 0 and e.visual_object_norm.weight.abs().max() == 0  # paper's init


def test_vision_has_end_element_and_mask(tiny):
    model, x = tiny
    enc = model(**x)
    assert enc.vision.shape == (2, 7, 32)
    assert model.vision_mask(x).tolist()[1] == [False, True, True, True, False, False, False]


def test_text_too_long_for_the_region_positions():
    model = mmbert.build_model("vl_bert_tiny", max_positions=8).eval()
    x = make_inputs(model.config, text_len=7)
    with pytest.raises(ValueError, match="7 tokens need 9 positions, the model has 8"):
        model(**x)


def test_config_and_heads():
    with pytest.raises(ValueError, match="type_vocab_size must be >= 3"):
        VLBertConfig(type_vocab_size=2)
    heads = mmbert.build_model("vl_bert_tiny").build_pretraining_heads()
    assert heads.pair is None and heads.mlm is not None and heads.region.decoders["class"].out_features == 11


def test_init_text_from_bert_fills_the_first_two_segment_rows(tmp_path):
    bert = mmbert.build_model("bert_tiny")
    bert.save(tmp_path / "bert")
    model = mmbert.build_model("vl_bert_tiny", init_text_from=tmp_path / "bert")
    assert "embeddings.text.segment" not in model.init_report.new  # VL-BERT copies BERT's rows 0 and 1
    assert torch.equal(model.embeddings.text.segment.weight[:2], bert.embeddings.segment.weight)


def test_a_text_only_example_runs_with_its_own_visual_embedding():
    torch.manual_seed(0)
    model = mmbert.build_model("vl_bert_tiny").eval()
    ids = torch.tensor([[2, 10, 11, 3, 0], [2, 12, 3, 0, 0]])
    mask = ids > 0
    enc = model(ids, text_mask=mask)
    assert enc.text.shape == (2, 5, model.config.dim) and enc.vision.shape == (2, 1, model.config.dim)  # [END]
    with torch.no_grad():
        model.embeddings.text_only_visual.add_(1.0)
    assert not torch.allclose(model(ids, text_mask=mask).text[mask], enc.text[mask])  # it is used
    padded = model(torch.cat([ids, torch.zeros(2, 2, dtype=torch.long)], 1),
                   text_mask=torch.cat([mask, torch.zeros(2, 2, dtype=torch.bool)], 1))  # fmt: skip
    torch.testing.assert_close(padded.text[:, :5][mask], model(ids, text_mask=mask).text[mask], atol=1e-6, rtol=1e-6)
