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


def hand_cmcl(images, texts, positive, valid, image_positive, tau):
    """The module docstring's two directions, one exp at a time (plain floats)."""

    def s(v, t):
        return math.exp(float(v @ t / (v.norm() * t.norm())) / tau)

    b, k = positive.shape
    cands = [(i, j) for i in range(b) for j in range(k) if valid[i, j]]

    def pos(v, i, j):
        return bool(positive[i, j] and image_positive[v, i])

    i2t = sum(-math.log(sum(s(images[v], texts[c]) for c in cands if pos(v, *c))
                        / sum(s(images[v], texts[c]) for c in cands)) for v in range(b)) / b  # fmt: skip
    anchors = [c for c in cands if positive[c]]
    t2i = sum(-math.log(sum(s(images[v], texts[c]) for v in range(len(images)) if pos(v, *c))
                        / sum(s(images[v], texts[c]) for v in range(len(images)))) for c in anchors)  # fmt: skip
    return i2t, t2i / len(anchors)


def test_retrieved_images_are_extra_positives_of_their_pairs():
    torch.manual_seed(0)
    image, retrieved = torch.randn(3, 4), torch.randn(2, 4)
    texts = torch.randn(3, 3, 4)
    positive = torch.tensor([[True, True, False], [True, False, False], [True, False, True]])
    valid = torch.tensor([[True, True, True], [True, True, False], [True, True, True]])
    # pair 1 shows the same image as pair 0; retrieved 0 belongs to pair 0, retrieved 1 to pairs 0 and 2
    image_positive = torch.tensor([[1, 1, 0], [1, 1, 0], [0, 0, 1], [1, 0, 0], [1, 0, 1]], dtype=torch.bool)
    tau = 0.3
    out = cmcl_loss(image, texts, positive, valid, tau, retrieved=retrieved, image_positive=image_positive)
    i2t, t2i = hand_cmcl(torch.cat([image, retrieved]), texts, positive, valid, image_positive, tau)
    assert out.metrics["cmcl_i2t"] == pytest.approx(i2t, rel=1e-5)
    assert out.metrics["cmcl_t2i"] == pytest.approx(t2i, rel=1e-5)
    assert float(out.loss) == pytest.approx((i2t + t2i) / 2, rel=1e-5)
    # the own image is a positive even when the mask leaves it out
    no_diag = image_positive.clone()
    no_diag[2, 2] = False
    assert float(cmcl_loss(image, texts, positive, valid, tau, retrieved=retrieved, image_positive=no_diag).loss) \
        == pytest.approx(float(out.loss), rel=1e-6)  # fmt: skip
    # a retrieved image's pull: the loss falls when it moves towards its pairs' captions
    closer = retrieved.clone()
    closer[0] = texts[0, 0]
    assert float(cmcl_loss(image, texts, positive, valid, tau, retrieved=closer,
                           image_positive=image_positive).metrics["cmcl_t2i"]) < t2i  # fmt: skip
    with pytest.raises(ValueError, match=r"image_positive must be \(5, 3\)"):
        cmcl_loss(image, texts, positive, valid, tau, retrieved=retrieved, image_positive=image_positive[:3])
    with pytest.raises(ValueError, match="retrieved images need image_positive"):
        cmcl_loss(image, texts, positive, valid, tau, retrieved=retrieved)
