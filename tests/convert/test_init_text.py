"""Initialisation from BERT beyond the encoder: the MLM head (cls.predictions transform + bias) where the
checkpoint has one, and VL-BERT's segment rows."""

from __future__ import annotations

import pytest
import torch

import mmbert
from mmbert.convert.init_text import init_mlm_head_from_bert


@pytest.fixture()
def bert_dirs(tmp_path):
    torch.manual_seed(0)
    bert = mmbert.PretrainingModel(mmbert.build_model("bert_tiny"))
    with torch.no_grad():
        bert.heads.mlm.bias.normal_()  # non-zero, so a copy is visible
    bert.save(tmp_path / "with_heads")
    bert.encoder.save(tmp_path / "encoder_only")
    return bert, tmp_path / "with_heads", tmp_path / "encoder_only"


@pytest.mark.parametrize("name", ["uniter_tiny", "vl_bert_tiny", "vilbert_tiny"])
def test_mlm_head_is_copied_from_a_bert_pretraining_checkpoint_and_reported(name, bert_dirs):
    bert, with_heads, encoder_only = bert_dirs
    model = mmbert.PretrainingModel(mmbert.build_model(name, init_text_from=with_heads))
    copied = init_mlm_head_from_bert(model, with_heads)
    assert sorted(copied) == sorted(f"heads.mlm.{k}" for k in model.heads.mlm.state_dict())
    for key, value in model.heads.mlm.state_dict().items():
        assert torch.equal(value, bert.heads.mlm.state_dict()[key]), key
    report = model.encoder.init_report
    assert "heads.mlm.bias" in report.initialised and not any(n.startswith("heads.mlm") for n in report.new)
    fresh = mmbert.PretrainingModel(mmbert.build_model(name, init_text_from=encoder_only))
    before = {k: v.clone() for k, v in fresh.heads.mlm.state_dict().items()}
    assert init_mlm_head_from_bert(fresh, encoder_only) == []  # an encoder-only checkpoint: the head stays new
    assert all(torch.equal(before[k], v) for k, v in fresh.heads.mlm.state_dict().items())


def test_vl_bert_copies_bert_segment_rows_into_its_three_type_table(bert_dirs):
    bert, _, encoder_only = bert_dirs
    model = mmbert.build_model("vl_bert_tiny", init_text_from=encoder_only)
    table = model.embeddings.text.segment.weight
    rows = bert.encoder.embeddings.segment.weight
    assert table.shape[0] == 3 and torch.equal(table[:2], rows)
    assert not torch.equal(table[2], rows[0]) and not torch.equal(table[2], rows[1])  # the image type stays new
    assert "embeddings.text.segment.weight" in model.init_report.initialised
