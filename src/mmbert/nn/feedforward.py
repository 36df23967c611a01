"""The position-wise feed-forward sublayer."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ACTIVATIONS = {"gelu": F.gelu, "relu": F.relu, "gelu_tanh": lambda x: F.gelu(x, approximate="tanh")}
GELU_APPROXIMATION = {"gelu": "none", "gelu_tanh": "tanh"}


class _GeluLinear(torch.autograd.Function):
    """``linear(gelu(h), weight, bias)`` that keeps only ``h`` for the backward pass and recomputes
    ``gelu(h)`` there: the FFN's widest activation (B x T x ffn_dim) is not kept twice."""

    @staticmethod
    def forward(ctx, h: Tensor, weight: Tensor, bias: Tensor, approximate: str) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(h, weight)
        ctx.approximate = approximate
        return F.linear(F.gelu(h, approximate=approximate), weight, bias)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, Tensor, None]:  # type: ignore[override]
        h, weight = ctx.saved_tensors
        grad2 = grad.reshape(-1, grad.shape[-1])
        act = F.gelu(h, approximate=ctx.approximate).reshape(-1, h.shape[-1])
        # under autocast h and grad are in the low precision while the weight is not
        grad_weight = grad2.t().mm(act.to(grad2.dtype)).to(weight.dtype)
        del act
        grad_bias = grad2.sum(0).to(weight.dtype)
        grad_act = grad.matmul(weight.to(grad.dtype))
        grad_h = torch.ops.aten.gelu_backward(grad_act.to(h.dtype), h, approximate=ctx.approximate)
        return grad_h, grad_weight, grad_bias, None


class FeedForward(nn.Module):
    """``fc2(act(fc1(x)))``; BERT uses the exact (erf) GELU.

    ``recompute_activation`` (GELU only, on by default): while training, the activation output is not
    kept for the backward pass but recomputed there from fc1's output — the same values and gradients,
    ffn_dim floats per position less memory, one extra GELU in the backward pass."""

    def __init__(
        self, dim: int, hidden_dim: int, activation: str = "gelu", recompute_activation: bool = True
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose from {sorted(ACTIVATIONS)}")
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.act = ACTIVATIONS[activation]
        self.activation = activation
        self.recompute_activation = recompute_activation

    def forward(self, x: Tensor) -> Tensor:
        h = self.fc1(x)
        if (
            self.recompute_activation
            and self.activation in GELU_APPROXIMATION
            and torch.is_grad_enabled()
            and h.requires_grad
        ):
            return _GeluLinear.apply(h, self.fc2.weight, self.fc2.bias, GELU_APPROXIMATION[self.activation])
        return self.fc2(self.act(h))
