"""Word embeddings tied to the MLM decoder, with the two gradients of the shared matrix summed in place.

The matrix is used twice in a pre-training step: as the input lookup and as the output decoder. The
decoder's gradient is a dense (V, D) matrix; the lookup's touches only the looked-up rows. Left to
autograd, the two meet in the parameter's input buffer, and the second to arrive makes it allocate a new
(V, D) sum: the decoder's matrix plus a sparse lookup gradient is added out of place, a dense lookup
gradient costs a zero-filled (V, D) matrix and a dense add. For BERT's 30522 x 768 vocabulary that is
94 MB written and page-faulted every step, a twentieth of an LXMERT step on a CPU.

``TiedEmbedding.paired()`` scopes a ``TiedGradient`` to one forward: the decoder's backward (which runs
first: the decoder is the last operation of the forward) hands its matrix to the pairing instead of to the
parameter, and the lookup's backward adds its rows into that matrix in place and delivers the sum. In any
other order each use delivers its own gradient, as plain ``nn.Embedding`` and ``F.linear`` would, so the
parameter's gradient is the same sum either way, and always dense (the optimizers, DDP's buckets and
gradient accumulation see an ordinary gradient).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import FunctionCtx


class TiedGradient:
    """One forward's meeting point for a tied matrix's decoder gradient and its lookups' rows."""

    def __init__(self) -> None:
        self.held: Tensor | None = None  # the decoder's (V, D) gradient, waiting for a lookup's rows
        self.pending_lookups = 0  # lookups made in the forward whose backward has not run yet

    def hold(self, grad: Tensor) -> bool:
        """Keep the decoder's gradient for a lookup still to come; False: deliver it directly."""
        if self.held is not None or self.pending_lookups == 0 or not _owned_dense(grad):
            return False
        self.held = grad
        return True

    def take(self) -> Tensor | None:
        """The held decoder gradient (once), for the lookup whose backward runs now."""
        self.pending_lookups = max(self.pending_lookups - 1, 0)
        held, self.held = self.held, None
        return held


def _owned_dense(grad: Tensor) -> bool:
    """A gradient that may be written in place: contiguous, outside any autograd graph, and the whole of
    its storage (a matmul's fresh output, possibly seen through transposes), so no other tensor aliases it."""
    return (
        grad.layout == torch.strided
        and grad.is_contiguous()
        and not grad.requires_grad
        and grad.storage_offset() == 0
        and grad.untyped_storage().nbytes() == grad.numel() * grad.element_size()
    )


class _DecoderUse(torch.autograd.Function):
    """Identity on the matrix; its backward lets the pairing hold the decoder's gradient."""

    @staticmethod
    def forward(ctx: FunctionCtx, weight: Tensor, pairing: TiedGradient) -> Tensor:
        ctx.pairing = pairing  # type: ignore[attr-defined]
        return weight.view_as(weight)

    @staticmethod
    def backward(ctx: FunctionCtx, grad: Tensor) -> tuple[Tensor | None, None]:
        held = ctx.pairing.hold(grad)  # type: ignore[attr-defined]
        return (None if held else grad), None


class _PairedLookup(torch.autograd.Function):
    """``F.embedding``; its backward adds the looked-up rows' gradients into the held decoder gradient."""

    @staticmethod
    def forward(
        ctx: FunctionCtx, weight: Tensor, ids: Tensor, padding_idx: int | None, pairing: TiedGradient
    ) -> Tensor:
        ctx.save_for_backward(ids)
        ctx.num_rows = weight.shape[0]  # type: ignore[attr-defined]
        ctx.padding_idx = padding_idx  # type: ignore[attr-defined]
        ctx.pairing = pairing  # type: ignore[attr-defined]
        pairing.pending_lookups += 1
        return F.embedding(ids, weight, padding_idx)

    @staticmethod
    def backward(ctx: FunctionCtx, grad: Tensor) -> tuple[Tensor | None, None, None, None]:
        (ids,) = ctx.saved_tensors  # type: ignore[attr-defined]
        padding_idx = ctx.padding_idx  # type: ignore[attr-defined]
        held = ctx.pairing.take()  # type: ignore[attr-defined]
        if held is None:  # no decoder gradient waiting: nn.Embedding's own dense gradient
            pad = -1 if padding_idx is None else padding_idx
            return torch.ops.aten.embedding_backward(grad, ids, ctx.num_rows, pad, False, False), None, None, None  # type: ignore[attr-defined]
        rows, values = ids.reshape(-1), grad.reshape(-1, grad.shape[-1])
        if padding_idx is not None:  # the padding row receives no gradient (nn.Embedding's padding_idx)
            keep = rows != padding_idx
            rows, values = rows[keep], values[keep]
        held.index_put_((rows,), values.to(held.dtype), accumulate=True)
        return held, None, None, None


class TiedEmbedding(nn.Embedding):
    """``nn.Embedding`` whose matrix an output decoder shares (``decoder_weight``); inside ``paired()``
    the two uses' gradients are summed in place (module docstring). Outside it, exactly ``nn.Embedding``."""

    pairing: TiedGradient | None = None

    @contextmanager
    def paired(self) -> Iterator[TiedGradient]:
        """Pair the lookups and decoder uses of the forward run inside this block."""
        previous, self.pairing = self.pairing, TiedGradient()
        try:
            yield self.pairing
        finally:
            self.pairing = previous

    def _pairs(self) -> bool:
        return (
            self.pairing is not None
            and torch.is_grad_enabled()
            and self.weight.requires_grad
            and self.max_norm is None
            and not self.scale_grad_by_freq
            and not self.sparse
        )

    def forward(self, ids: Tensor) -> Tensor:
        if not self._pairs():
            return super().forward(ids)
        return _PairedLookup.apply(self.weight, ids, self.padding_idx, self.pairing)

    def decoder_weight(self) -> Tensor:
        """The matrix as the output decoder uses it: through the pairing inside ``paired()``."""
        if not self._pairs():
            return self.weight
        return _DecoderUse.apply(self.weight, self.pairing)
