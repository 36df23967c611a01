"""The region embedding Unicoder-VL and UNIMO share: ``LN(Linear(feature) + Linear(5-d location))``.

The 5-d location is [x1, y1, x2, y2, area] of the normalised box (``location_features(boxes, "5d")``).
ViLBERT's ``BertImageEmbeddings`` computes the same formula under the reference's parameter names, which
its converters map, so it keeps its own module.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from mmbert.data.boxes import location_features


class LocatedRegionEmbeddings(nn.Module):
    """``LN(W_f f + W_l [x1, y1, x2, y2, area])``, then dropout: (B, R, F) features + (B, R, 4) boxes ->
    (B, R, D)."""

    def __init__(self, feat_dim: int, dim: int, dropout: float, eps: float) -> None:
        super().__init__()
        self.feat_proj = nn.Linear(feat_dim, dim)
        self.loc_proj = nn.Linear(5, dim)
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.dropout = dropout

    @classmethod
    def from_config(cls, c) -> LocatedRegionEmbeddings:
        return cls(c.region_feat_dim, c.dim, c.dropout, c.layer_norm_eps)

    def forward(self, feats: Tensor, boxes: Tensor) -> Tensor:
        """feats (B, R, F), boxes (B, R, 4) normalised -> (B, R, D)."""
        h = self.feat_proj(feats) + self.loc_proj(location_features(boxes, "5d"))
        return F.dropout(self.norm(h), self.dropout, self.training)
