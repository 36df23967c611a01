"""Masking rules: rates, replacement splits, whole words, each paper's region rule, pairs, determinism."""

from __future__ import annotations

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


def test_vilbert_rule_zeroes_overlapping_regions():
    # region 0 and 1 overlap (IoU 0.225 / 0.25 = 0.9 > 0.4); region 2 is far away
    boxes = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.45, 0.5], [0.7, 0.7, 0.9, 0.9]])
    feats = torch.ones(3, 4)
    found = False
    for seed in range(300):
        g = torch.Generator().manual_seed(seed)
        m = mask_regions(feats, g, "vilbert", boxes=boxes, prob=0.3)
        if m.targets.tolist() == [True, False, False]:
            found = True
            assert (m.feats[0] == 0).all() and (m.feats[1] == 0).all()  # the overlapping one too
            assert (m.feats[2] == 1).all()
            assert m.masked.tolist() == [True, True, False]
            m2 = mask_regions(feats, torch.Generator().manual_seed(seed), "vilbert", boxes=boxes, prob=0.3,
                              overlaps_are_targets=True)
            assert m2.targets.tolist() == [True, True, False]
    assert found
    with pytest.raises(ValueError, match="boxes"):
        mask_regions(feats, torch.Generator(), "vilbert")
    with pytest.raises(ValueError, match="unknown region masking rule"):
        mask_regions(feats, torch.Generator(), "bogus")


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
