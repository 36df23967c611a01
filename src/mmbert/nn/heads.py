"""Heads: map hidden states to logits. No losses here (those live in ``mmbert.objectives``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Pooler(nn.Module):
    """``act(W h_first)``: BERT's tanh pooler over [CLS]; ViLBERT pools with ReLU into a wider space."""

    def __init__(self, dim: int, out_dim: int | None = None, activation: str = "tanh") -> None:
        super().__init__()
        if activation not in ("tanh", "relu"):
            raise ValueError(f"pooler activation must be 'tanh' or 'relu', got {activation!r}")
        self.dense = nn.Linear(dim, out_dim or dim)
        self.activation = activation

    def forward(self, hidden: Tensor) -> Tensor:
        """hidden (B, T, D) -> (B, out_dim), from the first position."""
        h = self.dense(hidden[:, 0])
        return torch.tanh(h) if self.activation == "tanh" else F.relu(h)


class PredictionTransform(nn.Module):
    """``LN(gelu(W h))``: the transform in front of BERT's MLM decoder and the region heads."""

    def __init__(self, dim: int, eps: float = 1e-12, out_dim: int | None = None) -> None:
        super().__init__()
        self.dense = nn.Linear(dim, out_dim or dim)
        self.norm = nn.LayerNorm(out_dim or dim, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(F.gelu(self.dense(x)))


class MLMHead(nn.Module):
    """Masked-LM head: transform, then a decoder tied to the word embeddings plus its own bias.

    ``positions`` (bool (B, T)) selects the labelled tokens *before* the transform and the vocabulary
    projection: the same loss, without scoring every token against the whole vocabulary.
    """

    def __init__(self, dim: int, word_embeddings: nn.Embedding, eps: float = 1e-12) -> None:
        super().__init__()
        self.transform = PredictionTransform(dim, eps)
        # Tied to the encoder's word embeddings. Kept out of this module's parameters (a list is not
        # registered), so the matrix is saved, moved and counted once, as part of the encoder.
        self._tied = [word_embeddings]
        self.bias = nn.Parameter(torch.zeros(word_embeddings.num_embeddings))

    @property
    def decoder_weight(self) -> Tensor:
        return self._tied[0].weight

    def forward(self, hidden: Tensor, positions: Tensor | None = None) -> Tensor:
        """hidden (B, T, D) -> logits (B, T, V), or (N, V) for the N selected positions."""
        if positions is not None:
            hidden = hidden[positions]
        return F.linear(self.transform(hidden), self.decoder_weight, self.bias)


class PairHead(nn.Module):
    """Two-way classifier over the pooled output: next sentence / image-text match. Index 1 = matches."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, 2)

    def forward(self, pooled: Tensor) -> Tensor:
        return self.proj(pooled)
