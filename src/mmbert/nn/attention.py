"""Multi-head attention, self or cross, on PyTorch's fused scaled-dot-product kernel."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmbert.nn.dropout import keep_mask


def key_padding_bias(mask: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """Turn a boolean attention mask, True = attend, into the additive bias SDPA takes.

    Two forms: a key mask (B, S) — every query sees the same keys — becomes (B, 1, 1, S); a visibility
    mask (B, T, S) — query t may attend to key s (``mmbert.nn.masks`` builds them: seq2seq, captioning)
    — becomes (B, 1, T, S). This is the one place where masks change form. Masked keys get the dtype's
    minimum (as the Hugging Face reference does), so a row with no visible key gives a uniform
    distribution instead of NaN. Returns None when everything is visible, which lets SDPA pick its
    fastest kernel.
    """
    if mask is None:
        return None
    if mask.dtype != torch.bool:
        raise TypeError(f"attention masks must be boolean (True = real), got dtype {mask.dtype}")
    if mask.dim() not in (2, 3):
        raise ValueError(
            "attention masks are (batch, keys) key masks or (batch, queries, keys) visibility masks, "
            f"got shape {tuple(mask.shape)}"
        )
    if bool(mask.all()):
        return None
    bias = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    bias.masked_fill_(~mask, torch.finfo(dtype).min)
    return bias[:, None, None, :] if mask.dim() == 2 else bias[:, None]


class Attention(nn.Module):
    """Multi-head attention: ``softmax(q k^T / sqrt(d_head) + bias) v``, then an output projection.

    Self-attention (``context_dim=None``) projects q, k, v with one fused matrix. Cross-attention
    (``context_dim`` given) projects queries from ``x`` and keys/values from ``context``; the inner width
    may differ from both inputs (ViLBERT's co-attention runs at 1024 between 768 text and 1024 vision).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        dropout: float = 0.0,
        context_dim: int | None = None,
        inner_dim: int | None = None,
    ) -> None:
        super().__init__()
        inner_dim = inner_dim or dim
        if inner_dim % num_heads:
            raise ValueError(f"attention width {inner_dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = inner_dim // num_heads
        self.dropout = dropout
        self.is_cross = context_dim is not None
        if self.is_cross:
            self.q = nn.Linear(dim, inner_dim)
            self.kv = nn.Linear(context_dim, 2 * inner_dim)
        else:
            self.qkv = nn.Linear(dim, 3 * inner_dim)
        self.out = nn.Linear(inner_dim, dim)

    def _heads(self, t: Tensor) -> Tensor:  # (B, S, H*Dh) -> (B, H, S, Dh)
        b, s, _ = t.shape
        return t.view(b, s, self.num_heads, self.head_dim).transpose(1, 2)

    def _split(self, t: Tensor, n: int, contiguous: bool) -> tuple[Tensor, ...]:
        """(B, S, n*H*Dh) -> n tensors (B, H, S, Dh): views, or (``contiguous``) one copy for all n, which
        the batched matmuls of ``dropout_attention`` would otherwise make one by one, forward and back."""
        if not contiguous:
            return tuple(self._heads(part) for part in t.chunk(n, dim=-1))
        b, s, _ = t.shape
        return t.view(b, s, n, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).contiguous().unbind(0)

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        bias: Tensor | None = None,
        need_weights: bool = False,
        rows: Tensor | None = None,
        keep: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """x (B, T, D), context (B, S, Dc) for cross-attention, bias (B, 1, 1, S) or (B, 1, T, S) from
        ``key_padding_bias``.

        Returns the output (B, T, D) and, only when ``need_weights``, the probabilities (B, H, T, S).
        With ``rows`` (bool (B, T), the real positions), x and the output are packed (N, D): the
        projections skip the padding, unpacked (as zeros, which ``bias`` must mask) only for the attention.
        With ``keep`` (bool (B, T) within ``rows``: the only positions whose output is needed, as in a last
        layer read at a few rows) keys and values still come from every row of x, but queries and the
        output projection only from ``keep``: the output is packed over ``keep`` (K, D).
        """
        # SDPA's fused CPU kernel has no dropout: it would fall back to its unfused path, which keeps
        # scaled copies of q and k, the probabilities, float noise and the dropped probabilities; so
        # training with dropout on CPU runs ``dropout_attention`` (CUDA's fused kernels do dropout).
        manual = (
            not need_weights
            and self.training
            and self.dropout > 0
            and torch.is_grad_enabled()
            and x.device.type == "cpu"
        )
        if self.is_cross:
            if context is None:
                raise ValueError("cross-attention needs a context tensor")
            queries = self.q(x if keep is None else at_rows(x, rows, keep))
            (q,) = self._split(unpack_rows(queries, rows if keep is None else keep), 1, manual)
            k, v = self._split(self.kv(context), 2, manual)
        else:
            if context is not None:
                raise ValueError(
                    "this Attention was built for self-attention (no context_dim) but got a context"
                )
            if keep is None:
                q, k, v = self._split(unpack_rows(self.qkv(x), rows), 3, manual)
            else:  # the fused matrix split: queries at the kept rows, keys and values at every row
                inner = self.num_heads * self.head_dim
                w, b = self.qkv.weight, self.qkv.bias
                queries = F.linear(at_rows(x, rows, keep), w[:inner], b[:inner])
                (q,) = self._split(unpack_rows(queries, keep), 1, manual)
                k, v = self._split(unpack_rows(F.linear(x, w[inner:], b[inner:]), rows), 2, manual)
        probs = None
        if need_weights:  # the explicit path, only for analysis
            scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)
            if bias is not None:
                scores = scores + bias
            probs = scores.softmax(dim=-1)
            out = F.dropout(probs, self.dropout, self.training) @ v
        elif manual:
            out = dropout_attention(q, k, v, bias, self.dropout)
        else:
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=bias, dropout_p=self.dropout if self.training else 0.0
            )
        b, _, t, _ = out.shape
        out = out.transpose(1, 2).reshape(b, t, -1)
        packed_by = rows if keep is None else keep
        return self.out(out if packed_by is None else out[packed_by]), probs


