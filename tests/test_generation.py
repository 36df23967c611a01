"""Greedy and beam search on hand-built next-token distributions."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from mmbert.generation import GenerationConfig, banned_tokens, beam_search, generate, greedy_search

EOS, A, B, C = 0, 1, 2, 3


def tree_step(tree: dict[tuple, dict[int, float]], vocab: int = 4):
    """A step from explicit next-token probabilities per prefix (missing tokens: probability 0)."""

    def step(tokens: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        out = torch.full((tokens.shape[0], vocab), -math.inf)
        for i, prefix in enumerate(tokens.tolist()):
            for tok, p in tree.get(tuple(prefix), {}).items():  # unknown: a dead beam's filler
                out[i, tok] = math.log(p)
        return out

    return step


def random_step(vocab: int = 7, batch: int = 5, seed: int = 0):
    """Next-token log-probs from a random table over (example, last token, position)."""
    g = torch.Generator().manual_seed(seed)
    table = torch.randn(batch, vocab + 1, 12, vocab, generator=g) * 2.0

    def step(tokens: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        last = tokens[:, -1] + 1 if tokens.shape[1] else torch.zeros(len(rows), dtype=torch.long)
        return table[rows, last, tokens.shape[1]].log_softmax(-1)

    return step


def test_beam_of_one_is_greedy():
    step = random_step()
    greedy = greedy_search(step, 5, EOS, GenerationConfig(max_length=10))
    assert any(h.finished for h in greedy) and any(len(h.tokens) > 1 for h in greedy)
    for cfg in (GenerationConfig(max_length=10, beam_size=1),
                GenerationConfig(max_length=10, beam_size=1, length_penalty=1.0, early_stopping=True)):  # fmt: skip
        beam = beam_search(step, 5, EOS, cfg)
        assert [h.tokens for h in beam] == [h.tokens for h in greedy]
        if cfg.length_penalty == 0:  # the beam score is then the summed log-probability, as greedy's
            assert [round(h.score, 9) for h in beam] == [round(h.score, 9) for h in greedy]
    # generate() dispatches beam_size 1 to greedy
    assert [h.tokens for h in generate(step, 5, EOS, GenerationConfig(max_length=10))] == [
        h.tokens for h in greedy
    ]


def test_beam_finds_the_better_sequence_greedy_misses():
    # greedy takes A (0.6), then the end (0.6): 0.36; B (0.4) leads to a sure end: 0.4
    tree = {(): {A: 0.6, B: 0.4}, (A,): {C: 0.4, EOS: 0.6}, (A, C): {EOS: 1.0}, (B,): {EOS: 1.0}}
    cfg = GenerationConfig(max_length=5, beam_size=2)
    assert greedy_search(tree_step(tree), 1, EOS, cfg)[0].tokens == [A]
    best = beam_search(tree_step(tree), 1, EOS, cfg)[0]
    assert best.tokens == [B] and best.finished
    assert best.score == pytest.approx(math.log(0.4))


def test_length_penalty_as_specified():
    # the empty caption has probability 0.55 (1 token with the end); [A, B] 0.45 (3 tokens)
    tree = {(): {EOS: 0.55, A: 0.45}, (A,): {B: 1.0}, (A, B): {EOS: 1.0}}
    short = beam_search(
        tree_step(tree), 1, EOS, GenerationConfig(max_length=6, beam_size=2, length_penalty=0.0)
    )
    assert short[0].tokens == [] and short[0].score == pytest.approx(math.log(0.55))
    long = beam_search(
        tree_step(tree), 1, EOS, GenerationConfig(max_length=6, beam_size=2, length_penalty=1.0)
    )
    assert long[0].tokens == [A, B] and long[0].score == pytest.approx(math.log(0.45) / 3)
    # alpha 0.5: log .55 / 1 = -0.598 vs log .45 / sqrt 3 = -0.461 -> long; alpha 0.2: -0.598 vs -0.642 -> short
    half = beam_search(
        tree_step(tree), 1, EOS, GenerationConfig(max_length=6, beam_size=2, length_penalty=0.5)
    )
    assert half[0].tokens == [A, B] and half[0].score == pytest.approx(math.log(0.45) / 3**0.5)
    low = beam_search(
        tree_step(tree), 1, EOS, GenerationConfig(max_length=6, beam_size=2, length_penalty=0.2)
    )
    assert low[0].tokens == []


def alternating(vocab: int = 4):
    """Prefers to alternate A, B, A, B ... (0.6), then C (0.3), the end token 0.01."""

    def step(tokens, rows):
        out = torch.full((tokens.shape[0], vocab), math.log(0.01))
        for i, row in enumerate(tokens.tolist()):
            nxt = B if row and row[-1] == A else A
            out[i, nxt], out[i, C], out[i, EOS] = math.log(0.6), math.log(0.3), math.log(0.01)
            out[i, ({A, B} - {nxt}).pop()] = math.log(1e-6)
        return out

    return step


@pytest.mark.parametrize("beam", [1, 3])
def test_ngram_blocking(beam):
    cfg = GenerationConfig(max_length=6, beam_size=beam, length_penalty=1.0)
    free = generate(alternating(), 1, EOS, cfg)[0]
    assert free.tokens == [A, B, A, B, A, B]
    blocked = generate(alternating(), 1, EOS, dataclasses.replace(cfg, no_repeat_ngram_size=2))
    tokens = blocked[0].tokens
    bigrams = list(zip(tokens, tokens[1:]))
    assert len(tokens) >= 3 and len(bigrams) == len(set(bigrams))
    if beam == 1:  # by hand: after A B A, B would repeat (A, B): C; then A; then B and C would repeat (A, B)
        assert tokens == [A, B, A, C, A]  # and (A, C), A (1e-6) is less likely than the end token (0.01)
    assert banned_tokens([A, B, A], 2) == {B}
    assert banned_tokens([A, B, C, A, B], 3) == {C}
    assert banned_tokens([A], 3) == set()


def test_min_and_max_length():
    def step(tokens, rows):
        return torch.tensor([[math.log(0.7), math.log(0.2), math.log(0.1), -30.0]]).expand(len(rows), 4)

    assert greedy_search(step, 2, EOS, GenerationConfig(max_length=5))[0].tokens == []
    for beam in (1, 2):
        h = generate(step, 2, EOS, GenerationConfig(max_length=5, min_length=3, beam_size=beam))
        assert [x.tokens for x in h] == [[A, A, A]] * 2 and all(x.finished for x in h)

    def never_ends(tokens, rows):
        return torch.tensor([[-50.0, -0.1, -3.0, -3.0]]).expand(len(rows), 4)

    for beam in (1, 2):
        h = generate(never_ends, 3, EOS, GenerationConfig(max_length=4, beam_size=beam))
        assert [x.tokens for x in h] == [[A] * 4] * 3 and not any(x.finished for x in h)
    with pytest.raises(ValueError, match="min_length"):
        GenerationConfig(max_length=3, min_length=4)


@pytest.mark.parametrize("beam", [1, 4])
def test_batched_equals_one_at_a_time(beam):
    step = random_step(batch=5, seed=3)
    cfg = GenerationConfig(max_length=9, beam_size=beam, length_penalty=0.7, no_repeat_ngram_size=2)
    together = generate(step, 5, EOS, cfg)
    for b in range(5):
        alone = generate(lambda tokens, rows, b=b: step(tokens, torch.full_like(rows, b)), 1, EOS, cfg)[0]
        assert alone.tokens == together[b].tokens
        assert alone.score == pytest.approx(together[b].score)


def test_beam_is_exhaustive_on_a_small_space():
    """With as many beams as the vocabulary, beam search is exact: compare with enumerating everything."""
    import itertools

    step = random_step(vocab=3, batch=1, seed=5)
    max_len, alpha = 4, 0.0
    best, best_seq = -math.inf, None

    def logp(prefix: list[int], tok: int) -> float:
        return float(step(torch.tensor(prefix, dtype=torch.long).view(1, -1), torch.tensor([0]))[0, tok])

    for n in range(1, max_len + 1):  # shorter sequences end with the end token; max_len ones are cut
        for seq in map(list, itertools.product([1, 2], repeat=n)):
            total = sum(logp(seq[:i], tok) for i, tok in enumerate(seq))
            if n < max_len:
                total += logp(seq, EOS)
            if total > best:
                best, best_seq = total, seq
    empty = float(step(torch.zeros(1, 0, dtype=torch.long), torch.tensor([0]))[0, EOS])
    if empty > best:
        best, best_seq = empty, []
    h = beam_search(step, 1, EOS, GenerationConfig(max_length=max_len, beam_size=9, length_penalty=alpha))[0]
    assert h.tokens == best_seq and h.score == pytest.approx(best)
