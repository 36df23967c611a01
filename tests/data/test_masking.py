"""Masking rules: rates, replacement splits, whole words, each paper's region rule, pairs, determinism."""

from __future__ import annotations

import math

import pytest
import torch

from mmbert.data.masking import (
    IGNORE,
    box_iou,
    choose_mismatch,
    choose_next_sentence,
    drop_targets_for_mismatch,
    example_generator,
    mask_regions,
    mask_tokens,
    whole_image_feature,
    word_ids_from_tokens,
)

MASK, VOCAB = 3, 1000


def test_token_masking_rates_and_80_10_10_split():
    ids = torch.randint(10, VOCAB, (200, 100), generator=torch.Generator().manual_seed(0))
    maskable = torch.ones_like(ids, dtype=torch.bool)
    maskable[:, 0] = False  # [CLS]
    out, labels = mask_tokens(ids, maskable, MASK, VOCAB, torch.Generator().manual_seed(1))
    chosen = labels != IGNORE
    assert abs(chosen.float().mean().item() - 0.15) < 0.01
    assert not chosen[:, 0].any()
    assert torch.equal(labels[chosen], ids[chosen])
    assert torch.equal(out[~chosen], ids[~chosen])  # nothing else changes
    masked = (out == MASK) & chosen
    kept = (out == ids) & chosen
    n = chosen.sum().item()
    assert abs(masked.sum().item() / n - 0.8) < 0.03
    assert abs(kept.sum().item() / n - 0.1) < 0.03  # (plus the rare random draw equal to the original)
    assert abs((chosen & ~masked & ~kept).sum().item() / n - 0.1) < 0.03


def test_token_masking_is_a_function_of_the_generator_seed():
    ids = torch.arange(10, 60)
    ok = torch.ones_like(ids, dtype=torch.bool)
    a = mask_tokens(ids, ok, MASK, VOCAB, example_generator(7, 2, 11))
    b = mask_tokens(ids, ok, MASK, VOCAB, example_generator(7, 2, 11))
    c = mask_tokens(ids, ok, MASK, VOCAB, example_generator(7, 3, 11))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


def test_whole_word_masking_takes_all_pieces_of_a_word():
    tokens = ["[CLS]", "the", "play", "##ground", "##s", "are", "un", "##fun", "[SEP]"]
    words = word_ids_from_tokens(tokens)
    assert words == [None, 0, 1, 1, 1, 2, 3, 3, None]
    ids = torch.arange(100, 100 + len(tokens))
    maskable = torch.tensor([w is not None for w in words])
    seen_partial = False
    for seed in range(200):
        _, labels = mask_tokens(ids, maskable, MASK, VOCAB, torch.Generator().manual_seed(seed), prob=0.5,
                                word_ids=words)
        chosen = (labels != IGNORE).tolist()
        for group in ([2, 3, 4], [6, 7]):
            picked = [chosen[i] for i in group]
            seen_partial |= any(picked) and not all(picked)
        assert not chosen[0] and not chosen[-1]
    assert not seen_partial


def test_box_iou_hand_computed():
    a = torch.tensor([[0.0, 0.0, 0.5, 0.5]])
    b = torch.tensor([[0.25, 0.25, 0.75, 0.75], [0.0, 0.0, 0.5, 0.5], [0.6, 0.6, 0.7, 0.7], [0.1, 0.1, 0.1, 0.1]])
    # overlap 0.25^2 = 0.0625; union 0.25 + 0.25 - 0.0625 = 0.4375
    expected = torch.tensor([[0.0625 / 0.4375, 1.0, 0.0, 0.0]])
    assert torch.allclose(box_iou(a, b), expected)


