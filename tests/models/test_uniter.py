"""UNITER specifics: 7-d locations, shared segment table, masked regions, tied feature regression."""

from __future__ import annotations

import torch
from helpers import make_inputs, one_masked_region

import mmbert
from mmbert.data.boxes import location_features


def test_region_embedding_formula():
    model = mmbert.build_model("uniter_tiny").eval()
    x = make_inputs(model.config)
    r = model.embeddings.region
    with torch.no_grad():
        for p in (r.feat_norm.weight, r.loc_norm.weight, r.norm.weight):
            p.normal_()
        got = r(x["region_feats"], x["region_boxes"], model.embeddings.text.segment.weight[1])
        f = r.feat_norm(r.feat_proj(x["region_feats"]))
        p = r.loc_norm(r.loc_proj(location_features(x["region_boxes"], "7d")))
        want = r.norm(f + p + model.embeddings.text.segment.weight[1])
    torch.testing.assert_close(got, want)
    assert r.loc_proj.in_features == 7


def test_masked_regions_are_zeroed_plus_a_learned_vector():
    model = mmbert.build_model("uniter_tiny").eval()
    x, masked, zeroed = one_masked_region(model.config, 0, 1)
    vector = model.embeddings.region.mask_embedding
    # UNITER's nn.Embedding row 1 under init_weights: N(0, 0.02), not zeros
    assert vector.detach().abs().sum() > 0 and abs(float(vector.detach().std()) - 0.02) < 0.012
    with torch.no_grad():
        with_vector = zeroed.clone()
        with_vector[0, 1] = vector  # the masked region's feature: zero + the learned vector
        torch.testing.assert_close(
            model(**x, region_masked=masked).vision, model(**dict(x, region_feats=with_vector)).vision
        )
        assert not torch.allclose(
            model(**x, region_masked=masked).vision, model(**dict(x, region_feats=zeroed)).vision
        )


def test_pretraining_heads_and_tied_feature_regression():
    model = mmbert.build_model("uniter_tiny").eval()
    pt = mmbert.PretrainingModel(model).eval()
    x = make_inputs(model.config)
    with torch.no_grad():
        out = pt(**x)
        assert out.region_class_logits.shape == (2, 5, 11)
        assert out.region_feat_pred.shape == (2, 5, 16)
        assert out.pair_logits.shape == (2, 2)
        model.embeddings.region.feat_proj.weight.mul_(2)  # the regression decoder is this matrix, transposed
        h = pt.heads.region.feat_transform(pt(**x).encoded.vision)
        torch.testing.assert_close(
            pt(**x).region_feat_pred, h @ model.embeddings.region.feat_proj.weight + pt.heads.region.feat_bias
        )
    assert (
        mmbert.build_model("uniter_base").build_pretraining_heads().region.class_decoder.out_features == 1601
    )
    assert "region.feat_proj" not in " ".join(k for k, _ in pt.heads.named_parameters())
