"""Each mask mode pinned against a matrix written out by hand (1 = the row's query sees the column's key)."""

from __future__ import annotations

import math

import pytest
import torch

from mmbert.nn import Attention, Block, key_padding_bias
from mmbert.nn.masks import attention_mask, bidirectional_mask, captioning_mask, seq2seq_mask


def flags(*values: int) -> torch.Tensor:
    return torch.tensor([values], dtype=torch.bool)


def grid(rows: list[str]) -> torch.Tensor:
    return torch.tensor([[[c == "1" for c in r] for r in rows]])


def test_bidirectional_hides_only_padded_keys():
    expected = grid(["1110", "1110", "1110", "1110"])
    assert torch.equal(bidirectional_mask(flags(1, 1, 1, 0)), expected)


def test_seq2seq_source_fully_visible_target_causal():
    # source s0 s1 (s2 padded) ; target t0 t1 t2 (t3 padded)
    expected = grid(
        [
            "1100000",  # s0: the source only
            "1100000",
            "1100000",  # padded source row: as a source position
            "1101000",  # t0: source + itself
            "1101100",
            "1101110",
            "1101110",  # padded target row: never its own (padded) key
        ]
    )
    got = seq2seq_mask(flags(1, 1, 0), flags(1, 1, 1, 0))
    assert torch.equal(got, expected)


def test_captioning_regions_and_tags_see_each_other_caption_sees_all_and_earlier_caption():
    # [v0 v1 ; g0 ; c0 c1 c2]
    expected = grid(["111000", "111000", "111000", "111100", "111110", "111111"])
    got = captioning_mask(flags(1, 1, 1), flags(1, 1), flags(1))
    assert torch.equal(got, expected)


def test_captioning_with_the_caption_first_and_padding():
    # [c0 c1 (c2 padded) ; v0 v1 (v2 padded)]
    expected = grid(["100110", "110110", "110110", "000110", "000110", "000110"])
    got = captioning_mask(flags(1, 1, 0), flags(1, 1, 0), caption_first=True)
    assert torch.equal(got, expected)


def test_a_generated_position_in_the_middle_follows_the_same_rule():
    # context, generated, context, generated: generated rows see every context and earlier generated keys
    got = attention_mask(flags(1, 1, 1, 1), flags(0, 1, 0, 1))
    assert torch.equal(got, grid(["1010", "1110", "1010", "1111"]))


def test_bad_masks_are_refused_by_name():
    with pytest.raises(TypeError, match="caption_mask must be boolean"):
        captioning_mask(torch.ones(1, 2), flags(1))
    with pytest.raises(ValueError, match="source_mask must be"):
        seq2seq_mask(torch.ones(2, dtype=torch.bool), flags(1))
    with pytest.raises(ValueError, match="visibility masks"):
        key_padding_bias(torch.ones(1, 2, 2, 2, dtype=torch.bool), torch.float32)


def test_attention_with_a_visibility_mask_matches_the_formula():
    torch.manual_seed(0)
    attn = Attention(12, 3).eval()
    x = torch.randn(2, 5, 12)
    visible = torch.cat(
        [seq2seq_mask(flags(1, 1), flags(1, 1, 1)), captioning_mask(flags(1, 1, 0), flags(1, 1))]
    )
    q, k, v = (t.view(2, 5, 3, 4).transpose(1, 2) for t in attn.qkv(x).chunk(3, -1))
    scores = (q @ k.transpose(-1, -2) / math.sqrt(4)).masked_fill(~visible[:, None], float("-inf"))
    expected = attn.out((scores.softmax(-1) @ v).transpose(1, 2).reshape(2, 5, 12))
    bias = key_padding_bias(visible, x.dtype)
    assert bias.shape == (2, 1, 5, 5)
    fast, _ = attn(x, bias=bias)
    slow, probs = attn(x, bias=bias, need_weights=True)
    torch.testing.assert_close(fast, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(slow, expected, atol=1e-5, rtol=1e-5)
    assert probs.masked_select(~visible[:, None].expand_as(probs)).abs().max() == 0


def test_block_skips_padded_rows_under_a_visibility_mask():
    torch.manual_seed(0)
    block = Block(12, 3, 24).eval()
    real = torch.cat([flags(1, 1, 1, 1, 1), flags(1, 1, 0, 1, 0)])
    visible = seq2seq_mask(real[:, :2], real[:, 2:])
    x = torch.randn(2, 5, 12)
    bias = key_padding_bias(visible, x.dtype)
    full, _ = block(x, bias)
    packed, _ = block(x, bias, rows=real)
    torch.testing.assert_close(packed[real], full[real], atol=1e-5, rtol=1e-5)
    assert packed[~real].abs().max() == 0
