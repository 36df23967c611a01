from __future__ import annotations

import pytest
import torch

import mmbert
from mmbert.models.bert import BertConfig


def test_presets_have_the_published_sizes():
    with torch.device("meta"):
        assert mmbert.build_model("bert_base").num_parameters() == 109_482_240  # HF BertModel(bert-base)
        assert mmbert.build_model("bert_large").num_parameters() == 335_141_888
    assert mmbert.build_model("bert_tiny", num_layers=3).config.num_layers == 3


def test_unknown_names_and_overrides_are_refused():
    with pytest.raises(KeyError, match="unknown model 'bert_huge'"):
        mmbert.build_model("bert_huge")
    with pytest.raises(ValueError, match=r"unknown config keys for BertConfig: \['hidden'\]"):
        mmbert.build_model("bert_tiny", hidden=3)
    with pytest.raises(ValueError, match="not divisible"):
        BertConfig(dim=30, num_heads=4)


def test_config_from_dict_checks_keys_and_types():
    with pytest.raises(ValueError, match="unknown keys"):
        BertConfig.from_dict({"dim": 32, "colour": "red"})
    with pytest.raises(TypeError, match="'num_heads' expects int"):
        BertConfig.from_dict({"num_heads": "two"})
    assert BertConfig.from_dict(BertConfig(dim=48).to_dict()).dim == 48


@pytest.fixture
def tiny():
    return mmbert.build_model("bert_tiny").eval()


def test_token_ids_outside_vocabulary(tiny):
    ids = torch.tensor([[1, 2, 100]])
    with pytest.raises(ValueError, match=r"text_ids\[0, 2\] = 100 is outside the vocabulary \(size 100\)"):
        tiny(ids)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tiny(torch.tensor([[-1, 2]]))


def test_mask_and_segment_shapes_and_types(tiny):
    ids = torch.tensor([[1, 2, 3]])
    with pytest.raises(ValueError, match=r"text_mask has shape \(1, 2\) but text_ids has shape \(1, 3\)"):
        tiny(ids, torch.ones(1, 2, dtype=torch.bool))
    with pytest.raises(TypeError, match="text_mask must be boolean"):
        tiny(ids, torch.ones(1, 3))
    with pytest.raises(ValueError, match=r"segment_ids\[0, 1\] = 2 is outside 0..1"):
        tiny(ids, segment_ids=torch.tensor([[0, 2, 0]]))
    with pytest.raises(ValueError, match="64 positions"):
        tiny(torch.ones(1, 65, dtype=torch.long))
    with pytest.raises(ValueError, match="text-only"):
        tiny(ids, region_feats=torch.zeros(1, 2, 4))


def test_attention_maps_on_request(tiny):
    ids = torch.tensor([[1, 2, 3, 4]])
    enc = tiny(ids, output_attentions=True)
    assert len(enc.attentions["text_text"]) == 2 and enc.attentions["text_text"][0].shape == (1, 2, 4, 4)
    assert tiny(ids).attentions is None
    torch.testing.assert_close(enc.text, tiny(ids).text, atol=1e-6, rtol=1e-5)


def test_init_text_from_bert(tmp_path):
    src = mmbert.build_model("bert_tiny")
    src.save(tmp_path / "b")
    model = mmbert.build_model("bert_tiny", init_text_from=tmp_path / "b")
    for (k, a), (_, b) in zip(src.state_dict().items(), model.state_dict().items()):
        assert torch.equal(a, b), k
    assert model.init_report.new == [] and len(model.init_report.initialised) == len(src.state_dict())
    with pytest.raises(ValueError, match="layers"):
        mmbert.build_model("bert_tiny", num_layers=3, init_text_from=tmp_path / "b")
