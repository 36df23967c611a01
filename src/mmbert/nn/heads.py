"""Heads: map hidden states to logits. No losses here (those live in ``mmbert.objectives``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmbert.nn.tied import TiedEmbedding


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
    """``LN(gelu(W h))``: the transform in front of BERT's MLM decoder and the region heads.
    ``norm=False`` leaves the LayerNorm out (VL-BERT's masked-RoI head: ``gelu(W h)``)."""

    def __init__(self, dim: int, eps: float = 1e-12, out_dim: int | None = None, norm: bool = True) -> None:
        super().__init__()
        self.dense = nn.Linear(dim, out_dim or dim)
        self.norm = nn.LayerNorm(out_dim or dim, eps=eps) if norm else None

    def forward(self, x: Tensor) -> Tensor:
        h = F.gelu(self.dense(x))
        return self.norm(h) if self.norm is not None else h


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
        tied = self._tied[0]
        # through the lookup's gradient pairing when the objective opened one (mmbert.nn.tied)
        weight = tied.decoder_weight() if isinstance(tied, TiedEmbedding) else tied.weight
        return F.linear(self.transform(hidden), weight, self.bias)


# ViLBERT and VOLTA read the fused (text x vision) pooled vector through nn.Dropout(0.1) before the matching
# head, a constant of their code rather than hidden_dropout_prob (vilbert/vilbert.py and volta/encoders.py,
# ``BertPreTrainingHeads``).
FUSION_DROPOUT = 0.1


class PairHead(nn.Module):
    """Two-way classifier over the pooled output: next sentence / image-text match. Index 1 = matches.
    ``dropout``: applied to the pooled vector first (ViLBERT's fusion dropout; no parameters)."""

    def __init__(self, dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, 2)
        self.dropout = dropout

    def forward(self, pooled: Tensor) -> Tensor:
        return self.proj(F.dropout(pooled, self.dropout, self.training))


class RegionHeads(nn.Module):
    """Per-region predictions from the vision stream: a shared transform (dense, GELU, LN), then one
    Linear decoder per named output, e.g. ``{"class": 1601}`` (ViLBERT's KL target) or LXMERT's
    ``{"class": 1600, "attr": 400, "feat": 2048}``. Returns a dict of (B, R, size) tensors.
    ``norm=False``: a transform without LayerNorm (VL-BERT's masked-RoI head)."""

    def __init__(self, dim: int, outputs: dict[str, int], eps: float = 1e-12, norm: bool = True) -> None:
        super().__init__()
        if not outputs:
            raise ValueError("RegionHeads needs at least one output")
        self.transform = PredictionTransform(dim, eps, norm=norm)
        self.decoders = nn.ModuleDict({name: nn.Linear(dim, size) for name, size in outputs.items()})

    def forward(self, vision: Tensor) -> dict[str, Tensor]:
        h = self.transform(vision)
        return {name: decoder(h) for name, decoder in self.decoders.items()}


class MLPClassifier(nn.Module):
    """``fc2(LN(gelu(fc1(x))))``: LXMERT's answer head and the VQA classifier of VOLTA/ViLBERT-style
    fine-tuning (hidden width 2x the input by convention)."""

    def __init__(
        self, in_dim: int, hidden_dim: int, num_labels: int, eps: float = 1e-12, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.norm = nn.LayerNorm(hidden_dim, eps=eps)
        self.fc2 = nn.Linear(hidden_dim, num_labels)
        self.dropout = dropout

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm(F.gelu(self.fc1(x)))
        return self.fc2(F.dropout(h, self.dropout, self.training))
