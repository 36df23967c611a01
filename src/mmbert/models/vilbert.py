"""ViLBERT: Pretraining Task-Agnostic Visiolinguistic Representations for Vision-and-Language Tasks
(Lu, Batra, Parikh, Lee 2019; arXiv:1908.02265).

Two streams: a BERT-base text stream (768 wide, 12 layers) and a narrower vision stream (1024 wide,
8 heads, FFN 1024, 6 layers), joined by co-attention layers. In a co-attention layer text queries
attend to the vision states and vision queries attend to the text states (inner width 1024, 8 heads),
both from the states *before* the layer; each side then has its own residual + LayerNorm and its own
FFN (text 3072, vision 1024). Where the co-attention layers sit is given by the reference's two id
lists (``v_biattention_id`` / ``t_biattention_id``), turned here into a readable plan of named steps
(``interleave``). Regions: LN(Linear(feat) + Linear(5-d location)), with the mean-pooled whole-image
region (box [0, 0, 1, 1]) first. Pooled output: ReLU(Linear(768->1024)) on [CLS] times
ReLU(Linear(1024->1024)) on the global region (element-wise product, the reference's "mul" fusion).
Pre-training heads: MLM (tied), the 1601-way detector class distribution per region (KL target), and
image-text alignment on the fused pooled vector (index 1 = matches).

Deviations from vilbert-multi-task (vilbert/vilbert.py), all weight-free or dead code there:
* ``BertBiOutput.q_dense1`` / ``q_dense2`` are created but never used in the reference; we omit them
  (1024*1024+1024 + 1024*768+768 parameters per co-attention layer).
* The multi-task extras (task tokens, dynamic attention, frozen layers, fast mode, in-batch pairs) are
  not part of the pre-trained model and are left out.
* Padded regions are zeroed before embedding (``clear_padding``): padding content, even NaN, is inert.
* The vision output keeps the global region at index 0 (``vision_mask`` marks it real), so
  ``Encoded.vision`` has R + 1 positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from mmbert.config import GlobalRegion, ModelConfig, check_global_region
from mmbert.data.boxes import location_features
from mmbert.models.base import (
    TINY_REGION_FEAT_DIM,
    TINY_SIZES,
    Encoded,
    ScoredRows,
    block_stack,
    text_embeddings_plan,
)
from mmbert.models.dual_stream import DualStreamModel, StreamStates, joined_maps, new_maps
from mmbert.models.heads import PretrainingHeads
from mmbert.nn import (
    FUSION_DROPOUT,
    CrossBlock,
    PairHead,
    Pooler,
    RegionHeads,
)

Step = tuple[str, int]  # ("text", i) | ("vision", j) | ("co", k)


@dataclass
class ViLBertConfig(ModelConfig):
    model_type = "vilbert"

    region_feat_dim: int = 2048  # detector feature width (v_feature_size)
    vision_dim: int = 1024  # v_hidden_size
    vision_heads: int = 8  # v_num_attention_heads
    vision_ffn_dim: int = 1024  # v_intermediate_size
    num_vision_layers: int = 6  # v_num_hidden_layers
    co_dim: int = 1024  # bi_hidden_size: inner width of the co-attention
    co_heads: int = 8  # bi_num_attention_heads
    # A co-attention layer runs after vision layer id-1 / before vision layer `id` (v_biattention_id) and
    # before text layer `id` (t_biattention_id): k-th entries of the two lists belong to co-attention k.
    vision_co_ids: tuple[int, ...] = (0, 1, 2, 3, 4, 5)
    text_co_ids: tuple[int, ...] = (6, 7, 8, 9, 10, 11)
    pooled_dim: int = 1024  # pooler_size = v_pooler_size
    num_region_classes: int = 1601  # v_target_size: detector classes incl. background
    # The architecture fixes it: the vision pooler reads the whole-image region in front.
    global_region: GlobalRegion = "first"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_global_region(self, allowed=("first",))
        name = type(self).__name__
        for field, heads in (("vision_dim", self.vision_heads), ("co_dim", self.co_heads)):
            if getattr(self, field) % heads:
                raise ValueError(f"{name}: {field}={getattr(self, field)} is not divisible by {heads} heads")
        if len(self.vision_co_ids) != len(self.text_co_ids):
            raise ValueError(
                f"{name}: vision_co_ids {list(self.vision_co_ids)} and text_co_ids {list(self.text_co_ids)} "
                "must have one entry per co-attention layer each"
            )
        for field, top in (("vision_co_ids", self.num_vision_layers), ("text_co_ids", self.num_layers)):
            ids = list(getattr(self, field))
            if any(b < a for a, b in zip(ids, ids[1:])) or any(not 0 <= i <= top for i in ids):
                raise ValueError(f"{name}: {field} {ids} must be non-decreasing and within 0..{top}")


def interleave(
    num_text: int, num_vision: int, text_co_ids: tuple[int, ...], vision_co_ids: tuple[int, ...]
) -> list[Step]:
    """The reference's run order (vilbert.py ``BertEncoder.forward``), as a list of named steps.

    For each co-attention k: the text layers not yet run below ``text_co_ids[k]``, then the vision
    layers below ``vision_co_ids[k]``, then co-attention k. Afterwards the remaining vision layers,
    then the remaining text layers. ViLBERT-base gives T0-T5, C0, T6, V0, C1, ..., T10, V4, C5, V5, T11.
    """
    plan: list[Step] = []
    t = v = 0
    for k, (t_stop, v_stop) in enumerate(zip(text_co_ids, vision_co_ids)):
        plan += [("text", i) for i in range(t, t_stop)]
        plan += [("vision", j) for j in range(v, v_stop)]
        plan.append(("co", k))
        t, v = t_stop, v_stop
    plan += [("vision", j) for j in range(v, num_vision)]
    plan += [("text", i) for i in range(t, num_text)]
    return plan


class RegionEmbeddings(nn.Module):
    """ViLBERT's ``BertImageEmbeddings``: LN(Linear(feat) + Linear(5-d location)), dropout."""

    def __init__(self, feat_dim: int, dim: int, dropout: float, eps: float) -> None:
        super().__init__()
        self.feat = nn.Linear(feat_dim, dim)
        self.location = nn.Linear(5, dim)
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.dropout = dropout

    def forward(self, feats: Tensor, boxes: Tensor) -> Tensor:
        """feats (B, R, F), boxes (B, R, 4) normalised -> (B, R, Dv)."""
        x = self.feat(feats) + self.location(location_features(boxes, "5d"))
        return F.dropout(self.norm(x), self.dropout, self.training)


