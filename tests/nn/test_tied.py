"""TiedEmbedding: inside ``paired()`` the parameter's gradient is the plain lookup + decoder sum, delivered
in the decoder's own (V, D) buffer whenever the decoder's backward runs first."""

from __future__ import annotations

from contextlib import nullcontext

import pytest
import torch
import torch.nn.functional as F

from mmbert.nn.tied import TiedEmbedding, TiedGradient

V, D = 40, 6


def embedding(padding_idx: int | None = 0) -> TiedEmbedding:
    torch.manual_seed(0)
    return TiedEmbedding(V, D, padding_idx=padding_idx)


def ids(seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    out = torch.randint(0, V, (3, 7), generator=g)
    out[0, :2] = 0  # padding tokens (and a repeated row)
    out[1, 3] = out[1, 4]
    return out


def loss_of(e: TiedEmbedding, lookups: list[torch.Tensor], decoders: int = 1) -> torch.Tensor:
    """Each lookup summed over its tokens, a tanh, then ``decoders`` uses of the tied matrix as output."""
    h = sum(torch.tanh(e(x).sum(1)) for x in lookups)
    total = h.pow(2).sum() if decoders == 0 else 0.0
    for k in range(decoders):
        total = total + F.linear(h * (k + 1), e.decoder_weight()).logsumexp(-1).sum()
    return total


def grads(paired: bool, lookups: list[torch.Tensor], decoders: int = 1, padding_idx: int | None = 0):
    e = embedding(padding_idx)
    with e.paired() if paired else nullcontext():
        loss = loss_of(e, lookups, decoders)
    loss.backward()
    return e.weight.grad


@pytest.mark.parametrize("padding_idx", [0, None])
@pytest.mark.parametrize(("lookups", "decoders"), [(1, 1), (2, 1), (1, 2), (1, 0), (0, 1)])
def test_the_paired_gradient_equals_the_plain_sum(padding_idx, lookups, decoders):
    """One or two lookups, zero to two decoder uses, with or without a padding row: the same gradient."""
    xs = [ids(seed) for seed in range(1, lookups + 1)]
    if not xs:  # a decoder use without any lookup: the hidden state comes from elsewhere
        e = embedding(padding_idx)
        with e.paired():
            loss = F.linear(torch.ones(2, D), e.decoder_weight()).logsumexp(-1).sum()
        loss.backward()
        expected = embedding(padding_idx)
        F.linear(torch.ones(2, D), expected.weight).logsumexp(-1).sum().backward()
        torch.testing.assert_close(e.weight.grad, expected.weight.grad, rtol=0, atol=0)
        return
    plain = grads(False, xs, decoders, padding_idx)
    paired = grads(True, xs, decoders, padding_idx)
    assert not paired.is_sparse
    torch.testing.assert_close(paired, plain, rtol=1e-6, atol=1e-7)
    if padding_idx is not None and decoders == 0:
        assert paired[padding_idx].abs().max() == 0  # the padding row gets no lookup gradient


def test_the_decoder_buffer_becomes_the_gradient():
    """The decoder's (V, D) gradient is held, takes the lookup's rows in place, and is the parameter's
    gradient: no second (V, D) matrix is allocated for the sum."""
    e = embedding()
    held_ptrs: list[int] = []
    with e.paired() as pairing:
        hold = pairing.hold

        def spy(grad: torch.Tensor) -> bool:
            kept = hold(grad)
            if kept:
                held_ptrs.append(grad.data_ptr())
            return kept

        pairing.hold = spy  # type: ignore[method-assign]
        loss = loss_of(e, [ids()])
    loss.backward()
    assert held_ptrs == [e.weight.grad.data_ptr()]
    assert pairing.held is None and pairing.pending_lookups == 0


def test_accumulation_and_a_retained_graph():
    """A second backward over the same graph (retain_graph) and an existing .grad: the sums stay exact."""
    x = ids()
    e, plain = embedding(), embedding()
    with e.paired():
        loss = loss_of(e, [x])
    loss.backward(retain_graph=True)
    loss.backward()
    ref = loss_of(plain, [x])
    ref.backward(retain_graph=True)
    ref.backward()
    torch.testing.assert_close(e.weight.grad, plain.weight.grad, rtol=1e-6, atol=1e-7)


def test_outside_paired_it_is_nn_embedding():
    e = embedding()
    assert e.pairing is None and e.decoder_weight() is e.weight
    with e.paired() as pairing:
        assert isinstance(pairing, TiedGradient) and e.pairing is pairing
        with torch.no_grad():  # no graph, no pairing
            assert e.decoder_weight() is e.weight
        with e.paired() as inner:
            assert e.pairing is inner
        assert e.pairing is pairing
    assert e.pairing is None
    x = ids()
    torch.testing.assert_close(e(x), F.embedding(x, e.weight, padding_idx=0))


def test_a_gradient_that_is_not_a_whole_buffer_is_delivered_not_held():
    """A view into a larger buffer could alias another tensor: the pairing does not write into it."""
    pairing = TiedGradient()
    pairing.pending_lookups = 1
    assert not pairing.hold(torch.zeros(2 * V, D)[:V])  # part of a larger storage
    assert not pairing.hold(torch.zeros(D, V).t())  # not contiguous
    assert pairing.hold(torch.zeros(D, V).t().t())  # a fresh matrix seen through transposes