def at_rows(x: Tensor, rows: Tensor | None, keep: Tensor) -> Tensor:
    """The values (K, C) at ``keep`` (bool (B, T), within ``rows``) of x, which is packed over ``rows``
    (N, C) or, without rows, whole (B, T, C)."""
    return x[keep] if rows is None else x[keep[rows]]


def unpack_rows(packed: Tensor, rows: Tensor | None) -> Tensor:
    """(N, C) values of the real rows -> (B, T, C) with zeros at the padded positions (no-op without rows)."""
    if rows is None:
        return packed
    full = packed.new_zeros(*rows.shape, packed.shape[-1])
    full[rows] = packed
    return full


class _DropoutAttention(torch.autograd.Function):
    """``(softmax(q k^T * s + bias) * keep / (1 - p)) v`` with a hand-written backward pass.

    Keeps for the backward only q, k, v (views of the projection, alive anyway), the probabilities and
    the boolean keep mask; the dropped probabilities are rebuilt from those two when needed. ``bias``
    is a mask (it gets no gradient)."""

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None, p: float) -> Tensor:  # type: ignore[override]
        scale = 1.0 / math.sqrt(q.shape[-1])
        scores = torch.matmul(q, k.transpose(-1, -2)).mul_(scale)
        if bias is not None:
            scores.add_(bias)
        probs = scores.softmax(dim=-1)
        del scores
        keep = keep_mask(probs.shape, p, probs.device)
        drop_scale = 1.0 / (1.0 - p)
        out = torch.matmul(torch.mul(probs, keep).mul_(drop_scale), v)
        ctx.save_for_backward(q, k, v, probs, keep)
        ctx.scale, ctx.drop_scale = scale, drop_scale
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, Tensor, None, None]:  # type: ignore[override]
        q, k, v, probs, keep = ctx.saved_tensors
        dropped = torch.mul(probs, keep).mul_(ctx.drop_scale)
        grad_v = torch.matmul(dropped.transpose(-1, -2), grad)
        del dropped
        grad_probs = torch.matmul(grad, v.transpose(-1, -2)).mul_(keep).mul_(ctx.drop_scale)
        # softmax backward: dS = P * (dP - sum(dP * P))
        grad_scores = grad_probs.mul_(probs)
        grad_scores.sub_(probs * grad_scores.sum(-1, keepdim=True))
        grad_scores.mul_(ctx.scale)
        grad_q = torch.matmul(grad_scores, k)
        grad_k = torch.matmul(grad_scores.transpose(-1, -2), q)
        return grad_q, grad_k, grad_v, None, None


def dropout_attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None, p: float) -> Tensor:
    """Attention with dropout on the probabilities, for training: q (B, H, T, Dh), k and v (B, H, S, Dh),
    bias (B, 1, 1, S) or (B, 1, T, S) or None -> (B, H, T, Dh). The same distribution as SDPA's dropout
    path, with a quarter of its saved activations (see ``_DropoutAttention``)."""
    return _DropoutAttention.apply(q, k, v, bias, p)
