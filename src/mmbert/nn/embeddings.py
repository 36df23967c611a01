"""Text embeddings: word + learned absolute position + segment (token type), then LayerNorm."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mmbert.nn.dropout import dropout
from mmbert.nn.tied import TiedEmbedding


class TextEmbeddings(nn.Module):
    """BERT's input embeddings. ``summed`` gives the raw sum for models that normalise later
    (VisualBERT puts one LayerNorm over text and regions together)."""

    def __init__(
        self,
        vocab_size: int,
        dim: int,
        max_positions: int,
        type_vocab_size: int,
        dropout: float = 0.1,
        eps: float = 1e-12,
        pad_token_id: int = 0,
    ) -> None:
        super().__init__()
        self.word = TiedEmbedding(vocab_size, dim, padding_idx=pad_token_id)
        self.position = nn.Embedding(max_positions, dim)
        self.segment = nn.Embedding(type_vocab_size, dim)
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.dropout = dropout

    @classmethod
    def from_config(cls, c) -> TextEmbeddings:
        """From any model config: the field names are the same in every model (DESIGN.md section 7)."""
        return cls(
            c.vocab_size,
            c.dim,
            c.max_positions,
            c.type_vocab_size,
            c.dropout,
            c.layer_norm_eps,
            c.pad_token_id,
        )

    def summed(
        self, ids: Tensor, segment_ids: Tensor | None = None, positions: Tensor | None = None
    ) -> Tensor:
        """ids (B, T) -> word + position + segment embeddings (B, T, D), not normalised."""
        _, t = ids.shape
        if t > self.position.num_embeddings:
            raise ValueError(
                f"text_ids has {t} tokens but the model has only {self.position.num_embeddings} positions"
            )
        if positions is None:
            positions = torch.arange(t, device=ids.device)[None]
        if segment_ids is None:
            segment_ids = torch.zeros_like(ids)
        return self.word(ids) + self.position(positions) + self.segment(segment_ids)

    def forward(
        self, ids: Tensor, segment_ids: Tensor | None = None, positions: Tensor | None = None
    ) -> Tensor:
        return dropout(self.norm(self.summed(ids, segment_ids, positions)), self.dropout, self.training)
