"""Post-LN Transformer layers: ``Block`` (self-attention + FFN) and ``CrossBlock`` (cross-attention)."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from mmbert.nn.attention import Attention, at_rows, unpack_rows
from mmbert.nn.dropout import residual_dropout
from mmbert.nn.feedforward import FeedForward


def run_sublayers(layer: nn.Module, need_weights: bool, *args: object) -> tuple[Tensor, Tensor | None]:
    """``layer._sublayers(*args)``, recomputed in the backward pass instead of kept when the layer's
    ``checkpointing`` is on (training with gradients; ``EncoderModel.set_gradient_checkpointing``).
    The recomputation replays the same dropout masks (the RNG state is restored)."""
    if layer.checkpointing and layer.training and torch.is_grad_enabled() and not need_weights:
        return checkpoint(layer._sublayers, *args, use_reentrant=False)
    return layer._sublayers(*args)


class Block(nn.Module):
    """``x = norm1(x + attn(x)); x = norm2(x + ffn(x))`` — BERT's layer, used by every model."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        ffn_dim: int,
        dropout: float = 0.1,
        attn_dropout: float = 0.1,
        eps: float = 1e-12,
    ) -> None:
        super().__init__()
        self.attn = Attention(dim, num_heads, attn_dropout)
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.ffn = FeedForward(dim, ffn_dim)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.dropout = dropout
        self.checkpointing = False

    def forward(
        self,
        x: Tensor,
        bias: Tensor | None = None,
        need_weights: bool = False,
        rows: Tensor | None = None,
        keep: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """x (B, T, D); bias (B, 1, 1, T) or, from a visibility mask, (B, 1, T, T).
        Returns the new x and, if asked, attention probs (B, H, T, T).

        ``rows`` (bool (B, T), the real positions; ``bias`` must mask the others) skips the padding in
        every projection and in the FFN: real positions get the same values, padded ones zeros.
        ``keep`` (bool (B, T)): the only positions whose output is read (a last layer under losses that
        read a few rows; see ``EncoderModel.run_blocks``): keys and values still come from every real row, queries, the
        output projection, residuals, norms and FFN only from these; the others come out as zeros.
        """
        if keep is not None:
            x, rows, keep = kept_args(x, rows, keep, need_weights)
            return run_sublayers(self, False, x, bias, False, rows, keep)[0], None
        if rows is not None and not need_weights:
            return unpack_rows(run_sublayers(self, False, x[rows], bias, False, rows)[0], rows), None
        return run_sublayers(self, need_weights, x, bias, need_weights, None)

    def _sublayers(
        self, x: Tensor, bias: Tensor | None, need_weights: bool, rows: Tensor | None, keep: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        h, probs = self.attn(x, bias=bias, need_weights=need_weights, rows=rows, keep=keep)
        if keep is not None:  # the residual stream continues at the kept rows only
            x = at_rows(x, rows, keep)
        x = self.norm1(residual_dropout(x, h, self.dropout, self.training))
        x = self.norm2(residual_dropout(x, self.ffn(x), self.dropout, self.training))
        return (x if keep is None else unpack_rows(x, keep)), probs


def kept_args(
    x: Tensor, rows: Tensor | None, keep: Tensor, need_weights: bool
) -> tuple[Tensor, Tensor | None, Tensor]:
    """(x packed over ``rows`` where given, rows, keep restricted to the real rows): a layer's input on
    the ``keep`` path, which the layer unpacks over ``keep`` at its end (inside a checkpoint, too)."""
    if need_weights:
        raise ValueError("attention maps cover every query: a layer computed only at kept rows cannot return them")
    if keep.shape != x.shape[:2] or keep.dtype != torch.bool:
        raise ValueError(f"keep must be a boolean (batch, positions) {tuple(x.shape[:2])} mask, got "
                         f"{keep.dtype} {tuple(keep.shape)}")  # fmt: skip
    if rows is None:
        return x, None, keep
    return x[rows], rows, keep & rows


class CrossBlock(nn.Module):
    """``x = norm(x + cross_attn(x, context))``, optionally followed by a residual FFN sublayer.

    LXMERT uses it without FFN (one instance serves both directions); ViLBERT's co-attention uses two
    instances with their own FFNs, and an inner width that differs from the streams'.
    """

    def __init__(
        self,
        dim: int,
        context_dim: int,
        num_heads: int,
        ffn_dim: int | None = None,
        inner_dim: int | None = None,
        dropout: float = 0.1,
        attn_dropout: float = 0.1,
        eps: float = 1e-12,
    ) -> None:
        super().__init__()
        self.attn = Attention(dim, num_heads, attn_dropout, context_dim=context_dim, inner_dim=inner_dim)
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.ffn = FeedForward(dim, ffn_dim) if ffn_dim else None
        self.norm2 = nn.LayerNorm(dim, eps=eps) if ffn_dim else None
        self.dropout = dropout
        self.checkpointing = False

    def forward(
        self,
        x: Tensor,
        context: Tensor,
        bias: Tensor | None = None,
        need_weights: bool = False,
        rows: Tensor | None = None,
        keep: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """x (B, T, D) queries; context (B, S, Dc); bias (B, 1, 1, S) or (B, 1, T, S) over the context's keys.
        ``rows`` (bool (B, T), the real queries) skips the padded queries, as in ``Block``; ``keep``
        computes only the queries whose output is read (the others come out as zeros), as in ``Block``."""
        if keep is not None:
            x, rows, keep = kept_args(x, rows, keep, need_weights)
            return run_sublayers(self, False, x, context, bias, False, rows, keep)[0], None
        if rows is not None and not need_weights:
            return unpack_rows(run_sublayers(self, False, x[rows], context, bias, False, rows)[0], rows), None
        return run_sublayers(self, need_weights, x, context, bias, need_weights, None)

    def _sublayers(
        self,
        x: Tensor,
        context: Tensor,
        bias: Tensor | None,
        need_weights: bool,
        rows: Tensor | None,
        keep: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        h, probs = self.attn(x, context, bias=bias, need_weights=need_weights, rows=rows, keep=keep)
        if keep is not None:
            x = at_rows(x, rows, keep)
        x = self.norm1(residual_dropout(x, h, self.dropout, self.training))
        if self.ffn is not None:
            x = self.norm2(residual_dropout(x, self.ffn(x), self.dropout, self.training))
        return (x if keep is None else unpack_rows(x, keep)), probs


def set_gradient_checkpointing(module: nn.Module, enabled: bool = True) -> int:
    """Turn activation checkpointing on (or off) in every ``Block`` / ``CrossBlock`` inside ``module``:
    each layer keeps only its input for the backward pass and recomputes the rest there (about a third
    more compute for a fraction of the activation memory). Returns how many layers it changed."""
    layers = [m for m in module.modules() if isinstance(m, (Block, CrossBlock))]
    for layer in layers:
        layer.checkpointing = enabled
    return len(layers)


def compile_layers(module: nn.Module, **options: object) -> int:
    """``torch.compile`` each ``Block`` / ``CrossBlock``'s sublayers inside ``module`` (an optional path:
    ``options`` go to ``torch.compile``; ``dynamic=True`` by default, since packed rows change with
    every batch's padding). The model keeps its Python control flow, masks and padding skipping; the
    compiler fuses each layer's bias / activation / residual / LayerNorm passes. Compile once per
    process (seconds to a minute); measured in ``benchmarks/bench_inference.py --compile``.
    Returns how many layers it compiled."""
    options = {"dynamic": True, **options}
    layers = [m for m in module.modules() if isinstance(m, (Block, CrossBlock))]
    for layer in layers:
        layer._sublayers = torch.compile(layer._sublayers, **options)  # type: ignore[method-assign]
    return len(layers)