class CoAttentionLayer(nn.Module):
    """Text attends to vision and vision attends to text, both from the states before this layer.

    Two ``CrossBlock``s with separate weights (the reference's ``BertConnectionLayer``): each has its
    own residual + LayerNorm and FFN; the cross-attention runs at ``co_dim`` between the two widths.
    """

    def __init__(self, c: ViLBertConfig) -> None:
        super().__init__()
        eps = c.layer_norm_eps
        self.text = CrossBlock(
            c.dim, c.vision_dim, c.co_heads, c.ffn_dim, c.co_dim, c.dropout, c.attn_dropout, eps
        )
        self.vision = CrossBlock(
            c.vision_dim, c.dim, c.co_heads, c.vision_ffn_dim, c.co_dim, c.dropout, c.attn_dropout, eps
        )

    def forward(
        self,
        text: Tensor,
        vision: Tensor,
        text_bias: Tensor | None,
        vision_bias: Tensor | None,
        need_weights: bool,
        text_rows: Tensor | None = None,
        vision_rows: Tensor | None = None,
        text_keep: Tensor | None = None,
        vision_keep: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """Returns new text (B, T, D), new vision (B, R, Dv) and, if asked, the text->vision (B, H, T, R)
        and vision->text (B, H, R, T) attention probabilities. ``*_rows``: the real positions, whose
        padding the sublayers may skip (see ``Block``); ``*_keep``: the only rows of that stream read
        after this layer (its queries come from the states before the layer, so each side prunes alone)."""
        new_text, text_vision = self.text(text, vision, vision_bias, need_weights, text_rows, text_keep)
        new_vision, vision_text = self.vision(vision, text, text_bias, need_weights, vision_rows, vision_keep)
        return new_text, new_vision, text_vision, vision_text


class ViLBert(DualStreamModel[ViLBertConfig]):
    display_name = "ViLBERT"

    def __init__(self, config: ViLBertConfig) -> None:
        super().__init__(config)
        c = config
        self.region_embeddings = RegionEmbeddings(c.region_feat_dim, c.vision_dim, c.dropout, c.layer_norm_eps)
        self.text_layers = block_stack(c, c.num_layers)
        self.vision_layers = block_stack(c, c.num_vision_layers, c.vision_dim, c.vision_heads, c.vision_ffn_dim)
        self.co_layers = nn.ModuleList(CoAttentionLayer(c) for _ in c.text_co_ids)
        self.text_pooler = Pooler(c.dim, c.pooled_dim, activation="relu")
        self.vision_pooler = Pooler(c.vision_dim, c.pooled_dim, activation="relu")
        self.plan = interleave(c.num_layers, c.num_vision_layers, c.text_co_ids, c.vision_co_ids)
        # Before the first co-attention each stream runs alone (encode_text / encode_vision); from it on
        # the streams meet (fuse).
        first_co = next((k for k, (kind, _) in enumerate(self.plan) if kind == "co"), len(self.plan))
        self.single_modality_steps, self.cross_modal_steps = self.plan[:first_co], self.plan[first_co:]
        self.init_weights()

    def stream_layers(self, stream: str) -> list[nn.Module]:
        """The text or vision layers that run before the first co-attention. The vision stream starts with
        the whole-image region in front; the authors' fine-tuning readers take its feature as the mean of
        the real regions, the default here (their pre-training loaders average only regions overlapping no
        masked one: ``global_feats`` carries that)."""
        layers = self.text_layers if stream == "text" else self.vision_layers
        return [layers[i] for kind, i in self.single_modality_steps if kind == stream]

    def fuse(
        self,
        text: StreamStates,
        vision: StreamStates,
        output_attentions: bool = False,
        scored_rows: ScoredRows | None = None,
    ) -> Encoded:
        """The run plan from the first co-attention on, then the fused poolers: text (B, T, D), vision
        (B, R+1, Dv) with the global region first, pooled (B, pooled_dim). With ``output_attentions``: one
        map per text layer (``text_text``), per vision layer (``vision_vision``) and per co-attention layer
        (``text_vision`` (B, H, T, R+1), ``vision_text`` (B, H, R+1, T)), each list in run order."""
        text_bias, text_rows = text.bias_and_rows(self.skip_padding)
        vision_bias, vision_rows = vision.bias_and_rows(self.skip_padding)
        text_keep, vision_keep = self.kept_rows(scored_rows, text, vision)
        # each stream's last step (its own layer or a co-attention) computes only the kept rows
        steps = self.cross_modal_steps
        last_text = max((k for k, (kind, _) in enumerate(steps) if kind != "vision"), default=-1)
        last_vision = max((k for k, (kind, _) in enumerate(steps) if kind != "text"), default=-1)
        t, v = text.states, vision.states
        maps = new_maps(output_attentions)
        for k, (kind, i) in enumerate(steps):
            t_keep = text_keep if k == last_text else None
            v_keep = vision_keep if k == last_vision else None
            if kind == "text":
                t, probs = self.text_layers[i](t, text_bias, output_attentions, text_rows, t_keep)
                if maps is not None:
                    maps["text_text"].append(probs)
            elif kind == "vision":
                v, probs = self.vision_layers[i](v, vision_bias, output_attentions, vision_rows, v_keep)
                if maps is not None:
                    maps["vision_vision"].append(probs)
            else:
                t, v, tv, vt = self.co_layers[i](
                    t, v, text_bias, vision_bias, output_attentions, text_rows, vision_rows, t_keep, v_keep
                )
                if maps is not None:
                    maps["text_vision"].append(tv)
                    maps["vision_text"].append(vt)
        pooled = self.fused_pool(t, v)  # (B, pooled_dim)
        attentions = joined_maps(text.attentions, vision.attentions, maps) if output_attentions else None
        return Encoded(text=t, vision=v, pooled=pooled, attentions=attentions)

    def build_pretraining_heads(self) -> PretrainingHeads:
        """MLM, alignment on the fused pooled vector, and the 1601-class distribution per region
        (``region_class_logits`` (B, R+1, 1601), index 0 being the global region). The alignment head
        sees the fused vector through dropout 0.1 (vilbert/vilbert.py ``BertPreTrainingHeads``:
        ``self.dropout(pooled_output_t * pooled_output_v)``, ``nn.Dropout(0.1)``)."""
        c = self.config
        return self.tied_heads(
            pair=PairHead(c.pooled_dim, dropout=FUSION_DROPOUT),
            region=RegionHeads(c.vision_dim, {"class": c.num_region_classes}, c.layer_norm_eps),
        )

    def text_init_map(self, num_bert_layers: int) -> list[tuple[str, str]]:
        """BERT's embeddings and layers 0..11 -> the text stream, as the paper does. New: the region
        embeddings, the vision stream, the co-attention layers and both poolers."""
        if num_bert_layers != self.config.num_layers:
            raise ValueError(
                f"BERT checkpoint has {num_bert_layers} layers, ViLBERT's text stream {self.config.num_layers}"
            )
        return [("embeddings", "embeddings"), ("text_layers", "layers")]

    def layer_plan(self) -> list[str]:
        c = self.config
        names = {
            "text": f"Block(dim {c.dim}, heads {c.num_heads}, ffn {c.ffn_dim})",
            "vision": f"Block(dim {c.vision_dim}, heads {c.vision_heads}, ffn {c.vision_ffn_dim})",
            "co": f"CoAttention(text {c.dim} <-> vision {c.vision_dim} at {c.co_dim}, heads {c.co_heads}; "
            f"ffn text {c.ffn_dim}, vision {c.vision_ffn_dim})",
        }
        modules = {"text": "text_layers", "vision": "vision_layers", "co": "co_layers"}
        return [
            text_embeddings_plan(c),
            f"region_embeddings: LN(Linear({c.region_feat_dim}, {c.vision_dim}) + Linear(5, {c.vision_dim})), "
            "global region first",
            *(f"{modules[kind]}.{i}: {names[kind]}" for kind, i in self.plan),
            f"pooled: ReLU(Linear({c.dim}, {c.pooled_dim})) on [CLS] * ReLU(Linear({c.vision_dim}, {c.pooled_dim})) "
            "on the global region",
        ]


def vilbert_base() -> ViLBertConfig:
    """ViLBERT (config/bert_base_6layer_6conect.json): 12 text, 6 vision, 6 co-attention layers."""
    return ViLBertConfig()


def vilbert_2layer() -> ViLBertConfig:
    """The 2-co-attention variant (config/bert_base_2layer_2conect.json): 12 text, 2 vision layers."""
    return ViLBertConfig(num_vision_layers=2, vision_co_ids=(0, 1), text_co_ids=(10, 11))


def vilbert_4layer() -> ViLBertConfig:
    """config/bert_base_4layer_4conect.json (vilbert_beta's 4-layer release): 4 vision, 4 co-attention."""
    return ViLBertConfig(num_vision_layers=4, vision_co_ids=(0, 1, 2, 3), text_co_ids=(8, 9, 10, 11))


def vilbert_8layer() -> ViLBertConfig:
    """config/bert_base_8layer_8conect.json (vilbert_beta's 8-layer release): 8 vision, 8 co-attention."""
    return ViLBertConfig(
        num_vision_layers=8, vision_co_ids=tuple(range(8)), text_co_ids=tuple(range(4, 12))
    )


def vilbert_large() -> ViLBertConfig:
    """config/bert_large_6layer_6conect.json: a BERT-large text stream (24 x 1024, 16 heads), 6 co-attention."""
    return ViLBertConfig(
        dim=1024, num_heads=16, num_layers=24, ffn_dim=4096, text_co_ids=tuple(range(18, 24))
    )


def ctrl_vilbert() -> ViLBertConfig:
    """VOLTA's controlled ViLBERT (config/ctrl_vilbert_base.json): both streams BERT-base wide (768, 12
    heads, FFN 3072), co-attention at 768 with 12 heads; 6 text layers, then 6 x [co-attention, text +
    vision layer]; pooled 1024."""
    return ViLBertConfig(
        vision_dim=768,
        vision_heads=12,
        vision_ffn_dim=3072,
        co_dim=768,
        co_heads=12,
        vision_co_ids=(0, 1, 2, 3, 4, 5),
        text_co_ids=(6, 7, 8, 9, 10, 11),
        pooled_dim=1024,
    )


def vilbert_tiny() -> ViLBertConfig:
    """A tiny ViLBERT for tests: plan T0, C0, T1, V0, C1, V1."""
    return ViLBertConfig(
        **TINY_SIZES,
        region_feat_dim=TINY_REGION_FEAT_DIM,
        vision_dim=24,
        vision_heads=2,
        vision_ffn_dim=40,
        num_vision_layers=2,
        co_dim=28,
        co_heads=2,
        vision_co_ids=(0, 1),
        text_co_ids=(1, 2),
        pooled_dim=20,
        num_region_classes=11,
    )