def test_zero_rule_zeroes_and_flags_targets_only_on_real_regions():
    feats = torch.randn(400, 8) + 5
    real = torch.ones(400, dtype=torch.bool)
    real[300:] = False
    m = mask_regions(feats, torch.Generator().manual_seed(0), "zero", real=real)
    assert torch.equal(m.targets, m.masked)
    assert not m.targets[300:].any()
    assert abs(m.targets[:300].float().mean().item() - 0.15) < 0.05
    assert (m.feats[m.targets] == 0).all()
    assert torch.equal(m.feats[~m.targets], feats[~m.targets])


def test_lxmert_rule_80_zero_10_random_10_keep():
    feats = torch.randn(4000, 6) + 5  # never exactly zero
    pool = torch.full((3, 6), -7.0)
    m = mask_regions(feats, torch.Generator().manual_seed(0), "lxmert", random_pool=pool)
    t = m.targets
    n = t.sum().item()
    zero = (m.feats[t] == 0).all(-1)
    swapped = (m.feats[t] == -7.0).all(-1)
    kept = (m.feats[t] == feats[t]).all(-1)
    assert abs(n / 4000 - 0.15) < 0.02
    assert abs(zero.float().mean().item() - 0.8) < 0.05
    assert abs(swapped.float().mean().item() - 0.1) < 0.04
    assert abs(kept.float().mean().item() - 0.1) < 0.04
    assert torch.equal(m.masked[t], zero | swapped)
    assert torch.equal(m.feats[~t], feats[~t])


def within_binomial(k: int, n: int, p: float, z: float = 4.5) -> bool:
    """k successes of n draws lie within z standard deviations of n p."""
    return abs(k - n * p) <= z * math.sqrt(n * p * (1 - p))


@pytest.mark.parametrize("rule", ["vilbert", "vilbert_beta", "vl_bert"])
def test_90_10_region_rules_rates(rule):
    n = 6000
    feats = torch.randn(n, 6) + 5  # never exactly zero
    boxes = torch.rand(n, 2).mul(500).repeat(1, 2) + torch.tensor([0.0, 0.0, 20.0, 20.0])
    m = mask_regions(feats, torch.Generator().manual_seed(3), rule, boxes=boxes)
    t = m.targets
    assert within_binomial(int(t.sum()), n, 0.15)
    assert within_binomial(int(m.masked[t].sum()), int(t.sum()), 0.9)
    assert not m.masked[~t].any()  # only targets are replaced
    untouched = ~m.masked
    assert torch.equal(m.feats[untouched], feats[untouched])  # the 10 % kept and every other region
    if rule == "vl_bert":  # the model swaps masked regions itself: the features stay as they are
        assert torch.equal(m.feats, feats)
    else:
        assert (m.feats[m.masked] == 0).all()


def test_vilbert_rule_flags_overlaps_without_zeroing_them():
    # pixel boxes; 0 and 1 overlap (IoU (226*251) / (251*251) = 0.9 > 0.4 with the +1 convention); 2 is far
    boxes = torch.tensor([[0.0, 0.0, 250.0, 250.0], [0.0, 0.0, 225.0, 250.0], [350.0, 350.0, 450.0, 450.0]])
    feats = torch.ones(3, 4)
    found = False
    for seed in range(300):
        m = mask_regions(feats, torch.Generator().manual_seed(seed), "vilbert", boxes=boxes, prob=0.3)
        if m.targets.tolist() == [True, False, False]:
            found = True
            assert m.overlap.tolist() == [True, True, False]  # the target itself and its overlap
            assert (m.feats[1] == 1).all() and (m.feats[2] == 1).all()  # the overlap is NOT zeroed
            assert m.masked[1:].tolist() == [False, False]
            beta = mask_regions(feats, torch.Generator().manual_seed(seed), "vilbert_beta", boxes=boxes, prob=0.3)
            assert beta.targets.tolist() == [True, False, False] and not beta.overlap.any()  # no IoU logic
    assert found
    with pytest.raises(ValueError, match="boxes"):
        mask_regions(feats, torch.Generator(), "vilbert")
    with pytest.raises(ValueError, match="unknown region masking rule"):
        mask_regions(feats, torch.Generator(), "bogus")


