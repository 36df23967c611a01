"""Attention visibility masks as data: who may attend to whom, (B, L, L) boolean, True = visible.

One rule builds every mask (``attention_mask``): each position is either *context* (seen by
everyone, sees only context) or *generated* (decoded left to right: sees all context and the generated
positions up to and including itself). Padded positions are never visible as keys. The named modes
are that rule applied to a layout:

- ``bidirectional_mask`` — everything is context (BERT, every encoder).
- ``seq2seq_mask`` — ``[source ; target]``: the source is fully visible to itself, the target causal
  (UniLM's / UNIMO's ``gen_seq2seq_mask``, PaddlePaddle/Research ``NLP/UNIMO/src/reader/batching.py``).
- ``captioning_mask`` — regions and object tags see each other only; caption tokens see all of them
  and the earlier caption tokens (UNIMO's ``img2txt_reader``); the caption can go first for models
  whose joint sequence is ``[text ; vision]``.

Training and generation use the same builder: a decoder step just marks one more position as
generated. Rows of padded query positions follow their role (they are never fully masked, so no NaN);
their outputs are meaningless and the models zero them. ``key_padding_bias`` turns a mask into the
additive SDPA bias; pass the real positions as ``rows=`` to ``Block`` to keep skipping padding.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _check_flags(name: str, flags: Tensor, dims: int = 2) -> None:
    if flags.dtype != torch.bool:
        raise TypeError(f"{name} must be boolean, got dtype {flags.dtype}")
    if flags.dim() != dims:
        raise ValueError(f"{name} must be (batch, length), got shape {tuple(flags.shape)}")


def attention_mask(real: Tensor, generated: Tensor | None = None) -> Tensor:
    """The one mask builder. real (B, L): True at real positions; generated (B, L): True at positions
    decoded left to right (None = none, i.e. bidirectional).

    ``visible[b, i, j] = real[b, j] and (not generated[b, j] or (generated[b, i] and j <= i))``.
    """
    _check_flags("real", real)
    if generated is None:
        generated = torch.zeros_like(real)
    _check_flags("generated", generated)
    if generated.shape != real.shape:
        raise ValueError(f"generated has shape {tuple(generated.shape)}, real has {tuple(real.shape)}")
    length = real.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=real.device).tril()  # j <= i
    seen_generated = generated[:, :, None] & generated[:, None, :] & causal  # (B, Lq, Lk)
    return real[:, None, :] & (~generated[:, None, :] | seen_generated)


def bidirectional_mask(real: Tensor) -> Tensor:
    """Every real position visible to every position: (B, L, L)."""
    return attention_mask(real)


def seq2seq_mask(source_mask: Tensor, target_mask: Tensor) -> Tensor:
    """The layout ``[source ; target]``: source (B, S) fully visible, target (B, T) causal -> (B, S+T, S+T)."""
    _check_flags("source_mask", source_mask)
    _check_flags("target_mask", target_mask)
    generated = torch.cat([torch.zeros_like(source_mask), torch.ones_like(target_mask)], 1)
    return attention_mask(torch.cat([source_mask, target_mask], 1), generated)


def captioning_mask(
    caption_mask: Tensor,
    visual_mask: Tensor,
    tag_mask: Tensor | None = None,
    caption_first: bool = False,
) -> Tensor:
    """Image captioning: visual (B, R) and tag (B, G) tokens see each other only; caption tokens (B, T)
    see all of them and the earlier caption tokens.

    The layout is ``[visual ; tags ; caption]`` (UNIMO), or ``[caption ; visual ; tags]`` with
    ``caption_first`` (the single-stream models, whose joint sequence is ``[text ; vision]``).
    """
    context = [visual_mask] if tag_mask is None else [visual_mask, tag_mask]
    for name, m in zip(("visual_mask", "tag_mask"), context):
        _check_flags(name, m)
    _check_flags("caption_mask", caption_mask)
    context_mask = torch.cat(context, 1)
    parts = [(caption_mask, True), (context_mask, False)]
    if not caption_first:
        parts.reverse()
    real = torch.cat([m for m, _ in parts], 1)
    generated = torch.cat([torch.full_like(m, gen) for m, gen in parts], 1)
    return attention_mask(real, generated)
