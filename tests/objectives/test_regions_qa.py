"""Region objectives and LXMERT image QA on hand-computed examples, including all-ignored batches."""

from __future__ import annotations

import math

import pytest
import torch

from mmbert.objectives import (
    FeatureRegression,
    ImageQA,
    LxmertRegionLoss,
    RegionClassification,
    RegionDistribution,
)


def lse(*xs: float) -> float:
    return math.log(sum(math.exp(x) for x in xs))


# one image, three regions, two classes; regions 0 and 2 are targets
LOGITS = torch.tensor([[[1.0, 0.0], [5.0, 5.0], [0.0, 2.0]]])
TARGETS = torch.tensor([[True, False, True]])


def test_region_classification_hard_label():
    labels = torch.tensor([[0, 1, 0]])
    out = RegionClassification("moc")(LOGITS, labels, TARGETS)
    ce0 = lse(1, 0) - 1.0
    ce2 = lse(0, 2) - 0.0
    assert out.loss.item() == pytest.approx((ce0 + ce2) / 2, rel=1e-6)
    assert out.metrics == {"moc_loss": pytest.approx((ce0 + ce2) / 2, rel=1e-6), "moc_acc": 0.5, "moc_count": 2}
    with pytest.raises(ValueError, match="outside"):
        RegionClassification()(LOGITS, torch.tensor([[0, 1, 7]]), TARGETS)


def test_region_kl_and_soft_ce_to_the_detector_distribution():
    probs = torch.tensor([[[0.5, 0.5], [0.3, 0.7], [0.0, 1.0]]])
    kl = RegionDistribution("mrc_kl", "kl")(LOGITS, probs, TARGETS)
    log_q0 = [1 - lse(1, 0), 0 - lse(1, 0)]
    log_q2 = [0 - lse(0, 2), 2 - lse(0, 2)]
    kl0 = 0.5 * (math.log(0.5) - log_q0[0]) + 0.5 * (math.log(0.5) - log_q0[1])
    kl2 = 1.0 * (0.0 - log_q2[1])  # 0 log 0 = 0
    assert kl.loss.item() == pytest.approx((kl0 + kl2) / 2, rel=1e-6)
    soft = RegionDistribution("mvrc_soft", "soft_ce")(LOGITS, probs, TARGETS)
    ce0 = -(0.5 * log_q0[0] + 0.5 * log_q0[1])
    ce2 = -log_q2[1]
    assert soft.loss.item() == pytest.approx((ce0 + ce2) / 2, rel=1e-6)
    assert kl.metrics["mrc_kl_count"] == 2 and kl.metrics["mrc_kl_acc"] == 1.0


def test_feature_regression_l2_and_smooth_l1():
    pred = torch.tensor([[[1.0, 2.0], [9.0, 9.0], [0.0, 0.0]]])
    feats = torch.tensor([[[1.0, 0.0], [0.0, 0.0], [3.0, 0.5]]])
    l2 = FeatureRegression("mrfr", "l2")(pred, feats, TARGETS)
    assert l2.loss.item() == pytest.approx(((0 + 4) / 2 + (9 + 0.25) / 2) / 2)
    sl1 = FeatureRegression("feat_sl1", "smooth_l1")(pred, feats, TARGETS)
    # smooth L1 (beta 1): |d| - 0.5 when |d| >= 1, else d^2 / 2
    assert sl1.loss.item() == pytest.approx(((0 + 1.5) / 2 + (2.5 + 0.125) / 2) / 2)