def test_box_iou_plus_one_convention():
    a = torch.tensor([[0.0, 0.0, 9.0, 9.0]])  # 10 x 10 pixels inclusive
    b = torch.tensor([[5.0, 0.0, 14.0, 9.0]])  # overlap 5 x 10
    assert torch.allclose(box_iou(a, b, plus_one=True), torch.tensor([[50.0 / 150.0]]))
    assert torch.allclose(box_iou(a, b), torch.tensor([[36.0 / (81 + 81 - 36)]]))


def test_whole_image_feature_divides_by_regions_overlapping_no_target():
    feats = torch.tensor([[0.0, 0.0], [2.0, 4.0], [4.0, 8.0], [6.0, 2.0]])  # region 0 already zeroed
    real = torch.tensor([True, True, True, False])
    overlap = torch.tensor([True, True, False, False])
    # (0 + 2 + 4) / 1 region that is real and overlaps no target; the padded region 3 counts nowhere
    assert torch.equal(whole_image_feature(feats, real, overlap), torch.tensor([6.0, 12.0]))
    assert torch.equal(whole_image_feature(feats, real, None), torch.tensor([2.0, 4.0]))  # vilbert_beta
    assert torch.equal(whole_image_feature(feats, real, real), torch.tensor([6.0, 12.0]))  # divisor >= 1


def test_uniter_region_rule_forces_one_target():
    feats = torch.randn(3, 4) + 5
    real = torch.tensor([True, True, False])
    for seed in range(200):
        m = mask_regions(feats, torch.Generator().manual_seed(seed), "uniter", real=real, prob=0.01)
        assert int(m.targets.sum()) >= 1 and not m.targets[2]
        assert torch.equal(m.masked, m.targets) and (m.feats[m.targets] == 0).all()
    n = 6000
    m = mask_regions(torch.randn(n, 2) + 5, torch.Generator().manual_seed(1), "uniter")
    assert within_binomial(int(m.targets.sum()), n, 0.15)


def test_token_force_one_and_random_range():
    ids = torch.arange(1000, 1006).repeat(400, 1)
    maskable = torch.ones_like(ids, dtype=torch.bool)
    maskable[:, 0] = False
    out, labels = mask_tokens(ids, maskable, MASK, 5000, torch.Generator().manual_seed(0), prob=0.05,
                              force_one=True, random_range=(2000, 2100))
    chosen = labels != IGNORE
    assert chosen.any(1).all()  # every row has a target
    forced_rows = chosen.sum(1) == 1
    assert (out[forced_rows & chosen[:, 1]][:, 1] == MASK).any()
    replaced = chosen & (out != MASK) & (out != ids)
    assert replaced.any() and ((out[replaced] >= 2000) & (out[replaced] < 2100)).all()
    # rows with no maskable token stay untouched
    none_ok = torch.zeros(1, 6, dtype=torch.bool)
    o2, l2 = mask_tokens(ids[:1], none_ok, MASK, 5000, torch.Generator().manual_seed(0), force_one=True)
    assert torch.equal(o2, ids[:1]) and (l2 == IGNORE).all()
    with pytest.raises(ValueError, match="random_range"):
        mask_tokens(ids, maskable, MASK, 5000, torch.Generator(), random_range=(10, 6000))


def test_word_action_applies_one_80_10_10_draw_per_word():
    tokens = ["[CLS]"] + ["play", "##ground", "##s"] * 300 + ["[SEP]"]
    words = word_ids_from_tokens(tokens)
    ids = torch.arange(100, 100 + len(tokens))
    maskable = torch.tensor([w is not None for w in words])
    out, labels = mask_tokens(ids, maskable, MASK, VOCAB, torch.Generator().manual_seed(0), prob=0.5,
                              word_ids=words, word_action=True)
    for start in range(1, len(tokens) - 1, 3):
        piece = slice(start, start + 3)
        masked = (out[piece] == MASK).tolist()
        assert all(masked) or not any(masked)
        kept = (out[piece] == ids[piece]).tolist()
        if labels[start] != IGNORE:
            assert all(kept) or not any(kept)


