"""VisualBERT specifics: no boxes needed, image-text alignment, visual tables, the task head."""

from __future__ import annotations

import pytest
import torch
from helpers import make_inputs

import mmbert
from mmbert.models.base import Encoded
from mmbert.models.visualbert import VisualBertConfig, VisualBertTaskHead


@pytest.fixture
def tiny():
    model = mmbert.build_model("visualbert_tiny").eval()
    return model, make_inputs(model.config)


def test_boxes_are_accepted_but_not_needed(tiny):
    model, x = tiny
    with torch.no_grad():
        with_boxes = model(**x)
        without = model(**{k: v for k, v in x.items() if k != "region_boxes"})
    assert torch.equal(with_boxes.text, without.text) and torch.equal(with_boxes.vision, without.vision)


def test_visual_tables_start_as_copies_of_the_text_ones(tiny):
    e = tiny[0].embeddings
    assert torch.equal(e.visual_segment.weight, e.text.segment.weight)
    assert torch.equal(e.visual_position.weight, e.text.position.weight)
    plain = mmbert.build_model("visualbert_tiny", special_visual_initialize=False).embeddings
    assert not torch.equal(plain.visual_position.weight, plain.text.position.weight)


def test_alignment_moves_regions_by_their_words_positions(tiny):
    model, x = tiny
    align = torch.full((2, 5, 2), -1)
    with torch.no_grad():
        none = model(**x)
        unaligned = model(**x, image_text_alignment=align)
        align[0, 1] = torch.tensor([2, 4])
        aligned = model(**x, image_text_alignment=align)
    assert torch.equal(unaligned.vision, none.vision)  # all -1: the same as no alignment
    assert not torch.allclose(aligned.vision[0], none.vision[0])
    torch.testing.assert_close(aligned.vision[1], none.vision[1])  # example 1 has no aligned word


def test_alignment_errors(tiny):
    model, x = tiny
    with pytest.raises(ValueError, match=r"image_text_alignment has shape \(2, 4, 3\), expected \(2, 5, K\)"):
        model(**x, image_text_alignment=torch.zeros(2, 4, 3, dtype=torch.long))
    bad = torch.full((2, 5, 2), -1)
    bad[1, 3, 1] = 64
    with pytest.raises(ValueError, match=r"image_text_alignment\[1, 3, 1\] = 64 is not a word position"):
        model(**x, image_text_alignment=bad)
    with pytest.raises(TypeError, match="integer word indices"):
        model(**x, image_text_alignment=bad.float())


def test_alignment_with_a_whole_image_region():
    model = mmbert.build_model("visualbert_tiny", global_region="first").eval()
    x = make_inputs(model.config)
    enc = model(**x, image_text_alignment=torch.zeros(2, 5, 1, dtype=torch.long))
    assert enc.vision.shape == (2, 6, 32)


def test_global_feats_without_a_whole_image_region_is_refused_by_name(tiny):
    """global_region 'none' (the default) leaves global_feats nowhere to go: refused, not dropped."""
    model, x = tiny
    feats = x["region_feats"]
    with pytest.raises(TypeError, match=r"global_region 'none'\): global_feats has nowhere to go"):
        model(**x, global_feats=feats.new_zeros(feats.shape[0], feats.shape[-1]))


def test_config_checks():
    with pytest.raises(ValueError, match="type_vocab_size must be >= 2"):
        VisualBertConfig(type_vocab_size=1)


def test_pretraining_heads_are_mlm_and_match_only(tiny):
    heads = tiny[0].build_pretraining_heads()
    assert heads.mlm is not None and heads.pair is not None and heads.region is None


def test_task_head_kinds():
    enc = Encoded(text=torch.randn(4, 6, 8), vision=None, pooled=torch.randn(4, 8))
    vqa = VisualBertTaskHead("question_answering", 8, 5).eval()
    mask = torch.tensor([[1, 1, 1, 1, 0, 0]] * 4, dtype=torch.bool)
    torch.testing.assert_close(vqa(enc, mask), vqa.proj(enc.text[:, 2]))
    torch.testing.assert_close(vqa(enc), vqa.proj(enc.text[:, 4]))
    nlvr = VisualBertTaskHead("visual_reasoning", 8, 2).eval()
    torch.testing.assert_close(nlvr(enc), nlvr.proj(enc.pooled))
    mc = VisualBertTaskHead("multiple_choice", 8, 1).eval()
    assert mc(enc, num_choices=2).shape == (2, 2)
    with pytest.raises(ValueError, match="needs num_choices"):
        mc(enc)
    with pytest.raises(ValueError, match="unknown VisualBERT task head"):
        VisualBertTaskHead("captioning", 8, 2)
    with pytest.raises(ValueError, match="1 output"):
        VisualBertTaskHead("multiple_choice", 8, 4)


def test_init_text_from_bert_fills_the_visual_tables_too(tmp_path):
    bert = mmbert.build_model("bert_tiny")
    bert.save(tmp_path / "bert")
    model = mmbert.build_model("visualbert_tiny", init_text_from=tmp_path / "bert")
    assert torch.equal(model.embeddings.visual_position.weight, bert.embeddings.position.weight)
    assert torch.equal(model.embeddings.text.norm.weight, bert.embeddings.norm.weight)
    assert model.init_report.new == ["embeddings.visual_proj"]
