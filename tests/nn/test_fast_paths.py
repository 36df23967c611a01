"""The training fast paths give what the plain computation gives: values and gradients.

Boolean-mask dropout and the hand-written dropout attention against the formula with the same mask;
the FFN that recomputes its GELU against the plain FFN; gradient checkpointing and padding skipping
against the plain forward of every model."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import make_inputs

import mmbert
from mmbert.nn import Attention, FeedForward, compile_layers, key_padding_bias, set_gradient_checkpointing
from mmbert.nn.attention import dropout_attention
from mmbert.nn.dropout import dropout, keep_mask, masked_scale, residual_dropout

TINY = [name for name in mmbert.MODELS if name.endswith("_tiny")]


def grads(out: torch.Tensor, wrt: list[torch.Tensor], seed: int = 7) -> list[torch.Tensor]:
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    return list(torch.autograd.grad(out, wrt, g))


def test_dropout_keeps_one_minus_p_and_rescales():
    torch.manual_seed(0)
    x = torch.ones(200, 500, requires_grad=True)
    y = dropout(x, 0.25, True)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.75) < 0.01
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / 0.75))
    (gx,) = torch.autograd.grad(y.sum(), x)
    assert torch.equal(gx, y.detach())  # the same mask and scale reach the gradient
    assert dropout(x, 0.25, False) is x


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_mask_draws_each_element_independently_with_probability_one_minus_p(p):
    """Two 31-bit lanes per 64-bit draw: both lanes (even and odd elements) keep with 1 - p, the two
    lanes of one draw are uncorrelated, odd sizes are filled, and a seed reproduces the mask."""
    torch.manual_seed(0)
    keep = keep_mask((999, 1001), p, torch.device("cpu"))  # odd: the last draw's second lane unused
    assert keep.dtype == torch.bool and keep.shape == (999, 1001)
    flat = keep.flatten().float()
    n = flat.numel() // 2
    even, odd = flat[0 : 2 * n : 2], flat[1 : 2 * n : 2]
    sigma = (p * (1 - p) / n) ** 0.5
    for lane in (even, odd):
        assert abs(lane.mean().item() - (1 - p)) < 5 * sigma
    assert abs(torch.corrcoef(torch.stack([even, odd]))[0, 1].item()) < 5 / n**0.5
    torch.manual_seed(0)
    assert torch.equal(keep_mask((999, 1001), p, torch.device("cpu")), keep)
    assert bool(keep_mask((3, 5), 0.0, torch.device("cpu")).all())
    assert not bool(keep_mask((3, 5), 1 - 1e-12, torch.device("cpu")).any())  # threshold past int32


def test_masked_scale_gradient():
    keep = keep_mask((4, 6), 0.3, torch.device("cpu"))
    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: masked_scale(t, keep, 0.3), (x,))


@pytest.mark.parametrize("visibility", [False, True])
def test_dropout_attention_equals_formula_with_the_same_mask(visibility):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 4, generator=g, dtype=torch.float64).requires_grad_() for _ in range(3))
    mask = torch.ones(2, 5, 5, dtype=torch.bool) if visibility else torch.ones(2, 5, dtype=torch.bool)
    mask[1, ..., 3:] = False
    bias = key_padding_bias(mask, torch.float64)
    torch.manual_seed(5)
    out = dropout_attention(q, k, v, bias, 0.3)
    torch.manual_seed(5)
    keep = keep_mask((2, 3, 5, 5), 0.3, torch.device("cpu"))
    probs = (q @ k.transpose(-1, -2) / math.sqrt(4) + bias).softmax(-1)
    ref = torch.where(keep, probs, 0.0) / 0.7 @ v
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    for a, b in zip(grads(out, [q, k, v]), grads(ref, [q, k, v])):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_attention_module_uses_it_only_when_training_with_dropout():
    torch.manual_seed(0)
    attn = Attention(8, 2, dropout=0.0).double()
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    attn.train()
    plain = attn(x)[0]
    attn.dropout = 0.2
    attn.eval()
    torch.testing.assert_close(attn(x)[0], plain)  # eval: no dropout, SDPA
    attn.train()
    torch.manual_seed(1)
    assert not torch.allclose(attn(x)[0], plain)  # dropout active in training


def test_ffn_recomputed_activation_equals_plain():
    torch.manual_seed(0)
    for activation in ("gelu", "gelu_tanh"):
        ffn = FeedForward(6, 12, activation).double()
        x = torch.randn(3, 4, 6, dtype=torch.float64, requires_grad=True)
        fast = ffn(x)
        ffn.recompute_activation = False
        plain = ffn(x)
        torch.testing.assert_close(fast, plain, rtol=0, atol=0)
        params = [x, *ffn.parameters()]
        for a, b in zip(grads(fast, params), grads(plain, params)):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-14)


def test_ffn_recompute_under_bf16_autocast():
    ffn = FeedForward(8, 16)
    x = torch.randn(4, 8, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = ffn(x)
    y.float().sum().backward()
    assert ffn.fc2.weight.grad.dtype == torch.float32 and x.grad is not None


def _loss_and_grads(model, inputs, seed: int = 3):
    torch.manual_seed(seed)  # the same dropout masks on both runs
    enc = model(**inputs)
    loss = enc.pooled.square().sum() + (enc.text * inputs["text_mask"][..., None]).square().sum()
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    g = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
    return loss.detach(), {n: gi for (n, _), gi in zip(named, g)}


@pytest.mark.parametrize("name", TINY)
def test_gradient_checkpointing_equals_plain(name):
    torch.manual_seed(0)
    model = mmbert.build_model(name).train()
    inputs = make_inputs(model.config)
    loss, g = _loss_and_grads(model, inputs)
    assert set_gradient_checkpointing(model) > 0
    loss_c, g_c = _loss_and_grads(model, inputs)
    torch.testing.assert_close(loss_c, loss, rtol=0, atol=1e-6)
    for n in g:
        if g[n] is None:
            assert g_c[n] is None, n
        else:
            torch.testing.assert_close(g_c[n], g[n], rtol=1e-5, atol=1e-6, msg=n)


@pytest.mark.parametrize("name", TINY)
def test_skipping_padding_equals_plain(name):
    torch.manual_seed(0)
    model = mmbert.build_model(name).eval()  # no dropout: the two paths draw no random numbers
    inputs = make_inputs(model.config)
    loss, g = _loss_and_grads(model, inputs)
    model.skip_padding = False
    loss_p, g_p = _loss_and_grads(model, inputs)
    torch.testing.assert_close(loss, loss_p, rtol=1e-5, atol=1e-5)
    for n in g:
        if g[n] is not None:
            torch.testing.assert_close(g[n], g_p[n], rtol=1e-4, atol=1e-5, msg=n)


def test_plain_dropout_is_f_dropout_without_grad():
    torch.manual_seed(0)
    x = torch.randn(10, 10)
    torch.manual_seed(1)
    a = dropout(x, 0.5, True)
    torch.manual_seed(1)
    assert torch.equal(a, F.dropout(x, 0.5, True))


def test_residual_dropout_equals_residual_plus_dropout_with_the_same_mask():
    x = torch.randn(3, 4, 6, dtype=torch.float64, requires_grad=True)
    h = torch.randn(3, 4, 6, dtype=torch.float64, requires_grad=True)
    torch.manual_seed(2)
    out = residual_dropout(x, h, 0.4, True)
    torch.manual_seed(2)
    ref = x + masked_scale(h, keep_mask(h.shape, 0.4, h.device), 0.4)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-15)
    for a, b in zip(grads(out, [x, h]), grads(ref, [x, h])):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-15)
    torch.testing.assert_close(residual_dropout(x, h, 0.4, False), x + h)


def test_compile_layers_replaces_every_layer_forward():
    model = mmbert.build_model("lxmert_tiny")
    plain = {id(m): m._sublayers for m in model.modules() if hasattr(m, "_sublayers")}
    assert compile_layers(model) == len(plain) > 0
    assert all(m._sublayers is not plain[id(m)] for m in model.modules() if hasattr(m, "_sublayers"))
