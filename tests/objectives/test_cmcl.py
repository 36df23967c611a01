"""CMCL's InfoNCE against the formula written out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from mmbert.objectives.cmcl import cmcl_loss


def test_cmcl_matches_the_formula():
    image = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    texts = torch.tensor([[[1.0, 0.0], [1.0, 1.0], [0.2, 1.0]], [[0.0, 1.0], [1.0, 0.0], [5.0, 5.0]]])
    positive = torch.tensor([[True, True, False], [True, False, False]])
    valid = torch.tensor([[True, True, True], [True, True, False]])
    tau = 0.5

    def cos(a, b):
        return float(a @ b / (a.norm() * b.norm()))

    cands = [(i, j) for i in range(2) for j in range(3) if valid[i, j]]
    i2t = 0.0
    for b in range(2):
        s = {c: math.exp(cos(image[b], texts[c]) / tau) for c in cands}
        pos = sum(v for (i, j), v in s.items() if i == b and positive[i, j])
        i2t += -math.log(pos / sum(s.values()))
    i2t /= 2
    t2i, n = 0.0, 0
    for i, j in cands:
        if positive[i, j]:
            s = [math.exp(cos(image[b], texts[i, j]) / tau) for b in range(2)]
            t2i += -math.log(s[i] / sum(s))
            n += 1
    t2i /= n
    out = cmcl_loss(image, texts, positive, valid, temperature=tau)
    assert out.metrics["cmcl_i2t"] == pytest.approx(i2t, rel=1e-5)
    assert out.metrics["cmcl_t2i"] == pytest.approx(t2i, rel=1e-5)
    assert float(out.loss) == pytest.approx((i2t + t2i) / 2, rel=1e-5)
    assert out.metrics["cmcl_acc"] == 1.0
    one_way = cmcl_loss(image, texts, positive, valid, temperature=tau, symmetric=False)
    assert float(one_way.loss) == pytest.approx(i2t, rel=1e-5)


def test_cmcl_refuses_bad_input():
    x, t = torch.randn(2, 4), torch.randn(2, 3, 4)
    ok = torch.ones(2, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match="temperature must be positive"):
        cmcl_loss(x, t, ok, ok, temperature=0)
    with pytest.raises(ValueError, match="at least one positive"):
        cmcl_loss(x, t, torch.zeros_like(ok), ok)
    with pytest.raises(ValueError, match=r"must be \(2, 3\)"):
        cmcl_loss(x, t, ok[:, :2], ok)
