from __future__ import annotations

import math

import pytest
import torch

from mmbert.nn import Attention, Block, CrossBlock, key_padding_bias


def reference_attention(attn: Attention, x, context, mask):
    """Plain softmax(QK^T/sqrt(d) + mask) V written out, for checking the fused path."""
    if attn.is_cross:
        q = attn.q(x)
        k, v = attn.kv(context).chunk(2, -1)
    else:
        q, k, v = attn.qkv(x).chunk(3, -1)
    b, t, _ = q.shape
    h, d = attn.num_heads, attn.head_dim
    q, k, v = (z.view(b, -1, h, d).transpose(1, 2) for z in (q, k, v))
    scores = q @ k.transpose(-1, -2) / math.sqrt(d)
    if mask is not None:
        scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
    out = scores.softmax(-1) @ v
    return attn.out(out.transpose(1, 2).reshape(b, t, h * d)), scores.softmax(-1)


@pytest.mark.parametrize("cross", [False, True])
def test_fused_and_explicit_paths_match_the_formula(cross):
    torch.manual_seed(0)
    attn = Attention(24, 3, context_dim=20 if cross else None, inner_dim=30 if cross else None).eval()
    x = torch.randn(2, 5, 24)
    ctx = torch.randn(2, 7, 20) if cross else None
    mask = torch.ones(2, 7 if cross else 5, dtype=torch.bool)
    mask[1, -2:] = False
    bias = key_padding_bias(mask, x.dtype)
    expected, expected_probs = reference_attention(attn, x, ctx, mask)
    fast, none = attn(x, ctx, bias)
    slow, probs = attn(x, ctx, bias, need_weights=True)
    assert none is None
    torch.testing.assert_close(fast, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(slow, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(probs, expected_probs, atol=1e-6, rtol=1e-5)
    assert probs[1, :, :, -2:].abs().max() == 0  # masked keys get exactly no weight


def test_all_true_mask_needs_no_bias_and_fully_masked_rows_stay_finite():
    assert key_padding_bias(torch.ones(2, 3, dtype=torch.bool), torch.float32) is None
    attn = Attention(8, 2, context_dim=8).eval()
    bias = key_padding_bias(torch.zeros(1, 4, dtype=torch.bool), torch.float32)
    out, _ = attn(torch.randn(1, 2, 8), torch.randn(1, 4, 8), bias)
    assert torch.isfinite(out).all()


def test_masks_must_be_boolean():
    with pytest.raises(TypeError, match="boolean"):
        key_padding_bias(torch.ones(2, 3), torch.float32)


def test_self_attention_refuses_a_context_and_cross_needs_one():
    with pytest.raises(ValueError, match="self-attention"):
        Attention(8, 2)(torch.randn(1, 2, 8), torch.randn(1, 3, 8))
    with pytest.raises(ValueError, match="context"):
        Attention(8, 2, context_dim=8)(torch.randn(1, 2, 8))
    with pytest.raises(ValueError, match="divisible"):
        Attention(10, 3)


def test_block_is_post_ln():
    torch.manual_seed(0)
    block = Block(16, 2, 32, dropout=0.0, attn_dropout=0.0).eval()
    x = torch.randn(2, 4, 16)
    h, _ = block.attn(x)
    y = block.norm1(x + h)
    y = block.norm2(y + block.ffn(y))
    torch.testing.assert_close(block(x)[0], y)


def test_cross_block_with_and_without_ffn():
    torch.manual_seed(0)
    x, ctx = torch.randn(2, 3, 16), torch.randn(2, 5, 12)
    plain = CrossBlock(16, 12, 2, dropout=0.0, attn_dropout=0.0).eval()
    h, _ = plain.attn(x, ctx)
    torch.testing.assert_close(plain(x, ctx)[0], plain.norm1(x + h))
    assert plain.ffn is None
    with_ffn = CrossBlock(16, 12, 2, ffn_dim=24, inner_dim=20).eval()
    out, probs = with_ffn(x, ctx, need_weights=True)
    assert out.shape == x.shape and probs.shape == (2, 2, 3, 5)


def test_rows_skip_padding_with_the_same_values_at_real_positions():
    """``rows`` packs the real positions through the projections and FFN: identical real outputs,
    zeros at padding, and the same gradients for the parameters."""
    torch.manual_seed(0)
    x, ctx = torch.randn(3, 6, 16), torch.randn(3, 4, 12)
    rows = torch.ones(3, 6, dtype=torch.bool)
    rows[1, 4:] = False
    rows[2, 1:] = False
    bias = key_padding_bias(rows, x.dtype)
    for block, args in (
        (Block(16, 2, 24), (bias,)),
        (CrossBlock(16, 12, 2, ffn_dim=24, inner_dim=20), (ctx, None)),
    ):
        block.eval()
        full, _ = block(x, *args)
        packed, _ = block(x, *args, rows=rows)
        torch.testing.assert_close(packed[rows], full[rows], atol=1e-6, rtol=1e-5)
        assert packed[~rows].abs().max() == 0
        grads = []
        for r in (None, rows):
            block.zero_grad()
            out, _ = block(x, *args, rows=r)
            out[rows].pow(2).sum().backward()
            grads.append([p.grad.clone() for p in block.parameters()])
        for a, b in zip(*grads):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
