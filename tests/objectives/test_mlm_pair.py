from __future__ import annotations

import math

import pytest
import torch

from mmbert.objectives import MaskedLM, PairMatch, mlm_positions


def test_mlm_hand_computed():
    # Two labelled tokens, vocabulary of 3. Logits chosen so the CE is easy to write down.
    logits = torch.tensor([[[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 9.0]]])
    labels = torch.tensor([[-100, 0, 1]])
    out = MaskedLM()(logits, labels)
    ce1 = -math.log(math.exp(2) / (math.exp(2) + 2))
    ce2 = -math.log(1 / (2 + math.exp(9)))
    assert out.loss.item() == pytest.approx((ce1 + ce2) / 2, rel=1e-6)
    assert out.metrics["mlm_acc"] == pytest.approx(0.5) and out.metrics["mlm_count"] == 2
    gathered = MaskedLM()(logits[mlm_positions(labels)], labels)
    assert gathered.loss.item() == pytest.approx(out.loss.item(), rel=1e-7)


def test_mlm_all_ignored_is_finite_and_differentiable():
    logits = torch.randn(2, 4, 5, requires_grad=True)
    out = MaskedLM()(logits, torch.full((2, 4), -100))
    assert out.loss.item() == 0.0
    out.loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_mlm_shape_errors():
    with pytest.raises(ValueError, match="do not match"):
        MaskedLM()(torch.zeros(1, 3, 5), torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="labels mark 1 targets"):
        MaskedLM()(torch.zeros(2, 5), torch.tensor([[-100, 3]]))


def test_pair_match_hand_computed_and_ignore():
    logits = torch.tensor([[0.0, math.log(3.0)], [1.0, 1.0], [5.0, -5.0]])
    labels = torch.tensor([1, 0, -100])
    out = PairMatch("nsp")(logits, labels)
    expected = (-math.log(3 / 4) + math.log(2)) / 2
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)
    assert out.metrics["nsp_acc"] == pytest.approx(1.0)  # argmax of [1, 1] is 0: correct for label 0
    empty = PairMatch()(logits, torch.full((3,), -100))
    assert empty.loss.item() == 0.0
