"""Post-LN Transformer layers: ``Block`` (self-attention + FFN) and ``CrossBlock`` (cross-attention)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from mmbert.nn.attention import Attention, unpack_rows
from mmbert.nn.feedforward import FeedForward


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

    def forward(
        self, x: Tensor, bias: Tensor | None = None, need_weights: bool = False, rows: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """x (B, T, D); bias (B, 1, 1, T) or, from a visibility mask, (B, 1, T, T).
        Returns the new x and, if asked, attention probs (B, H, T, T).

        ``rows`` (bool (B, T), the real positions; ``bias`` must mask the others) skips the padding in
        every projection and in the FFN: real positions get the same values, padded ones zeros.
        """
        if rows is not None and not need_weights:
            return unpack_rows(self._sublayers(x[rows], bias, False, rows)[0], rows), None
        return self._sublayers(x, bias, need_weights, None)

    def _sublayers(
        self, x: Tensor, bias: Tensor | None, need_weights: bool, rows: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        h, probs = self.attn(x, bias=bias, need_weights=need_weights, rows=rows)
        x = self.norm1(x + F.dropout(h, self.dropout, self.training))
        x = self.norm2(x + F.dropout(self.ffn(x), self.dropout, self.training))
        return x, probs


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

    def forward(
        self,
        x: Tensor,
        context: Tensor,
        bias: Tensor | None = None,
        need_weights: bool = False,
        rows: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """x (B, T, D) queries; context (B, S, Dc); bias (B, 1, 1, S) or (B, 1, T, S) over the context's keys.
        ``rows`` (bool (B, T), the real queries) skips the padded queries, as in ``Block``."""
        if rows is not None and not need_weights:
            return unpack_rows(self._sublayers(x[rows], context, bias, False, rows)[0], rows), None
        return self._sublayers(x, context, bias, need_weights, None)

    def _sublayers(
        self, x: Tensor, context: Tensor, bias: Tensor | None, need_weights: bool, rows: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        h, probs = self.attn(x, context, bias=bias, need_weights=need_weights, rows=rows)
        x = self.norm1(x + F.dropout(h, self.dropout, self.training))
        if self.ffn is not None:
            x = self.norm2(x + F.dropout(self.ffn(x), self.dropout, self.training))
        return x, probs
