"""What models and their pre-training heads return: one output type for every family, so heads,
objectives and tasks never care which model they sit on."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor


@dataclass
class Encoded:
    """What every model returns: text (B, T, D), vision (B, R, Dv) or None for text-only input, pooled (B, P).

    UNIMO also takes image-only input (``text`` is None then) and pools the two modalities separately:
    ``pooled_vision`` (B, P) is its [IMG] pooler (None for every other model). ``attentions`` (only when
    asked) maps a direction — ``text_text``, ``text_vision``, ``vision_text``,
    ``vision_vision`` — to one probability tensor per layer, shaped (B, H, queries, keys).
    """

    text: Tensor | None
    vision: Tensor | None
    pooled: Tensor
    attentions: dict[str, list[Tensor]] | None = field(default=None)
    pooled_vision: Tensor | None = field(default=None)


@dataclass
class PretrainingOutput:
    """Logits of every head the model has (None where it has none).

    mlm_logits (B, T, V) — or (N, V) when ``mlm_positions`` selected N tokens; pair_logits (B, 2) with
    index 1 = matches / is next; region_class_logits (B, R, C); region_attr_logits (B, R, A);
    region_feat_pred (B, R, F); answer_logits (B, A).
    """

    encoded: Encoded
    mlm_logits: Tensor | None = None
    pair_logits: Tensor | None = None
    region_class_logits: Tensor | None = None
    region_attr_logits: Tensor | None = None
    region_feat_pred: Tensor | None = None
    answer_logits: Tensor | None = None