def test_lxmert_obj_attr_weighted_by_confidence_and_scaled():
    labels = torch.tensor([[0, 1, 1]])
    conf = torch.tensor([[0.5, 1.0, 0.25]])
    real = torch.tensor([[True, True, True]])
    out = LxmertRegionLoss("obj")(LOGITS, labels, TARGETS, conf, real)
    ce0 = lse(1, 0) - 1.0
    ce2 = lse(0, 2) - 2.0
    expected = (ce0 * 0.5 + ce2 * 0.25) / 3 / 0.15  # sum over the scored regions / all regions x 1 / 0.15
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)
    assert out.metrics["obj_acc"] == 1.0
    feat = LxmertRegionLoss("feat")(
        torch.tensor([[[1.0, 2.0], [0.0, 0.0], [0.0, 0.0]]]),
        torch.tensor([[[1.0, 0.0], [5.0, 5.0], [0.5, 0.0]]]),
        TARGETS,
        None,
        real,
    )
    assert feat.loss.item() == pytest.approx(((0 + 1.5) / 2 + (0.125 + 0) / 2) / 3 / 0.15, rel=1e-6)


def test_lxmert_scores_classes_at_every_real_region_and_features_at_the_masked_ones():
    from mmbert.data.batch import Batch
    from mmbert.objectives.base import ScoringInputs

    labels, conf = torch.tensor([[0, 1, 1]]), torch.tensor([[0.5, 1.0, 0.25]])
    real = torch.tensor([[True, True, False]])
    batch = Batch(torch.zeros(1, 2, dtype=torch.long), torch.ones(1, 2, dtype=torch.bool),
                  torch.zeros(1, 2, dtype=torch.long), region_mask=real, region_labels=labels,
                  region_obj_conf=conf, region_target_mask=TARGETS)  # fmt: skip
    out = LxmertRegionLoss("obj").score(LOGITS, ScoringInputs(batch, None, TARGETS))
    every_real = LxmertRegionLoss("obj")(LOGITS, labels, real, conf, real)  # lxmert_pretrain.py: (labels, confs)
    assert out.loss.item() == pytest.approx(every_real.loss.item()) and out.metrics["obj_count"] == 2


@pytest.mark.parametrize(
    "objective, args",
    [
        (RegionClassification(), (torch.zeros(2, 3, dtype=torch.long),)),
        (RegionDistribution(), (torch.full((2, 3, 4), 0.25),)),
        (FeatureRegression(), (torch.zeros(2, 3, 4),)),
        (LxmertRegionLoss("obj"), (torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 3))),
        (LxmertRegionLoss("feat"), (torch.zeros(2, 3, 4),)),
    ],
)
def test_all_ignored_region_batches_give_a_finite_zero(objective, args):
    pred = torch.randn(2, 3, 4, requires_grad=True)
    out = objective(pred, args[0], torch.zeros(2, 3, dtype=torch.bool), *args[1:])
    assert out.loss.item() == 0.0
    out.loss.backward()
    assert torch.isfinite(pred.grad).all()


def test_image_qa_soft_scores_hard_labels_and_mismatches():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [5.0, 0.0, 0.0]])
    scores = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.6, 0.3], [0.0, 0.0, 0.0]])  # third: no answer
    out = ImageQA()(logits, scores)
    ce0 = lse(2, 0, 0) - 2.0
    ce1 = lse(0, 1, 0) - (2 / 3 * 1.0 + 1 / 3 * 0.0)  # normalised scores (2/3, 1/3)
    assert out.loss.item() == pytest.approx((ce0 + ce1) / 2, rel=1e-6)
    assert out.metrics["qa_score"] == pytest.approx((1.0 + 0.6) / 2)
    assert out.metrics["qa_count"] == 2
    # a mismatched pair's question is not about its image: dropped
    dropped = ImageQA()(logits, scores, pair_labels=torch.tensor([1, 0, 1]))
    assert dropped.loss.item() == pytest.approx(ce0, rel=1e-6) and dropped.metrics["qa_count"] == 1
    hard = ImageQA()(logits, torch.tensor([0, -100, 2]))
    assert hard.loss.item() == pytest.approx(((lse(2, 0, 0) - 2) + (lse(5, 0, 0) - 0)) / 2, rel=1e-6)
    none = ImageQA()(logits.requires_grad_(), scores, pair_labels=torch.zeros(3, dtype=torch.long))
    assert none.loss.item() == 0.0 and none.metrics["qa_count"] == 0
    none.loss.backward()


