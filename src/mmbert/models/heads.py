"""``PretrainingHeads``: the heads a model pre-trains with, built by each model's ``build_pretraining_heads``."""

from __future__ import annotations

from torch import Tensor, nn

from mmbert.models.outputs import Encoded, PretrainingOutput
from mmbert.nn.heads import MLMHead


class PretrainingHeads(nn.Module):
    """The heads a model pre-trains with. ``region`` maps the vision stream to a dict whose keys are
    among ``class``, ``attr`` and ``feat``; ``answer`` maps the pooled output to answer logits."""

    def __init__(
        self,
        mlm: MLMHead | None = None,
        pair: nn.Module | None = None,
        region: nn.Module | None = None,
        answer: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.mlm = mlm
        self.pair = pair
        self.region = region
        self.answer = answer

    def forward(self, enc: Encoded, mlm_positions: Tensor | None = None) -> PretrainingOutput:
        out = PretrainingOutput(encoded=enc)
        if self.mlm is not None and enc.text is not None:  # image-only input (UNIMO) has no text
            out.mlm_logits = self.mlm(enc.text, mlm_positions)
        if self.pair is not None:
            out.pair_logits = self.pair(enc.pooled)
        if self.region is not None and enc.vision is not None:
            region = self.region(enc.vision)
            out.region_class_logits = region.get("class")
            out.region_attr_logits = region.get("attr")
            out.region_feat_pred = region.get("feat")
        if self.answer is not None:
            out.answer_logits = self.answer(enc.pooled)
        return out