def test_mismatch_picks_another_image_half_the_time():
    image_ids = ["a", "a", "b", "c", "c", "d"]
    picks = [choose_mismatch(0, image_ids, torch.Generator().manual_seed(s)) for s in range(400)]
    negatives = [p for p in picks if p is not None]
    assert abs(len(negatives) / 400 - 0.5) < 0.08
    assert all(image_ids[p] != "a" for p in negatives)
    with pytest.raises(ValueError, match="two different images"):
        choose_mismatch(0, ["a", "a"], torch.Generator().manual_seed(0), prob=1.0)


def test_mismatched_pairs_keep_their_corruption_but_lose_their_targets():
    labels = torch.tensor([IGNORE, 5, IGNORE, 9])
    assert torch.equal(drop_targets_for_mismatch(labels, True), labels)
    assert (drop_targets_for_mismatch(labels, False) == IGNORE).all()
    assert not drop_targets_for_mismatch(torch.tensor([True, False]), False).any()


def test_next_sentence_pairs():
    docs = [["a1", "a2", "a3"], ["b1", "b2"], ["c1"]]
    results = [choose_next_sentence(docs, 0, 0, torch.Generator().manual_seed(s)) for s in range(300)]
    nexts = [s for s, label in results if label == 1]
    randoms = [s for s, label in results if label == 0]
    assert set(nexts) == {"a2"}
    assert abs(len(nexts) / 300 - 0.5) < 0.1
    assert all(s[0] in "bc" for s in randoms)
    # the last sentence of a document has no next one
    assert all(choose_next_sentence(docs, 0, 2, torch.Generator().manual_seed(s))[1] == 0 for s in range(20))


def test_span_groups_cut_consecutive_spans_and_mask_whole_spans():
    from mmbert.data.masking import span_groups

    g = torch.Generator().manual_seed(0)
    groups = span_groups(200, g, geometric_p=0.2, max_span=10)
    assert len(groups) == 200 and groups[0] == 0
    assert all(b - a in (0, 1) for a, b in zip(groups, groups[1:]))  # consecutive, non-decreasing
    lengths = torch.bincount(torch.tensor(groups))
    assert int(lengths.max()) <= 10 and 2.5 < float(lengths.float().mean()) < 5.5  # SpanBERT's mean ~3.8
    ids = torch.arange(5, 205)
    _, labels = mask_tokens(ids, torch.ones(200, dtype=torch.bool), 1, 300, g, 0.3, word_ids=groups)
    chosen = (labels != -100).tolist()
    for span in set(groups):  # a span is a target as a whole or not at all
        assert len({chosen[i] for i, s in enumerate(groups) if s == span}) == 1
    with pytest.raises(ValueError, match="span masking needs"):
        span_groups(5, g, geometric_p=0.0)


def test_unimo_rule_zeroes_regions_overlapping_a_target():
    boxes = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.45, 0.5], [0.7, 0.7, 0.9, 0.9]])  # IoU(0, 1) = 0.9
    feats = torch.ones(3, 4)
    found = False
    for seed in range(300):
        m = mask_regions(feats, torch.Generator().manual_seed(seed), "unimo", boxes=boxes, prob=0.3,
                         pixel_boxes=False)  # fmt: skip
        if m.targets.tolist() == [True, False, False]:
            found = True
            assert (m.feats[:2] == 0).all() and (m.feats[2] == 1).all()  # the overlapping box is zeroed too
            assert m.masked.tolist() == [True, True, False] and m.overlap.tolist() == [True, True, False]
    assert found
