"""Greedy and beam search over a step function: batched, on whatever device the step runs on.

A *step* maps the tokens generated so far to the log-probabilities of the next one::

    step(tokens (N, t) long, rows (N,) long) -> log-probs (N, V)

``rows[i]`` is the batch example that hypothesis i belongs to (beam search runs ``beam_size`` hypotheses
per example), so the step can pick that example's image and prefix; the generated tokens hold no start
token (the step adds its own [CLS] / prefix). The searches are model-agnostic: captioning wraps a
single-stream encoder and its LM head in a step (``tasks/caption.py``), and the tests drive them with
hand-built distributions.

Rules, the same for both searches (so a beam of 1 is greedy):

- ``max_length`` counts generated tokens, the end token included; a hypothesis that reaches it without the
  end token ends there.
- ``min_length``: the end token is forbidden while fewer than ``min_length`` tokens precede it.
- ``no_repeat_ngram_size`` n > 0: a token that would complete an n-gram already in the hypothesis is
  forbidden (the end token included, as in fairseq / transformers).
- Beam search ranks finished hypotheses by ``sum of log-probs / length ** length_penalty`` (length = tokens
  including the end token): 0 = raw log-probability (favours short captions), 1 = per-token average,
  larger favours longer ones (transformers' convention). An end token is taken as a finished hypothesis
  only when it ranks among the best ``beam_size`` candidates of its step. An example stops when it has
  ``beam_size`` finished hypotheses and no live beam can still beat the worst of them (an exact bound:
  log-probs only fall as a beam grows), or at once with ``early_stopping``. With ``beam_size=1`` and
  ``length_penalty=0`` (or ``early_stopping``) beam search returns exactly the greedy result.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

Step = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class GenerationConfig:
    max_length: int = 20  # generated tokens, the end token included
    min_length: int = 0  # the end token is forbidden before this many tokens
    beam_size: int = 1  # 1 = greedy search
    length_penalty: float = 0.0  # beam ranking: sum log p / length ** length_penalty
    no_repeat_ngram_size: int = 0  # 0 = off
    early_stopping: bool = False  # beam: stop an example as soon as it has beam_size finished hypotheses

    def __post_init__(self) -> None:
        if self.max_length < 1:
            raise ValueError(f"generation: max_length must be >= 1, got {self.max_length}")
        if not 0 <= self.min_length <= self.max_length:
            raise ValueError(f"generation: need 0 <= min_length <= max_length, got {self.min_length}")
        if self.beam_size < 1:
            raise ValueError(f"generation: beam_size must be >= 1, got {self.beam_size}")
        if self.no_repeat_ngram_size < 0:
            raise ValueError(
                f"generation: no_repeat_ngram_size must be >= 0, got {self.no_repeat_ngram_size}"
            )


@dataclass
class Hypothesis:
    tokens: list[int]  # without the end token
    score: float  # beam: the length-normalised score; greedy: the summed log-probability
    finished: bool  # ended with the end token (False: cut at max_length)


def generate(
    step: Step, batch_size: int, eos_id: int, config: GenerationConfig, device=None
) -> list[Hypothesis]:
    """Greedy search for ``beam_size == 1``, beam search otherwise; one hypothesis per example."""
    if config.beam_size == 1:
        return greedy_search(step, batch_size, eos_id, config, device)
    return beam_search(step, batch_size, eos_id, config, device)


def banned_tokens(tokens: list[int], n: int) -> set[int]:
    """Tokens that would complete an n-gram already present in ``tokens``."""
    if n <= 0 or len(tokens) < n - 1:
        return set()
    if n == 1:
        return set(tokens)
    tail = tokens[len(tokens) - n + 1 :]
    return {tokens[i + n - 1] for i in range(len(tokens) - n + 1) if tokens[i : i + n - 1] == tail}


def constrain(logp: Tensor, tokens: Tensor, eos_id: int, config: GenerationConfig) -> Tensor:
    """Apply ``min_length`` and n-gram blocking to next-token log-probs (N, V) given tokens (N, t)."""
    logp = logp.clone()
    if tokens.shape[1] < config.min_length:
        logp[:, eos_id] = -math.inf
    n = config.no_repeat_ngram_size
    if n and tokens.shape[1] >= n - 1:
        for i, row in enumerate(tokens.tolist()):
            banned = banned_tokens(row, n)
            if banned:
                logp[i, list(banned)] = -math.inf
    return logp


def _check_logp(logp: Tensor, n: int) -> None:
    if logp.dim() != 2 or logp.shape[0] != n:
        raise ValueError(f"the step must return log-probs of shape ({n}, vocab), got {tuple(logp.shape)}")


@torch.no_grad()
def greedy_search(
    step: Step, batch_size: int, eos_id: int, config: GenerationConfig, device=None
) -> list[Hypothesis]:
    """The most probable next token at every step, until the end token or ``max_length``."""
    rows = torch.arange(batch_size, device=device)
    tokens = torch.zeros(batch_size, 0, dtype=torch.long, device=device)
    done = torch.zeros(batch_size, dtype=torch.bool, device=device)
    scores = torch.zeros(batch_size, dtype=torch.float64, device=device)
    length = torch.full((batch_size,), config.max_length, dtype=torch.long, device=device)
    for t in range(config.max_length):
        logp = step(tokens, rows)
        _check_logp(logp, batch_size)
        logp = constrain(logp.float(), tokens, eos_id, config)
        best, nxt = logp.max(-1)
        nxt = torch.where(done, torch.full_like(nxt, eos_id), nxt)
        scores += torch.where(done, torch.zeros_like(best), best).double()
        ended = ~done & (nxt == eos_id)
        length[ended] = t
        done |= ended
        tokens = torch.cat([tokens, nxt[:, None]], 1)
        if bool(done.all()):
            break
    return [
        Hypothesis(row[: int(n)], float(s), bool(d))
        for row, n, s, d in zip(tokens.tolist(), length.tolist(), scores.tolist(), done.tolist())
    ]


@torch.no_grad()
def beam_search(
    step: Step, batch_size: int, eos_id: int, config: GenerationConfig, device=None
) -> list[Hypothesis]:
    """Beam search with ``config.beam_size`` beams per example (see the module docstring for the rules)."""
    b_size, k = batch_size, config.beam_size
    alpha = config.length_penalty
    rows = torch.arange(b_size, device=device).repeat_interleave(k)
    tokens = torch.zeros(b_size * k, 0, dtype=torch.long, device=device)
    beam_scores = torch.full((b_size, k), -math.inf, dtype=torch.float64, device=device)
    beam_scores[:, 0] = 0.0  # one live beam at the start: the first step fans out from it
    finished: list[list[tuple[float, list[int], bool]]] = [[] for _ in range(b_size)]
    done = [False] * b_size

    def add(b: int, score: float, hyp: list[int], length: int, ended: bool) -> None:
        entry = (score / length**alpha, hyp, ended)
        pool = finished[b]
        if len(pool) < k or entry[0] > pool[-1][0]:
            pool.append(entry)
            pool.sort(key=lambda e: -e[0])  # stable: on a tie the earlier hypothesis stays ahead
            del pool[k:]

    for t in range(config.max_length):
        logp = step(tokens, rows)
        _check_logp(logp, b_size * k)
        logp = constrain(logp.float(), tokens, eos_id, config).double()
        vocab = logp.shape[1]
        cand = (beam_scores.reshape(-1, 1) + logp).view(b_size, k * vocab)
        top_scores, top_idx = cand.topk(min(2 * k, k * vocab), dim=1)
        all_scores, all_idx = top_scores.tolist(), top_idx.tolist()
        keep_rows = [b * k + j for b in range(b_size) for j in range(k)]  # dead slots: any row, score -inf
        keep_tok = [eos_id] * (b_size * k)
        new_scores = [-math.inf] * (b_size * k)
        prev = tokens.view(b_size, k, tokens.shape[1])
        for b in range(b_size):
            if done[b]:
                continue
            chosen = 0
            for rank, (s, idx) in enumerate(zip(all_scores[b], all_idx[b])):
                if s == -math.inf:
                    break
                beam, tok = divmod(idx, vocab)
                if tok == eos_id:
                    if rank < k:
                        add(b, s, prev[b, beam].tolist(), t + 1, True)
                    continue
                slot = b * k + chosen
                keep_rows[slot], keep_tok[slot], new_scores[slot] = b * k + beam, tok, s
                chosen += 1
                if chosen == k:
                    break
            best_live = max(new_scores[b * k : (b + 1) * k])
            if len(finished[b]) == k:
                if config.early_stopping or best_live == -math.inf:
                    done[b] = True
                else:
                    longest = config.max_length if alpha > 0 else t + 2  # where a live beam scores best
                    done[b] = best_live / longest**alpha <= finished[b][-1][0]
        keep = torch.tensor(keep_rows, device=tokens.device)
        nxt = torch.tensor(keep_tok, device=tokens.device)
        tokens = torch.cat([tokens[keep], nxt[:, None]], 1)
        beam_scores = torch.tensor(new_scores, dtype=torch.float64, device=tokens.device).view(b_size, k)
        if all(done):
            break
    else:  # max_length reached: live beams end there, without the end token
        for b in range(b_size):
            if done[b]:
                continue
            for j in range(k):
                s = float(beam_scores[b, j])
                if s > -math.inf:
                    add(b, s, tokens[b * k + j].tolist(), config.max_length, False)
    out = []
    for b in range(b_size):
        if not finished[b]:  # every continuation was forbidden from the first step
            out.append(Hypothesis([], -math.inf, False))
            continue
        score, hyp, ended = finished[b][0]
        out.append(Hypothesis(hyp, float(score), ended))
    return out
