"""A layer computed only at the rows a loss reads (``keep``) gives, at those rows, exactly what the full
layer gives: values and gradients w.r.t. its input and every parameter, with padding, key-padding and
visibility biases, dropout at p=0 (the hand-written dropout-attention path included) and checkpointing."""

from __future__ import annotations

import pytest
import torch

from mmbert.nn import key_padding_bias
from mmbert.nn.block import Block, CrossBlock


def _setup(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    b, t, d = 3, 7, 16
    x = torch.randn(b, t, d, generator=g)
    real = torch.ones(b, t, dtype=torch.bool)
    real[1, 5:] = False
    real[2, 3:] = False
    keep = torch.zeros(b, t, dtype=torch.bool)
    keep[0, [0, 4]] = True
    keep[1, [0, 2, 6]] = True  # 6 is padding: comes out zero as any padded row
    keep[2, 1] = True
    return x, real, keep


def _compare(layer, call, x, keep, real):
    """Full and kept forward of ``call(layer, x, keep)``; values and gradients at the kept real rows."""
    used = keep & real
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(5))
    results = []
    for k in (None, keep):
        xin = x.clone().requires_grad_(True)
        out, _ = call(layer, xin, k)
        loss = (out * g * used[..., None]).sum()
        grads = torch.autograd.grad(loss, [xin, *layer.parameters()])
        results.append((out, grads))
    (full, full_grads), (kept, kept_grads) = results
    assert torch.allclose(kept[used], full[used], atol=1e-6, rtol=1e-6)
    assert not kept[~keep].any()  # unneeded rows come out as zeros
    for a, b in zip(full_grads, kept_grads, strict=True):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("mask", ["none", "padding", "visibility"])
@pytest.mark.parametrize("mode", ["eval", "train_p0", "checkpointing"])
@pytest.mark.parametrize("skip_padding", [True, False])
def test_block_at_kept_rows_equals_the_full_layer(mask, mode, skip_padding):
    torch.manual_seed(0)
    x, real, keep = _setup()
    layer = Block(16, 2, 32, dropout=0.0, attn_dropout=0.0)
    if mode != "eval":
        layer.train()
        layer.attn.dropout = 1e-12 if mode == "train_p0" else 0.0  # > 0: the dropout-attention path
        layer.checkpointing = mode == "checkpointing"
    else:
        layer.eval()
    if mask == "none":
        real = torch.ones_like(real)
        visible = None
    elif mask == "padding":
        visible = real
    else:  # causal visibility within the real rows
        visible = torch.tril(torch.ones(7, 7, dtype=torch.bool))[None] & real[:, None, :]
    bias = key_padding_bias(visible, x.dtype)
    rows = real if (bias is not None and skip_padding) else None
    _compare(layer, lambda m, xin, k: m(xin, bias, rows=rows, keep=k), x, keep, real)


@pytest.mark.parametrize("ffn", [None, 24])
def test_cross_block_at_kept_rows_equals_the_full_layer(ffn):
    x, real, keep = _setup(1)
    context = torch.randn(3, 5, 12, generator=torch.Generator().manual_seed(2))
    context_real = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0]], dtype=torch.bool)
    layer = CrossBlock(16, 12, 2, ffn, inner_dim=8, dropout=0.0, attn_dropout=0.0).eval()
    bias = key_padding_bias(context_real, x.dtype)
    _compare(layer, lambda m, xin, k: m(xin, context, bias, rows=real, keep=k), x, keep, real)


def test_kept_rows_refuse_attention_maps_and_bad_masks():
    x, real, keep = _setup()
    layer = Block(16, 2, 32).eval()
    with pytest.raises(ValueError, match="attention maps cover every query"):
        layer(x, None, need_weights=True, keep=keep)
    with pytest.raises(ValueError, match="keep must be a boolean"):
        layer(x, None, keep=keep.long())
