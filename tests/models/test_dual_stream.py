"""The dual-stream models' own stages: ``forward`` is ``fuse(encode_text(...), encode_vision(...))``, and
the single-modality stages do not see the other modality (what fast retrieval relies on)."""

from __future__ import annotations

import pytest
import torch
from helpers import make_inputs

import mmbert
from mmbert.models import MODELS
from mmbert.models.dual_stream import DualStreamModel

DUAL = [n for n in MODELS if n.endswith("_tiny") and isinstance(mmbert.build_model(n), DualStreamModel)]


def test_both_dual_stream_families_are_covered():
    assert sorted(DUAL) == ["lxmert_tiny", "vilbert_tiny"]


def stages(model, inputs, output_attentions=False):
    text = model.encode_text(inputs["text_ids"], inputs["text_mask"], inputs["segment_ids"], output_attentions)
    vision = model.encode_vision(
        inputs["region_feats"], inputs["region_boxes"], inputs["region_mask"], output_attentions
    )
    return model.fuse(text, vision, output_attentions)


@pytest.mark.parametrize("name", DUAL)
def test_forward_is_the_three_stages(name):
    torch.manual_seed(0)
    model = mmbert.build_model(name).eval()
    inputs = make_inputs(model.config, batch=3)
    with torch.no_grad():
        full = model(**inputs, output_attentions=True)
        staged = stages(model, inputs, output_attentions=True)
    for key in ("text", "vision", "pooled"):
        assert torch.equal(getattr(full, key), getattr(staged, key)), key
    assert full.attentions.keys() == staged.attentions.keys()
    for key, maps in full.attentions.items():
        assert len(maps) == len(staged.attentions[key]) > 0
        assert all(torch.equal(a, b) for a, b in zip(maps, staged.attentions[key])), key


@pytest.mark.parametrize("name", DUAL)
def test_single_modality_stages_ignore_the_other_modality(name):
    torch.manual_seed(0)
    model = mmbert.build_model(name).eval()
    a, b = make_inputs(model.config, seed=1), make_inputs(model.config, seed=2)
    with torch.no_grad():
        text_a = model.encode_text(a["text_ids"], a["text_mask"], a["segment_ids"])
        vision_b = model.encode_vision(b["region_feats"], b["region_boxes"], b["region_mask"])
        crossed = model.fuse(text_a, vision_b)
        mixed = model(a["text_ids"], a["text_mask"], a["segment_ids"], b["region_feats"], b["region_boxes"],
                      b["region_mask"])  # fmt: skip
    assert torch.equal(crossed.pooled, mixed.pooled)
    assert text_a.attentions is None and vision_b.attentions is None
