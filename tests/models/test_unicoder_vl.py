"""Unicoder-VL specifics: 5-d locations, features zeroed for masked regions, its heads."""

from __future__ import annotations

import torch
from helpers import make_inputs, one_masked_region

import mmbert
from mmbert.data.boxes import location_features


def test_region_embedding_formula():
    model = mmbert.build_model("unicoder_vl_tiny").eval()
    x = make_inputs(model.config)
    r = model.embeddings.region
    with torch.no_grad():
        got = r(x["region_feats"], x["region_boxes"])
        want = r.norm(r.feat_proj(x["region_feats"]) + r.loc_proj(location_features(x["region_boxes"], "5d")))
    torch.testing.assert_close(got, want)
    assert r.loc_proj.in_features == 5


def test_masked_region_features_are_zeroed():
    model = mmbert.build_model("unicoder_vl_tiny").eval()
    x, masked, zeroed = one_masked_region(model.config, 1, 2)
    with torch.no_grad():
        torch.testing.assert_close(
            model(**x, region_masked=masked).text, model(**dict(x, region_feats=zeroed)).text
        )


def test_pretraining_heads():
    heads = mmbert.build_model("unicoder_vl_base").build_pretraining_heads()
    assert heads.mlm is not None and heads.pair is not None
    assert set(heads.region.decoders) == {"class"} and heads.region.decoders["class"].out_features == 1601
    tiny = mmbert.PretrainingModel(mmbert.build_model("unicoder_vl_tiny")).eval()
    out = tiny(**make_inputs(tiny.config))
    assert out.region_class_logits.shape == (2, 5, 11) and out.region_feat_pred is None