def test_uniter_mrckl_averages_over_regions_and_classes():
    from mmbert.objectives.regions import RegionDistribution

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 7, generator=g)
    probs = torch.softmax(torch.randn(2, 3, 7, generator=g), -1)
    targets = torch.tensor([[True, False, True], [False, True, False]])
    per_region = RegionDistribution("mrc_kl", "kl")(logits, probs, targets).loss
    uniter = RegionDistribution("mrckl", "kl", average="region_class")(logits, probs, targets).loss
    p, log_q = probs[targets], torch.log_softmax(logits[targets], -1)
    kl = (p * (p.log() - log_q))  # (N, C), as F.kl_div(log_q, p, reduction='none')
    assert uniter.item() == pytest.approx(kl.mean().item(), rel=1e-6)  # UNITER: mean over N x C
    assert per_region.item() == pytest.approx(kl.sum(-1).mean().item(), rel=1e-6)  # ViLBERT / VOLTA
    assert per_region.item() == pytest.approx(7 * uniter.item(), rel=1e-6)
    with pytest.raises(ValueError, match="average"):
        RegionDistribution("x", "kl", average="batch")


def test_uniter_hard_mrc_label_excludes_background():
    from mmbert.data.batch import Batch
    from mmbert.objectives import OBJECTIVES
    from mmbert.objectives.base import ScoringInputs

    probs = torch.tensor([[[0.6, 0.3, 0.1], [0.2, 0.1, 0.7]]])  # region 0: background is the arg-max
    batch = Batch(torch.zeros(1, 2, dtype=torch.long), torch.ones(1, 2, dtype=torch.bool),
                  torch.zeros(1, 2, dtype=torch.long), region_cls_prob=probs)  # fmt: skip
    pred, inputs = torch.zeros(1, 2, 3), ScoringInputs(batch, None, torch.ones(1, 2, dtype=torch.bool))
    assert OBJECTIVES["mrc"]().hard_labels(pred, inputs).tolist() == [[1, 2]]  # argmax(p[1:]) + 1
    assert OBJECTIVES["mvrc"]().hard_labels(pred, inputs).tolist() == [[0, 2]]  # over all classes


def test_vilbert_alignment_head_sees_the_fused_vector_through_dropout():
    import mmbert

    torch.manual_seed(0)
    model = mmbert.build_model("vilbert_tiny", dropout=0.0, attn_dropout=0.0)
    heads = model.build_pretraining_heads()
    assert heads.pair.dropout == 0.1  # fixed in vilbert.py, not hidden_dropout_prob
    pooled = torch.randn(64, model.config.pooled_dim)
    heads.train()
    assert not torch.equal(heads.pair(pooled), heads.pair(pooled))
    heads.eval()
    assert torch.equal(heads.pair(pooled), heads.pair.proj(pooled))


def test_word_region_alignment_distance_ignores_padding_and_signs_by_label():
    from mmbert.objectives.alignment import optimal_transport_distance

    g = torch.Generator().manual_seed(0)
    text, vision = torch.randn(2, 4, 8, generator=g), torch.randn(2, 3, 8, generator=g)
    t_real = torch.tensor([[True, True, True, False], [True, True, True, True]])
    v_real = torch.tensor([[True, True, False], [True, True, True]])
    d = optimal_transport_distance(text, vision, t_real, v_real)
    noisy_t, noisy_v = text.clone(), vision.clone()
    noisy_t[0, 3], noisy_v[0, 2] = 100.0, -100.0  # padding content changes nothing
    torch.testing.assert_close(optimal_transport_distance(noisy_t, noisy_v, t_real, v_real), d)
    same = optimal_transport_distance(vision, vision, v_real, v_real)
    assert (d > 0).all() and (same < d).all()  # identical sets are closer than random ones
