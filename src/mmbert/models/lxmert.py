"""LXMERT: Learning Cross-Modality Encoder Representations from Transformers
(Tan & Bansal 2019; arXiv:1908.07490).

Three encoders. The language encoder (9 BERT layers) runs over word + position + segment embeddings;
the object-relationship encoder (5 self-attention layers) over the visual feature encoder's output
(LN(Linear(feat)) + LN(Linear(4-d box))) / 2. Then 5 cross-modality layers: ONE cross-attention
``CrossBlock`` (no FFN) serves both directions — text queries over the vision states and vision
queries over the text states, both from the states before the layer — followed by a per-stream
``Block`` (self-attention + FFN). Pooled output: tanh(Linear) on the language [CLS].
Pre-training heads (reference shapes): MLM (tied), cross-modality matching (index 1 = matches, as in
LXMERT), masked object prediction (shared transform, then object 1600 / attribute 400 / feature 2048
decoders) and image QA (Linear(768, 1536), GELU, LN, Linear(1536, 9500)).

VOLTA's controlled LXMERT (e-bug/volta config/ctrl_lxmert.json, preset ``ctrl_lxmert``) is this model with
four named options, all off by default: the whole-image region first (``global_region="first"``, box
[0, 0, 1, 1], feature = mean of the real regions or ``global_feats``), 5-d locations (``location_dims=5``,
[x1, y1, x2, y2, area]), VOLTA's fused pooler (``pooling="volta"``: ReLU(Linear([CLS])) x ReLU(Linear(whole
image)), ``pooled_dim`` wide; the matching head reads it through dropout 0.1, volta/encoders.py
``BertPreTrainingHeads``) and one region decoder over the detector's 1601 classes (``num_object_labels=1601``,
no attribute / feature decoders, no answer head).

Matches Hugging Face ``LxmertModel`` / ``LxmertForPreTraining`` / ``LxmertForQuestionAnswering`` to
float precision (``mmbert.convert.hf_lxmert``). Deviations: padded regions are zeroed before the
visual feature encoder (``clear_padding``), so the vision output at *padded* positions differs from
Hugging Face's (meaningless there anyway); every real position is the same. In training,
Hugging Face builds the position and segment tables with ``padding_idx=0``, so position 0 and segment
0 never receive gradient there; ours do (as in BERT and the original LXMERT code).
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
    init_heads,
    text_embeddings_plan,
)
from mmbert.models.dual_stream import DualStreamModel, StreamStates, joined_maps, new_maps
from mmbert.models.heads import PretrainingHeads
from mmbert.nn import (
    FUSION_DROPOUT,
    Block,
    CrossBlock,
    MLPClassifier,
    PairHead,
    Pooler,
    RegionHeads,
)


@dataclass
class LxmertConfig(ModelConfig):
    model_type = "lxmert"

    num_layers: int = 9  # language encoder (l_layers)
    num_vision_layers: int = 5  # object-relationship encoder (r_layers)
    num_cross_layers: int = 5  # cross-modality encoder (x_layers)
    region_feat_dim: int = 2048  # visual_feat_dim
    num_qa_labels: int = 9500  # answers of the pre-training QA head; 0 = no answer head
    num_object_labels: int = 1600  # masked object classification; 0 = none
    num_attr_labels: int = 400  # masked attribute classification; 0 = none
    predict_region_feats: bool = True  # masked feature regression (region_feat_dim outputs)
    global_region: GlobalRegion = "none"  # LXMERT adds no whole-image region; "first": VOLTA's controlled one
    location_dims: int = 4  # box features: 4 = x1, y1, x2, y2 (LXMERT); 5 = + area (VOLTA)
    pooling: str = "cls"  # "volta": ReLU(Linear([CLS])) * ReLU(Linear(whole image)), pooled_dim wide
    pooled_dim: int = 0  # width of the "volta" pooler (0 = dim)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_global_region(self, allowed=("none", "first"))
        if self.location_dims not in (4, 5):
            raise ValueError(f"LxmertConfig.location_dims must be 4 or 5, got {self.location_dims}")
        if self.pooling not in ("cls", "volta"):
            raise ValueError(f"LxmertConfig.pooling must be 'cls' or 'volta', got {self.pooling!r}")
        if self.pooling == "volta" and self.global_region != "first":
            raise ValueError("LxmertConfig: pooling='volta' pools the whole-image region: global_region='first'")
        if self.pooled_dim < 0:
            raise ValueError(f"LxmertConfig.pooled_dim must be >= 0, got {self.pooled_dim}")
        for name in (
            "num_vision_layers",
            "num_cross_layers",
            "num_qa_labels",
            "num_object_labels",
            "num_attr_labels",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"LxmertConfig.{name} must be >= 0, got {getattr(self, name)}")
        self.check_positive("region_feat_dim")

    def region_outputs(self) -> dict[str, int]:
        """The masked-object-prediction decoders this config has, in Hugging Face's order."""
        outputs = {"class": self.num_object_labels, "attr": self.num_attr_labels}
        outputs = {k: v for k, v in outputs.items() if v > 0}
        if self.predict_region_feats:
            outputs["feat"] = self.region_feat_dim
        return outputs


class VisualFeatureEncoder(nn.Module):
    """(LN(Linear(feat)) + LN(Linear(location))) / 2, dropout: features and 4-d (or VOLTA's 5-d) box
    locations, each normalised."""

    def __init__(self, feat_dim: int, dim: int, dropout: float, eps: float, location_dims: int = 4) -> None:
        super().__init__()
        self.feat = nn.Linear(feat_dim, dim)
        self.feat_norm = nn.LayerNorm(dim, eps=eps)
        self.box = nn.Linear(location_dims, dim)
        self.box_norm = nn.LayerNorm(dim, eps=eps)
        self.location = f"{location_dims}d"
        self.dropout = dropout

    def forward(self, feats: Tensor, boxes: Tensor) -> Tensor:
        """feats (B, R, F), boxes (B, R, 4) normalised -> (B, R, D)."""
        location = location_features(boxes, self.location)  # type: ignore[arg-type]
        x = (self.feat_norm(self.feat(feats)) + self.box_norm(self.box(location))) / 2
        return F.dropout(x, self.dropout, self.training)


class CrossModalityLayer(nn.Module):
    """One shared cross-attention for both directions, then per-stream self-attention and FFN."""

    def __init__(self, c: LxmertConfig) -> None:
        super().__init__()
        eps = c.layer_norm_eps
        self.cross = CrossBlock(c.dim, c.dim, c.num_heads, None, None, c.dropout, c.attn_dropout, eps)
        self.text = Block(c.dim, c.num_heads, c.ffn_dim, c.dropout, c.attn_dropout, eps)
        self.vision = Block(c.dim, c.num_heads, c.ffn_dim, c.dropout, c.attn_dropout, eps)

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
    ) -> tuple[Tensor, Tensor, dict[str, Tensor | None]]:
        """text (B, T, D), vision (B, R, D) -> new text, new vision, and (if asked) the four maps.
        ``*_rows``: the real positions, whose padding the sublayers may skip (see ``Block``); ``*_keep``:
        the only rows read after this layer (the last one). The cross-attention runs at every row even
        then: each stream's self-attention takes its keys from all of them."""
        new_text, text_vision = self.cross(text, vision, vision_bias, need_weights, text_rows)
        new_vision, vision_text = self.cross(
            vision, text, text_bias, need_weights, vision_rows
        )  # same weights
        text, text_text = self.text(new_text, text_bias, need_weights, text_rows, text_keep)
        vision, vision_vision = self.vision(new_vision, vision_bias, need_weights, vision_rows, vision_keep)
        maps = {
            "text_vision": text_vision,
            "vision_text": vision_text,
            "text_text": text_text,
            "vision_vision": vision_vision,
        }
        return text, vision, maps


class Lxmert(DualStreamModel[LxmertConfig]):
    display_name = "LXMERT"

    def __init__(self, config: LxmertConfig) -> None:
        super().__init__(config)
        c = config
        self.region_embeddings = VisualFeatureEncoder(
            c.region_feat_dim, c.dim, c.dropout, c.layer_norm_eps, c.location_dims
        )
        self.text_layers = block_stack(c, c.num_layers)  # language encoder
        self.vision_layers = block_stack(c, c.num_vision_layers)  # object-relationship encoder
        self.cross_layers = nn.ModuleList(CrossModalityLayer(c) for _ in range(c.num_cross_layers))
        if c.pooling == "volta":
            self.text_pooler = Pooler(c.dim, c.pooled_dim or c.dim, activation="relu")
            self.vision_pooler = Pooler(c.dim, c.pooled_dim or c.dim, activation="relu")
        else:
            self.pooler = Pooler(c.dim)
        self.init_weights()

    def stream_layers(self, stream: str) -> list[nn.Module]:
        """The language encoder (text) and the object-relationship encoder (vision, after the visual
        feature encoder; with the whole-image region first where the config has one): all of each."""
        return list(self.text_layers if stream == "text" else self.vision_layers)

    def fuse(
        self,
        text: StreamStates,
        vision: StreamStates,
        output_attentions: bool = False,
        scored_rows: ScoredRows | None = None,
    ) -> Encoded:
        """The cross-modality encoder and the pooler: text (B, T, D), vision (B, R, D), pooled (B, D). With
        ``output_attentions``: ``text_text`` holds the language layers' maps then the cross-modality layers'
        text self-attention; ``vision_vision`` the object-relationship layers' then the cross-modality
        layers'; ``text_vision`` (B, H, T, R) and ``vision_text`` (B, H, R, T) one per cross-modality layer."""
        text_bias, text_rows = text.bias_and_rows(self.skip_padding)
        vision_bias, vision_rows = vision.bias_and_rows(self.skip_padding)
        keeps = self.kept_rows(scored_rows, text, vision)
        t, v = text.states, vision.states
        maps = new_maps(output_attentions)
        last = len(self.cross_layers) - 1
        for i, layer in enumerate(self.cross_layers):
            text_keep, vision_keep = keeps if i == last else (None, None)
            t, v, layer_maps = layer(
                t, v, text_bias, vision_bias, output_attentions, text_rows, vision_rows, text_keep, vision_keep
            )
            if maps is not None:
                for key, probs in layer_maps.items():
                    maps[key].append(probs)
        attentions = joined_maps(text.attentions, vision.attentions, maps) if output_attentions else None
        pooled = self.fused_pool(t, v) if self.config.pooling == "volta" else self.pooler(t)
        return Encoded(text=t, vision=v, pooled=pooled, attentions=attentions)

    def build_pretraining_heads(self) -> PretrainingHeads:
        c = self.config
        outputs = c.region_outputs()
        volta = c.pooling == "volta"
        return self.tied_heads(
            pair=PairHead(c.pooled_dim or c.dim, dropout=FUSION_DROPOUT) if volta else PairHead(c.dim),
            region=RegionHeads(c.dim, outputs, c.layer_norm_eps) if outputs else None,
            answer=self.build_answer_head(c.num_qa_labels) if c.num_qa_labels else None,
        )

    def build_answer_head(self, num_labels: int) -> MLPClassifier:
        """LXMERT's answer head over the pooled output: Linear(D, 2D), GELU, LN, Linear(2D, num_labels).
        Also the VQA / GQA fine-tuning head (3129 / 1534 answers)."""
        c = self.config
        head = MLPClassifier(c.dim, 2 * c.dim, num_labels, c.layer_norm_eps)
        init_heads(head, c.init_std)
        return head

    def text_init_map(self, num_bert_layers: int) -> list[tuple[str, str]]:
        """BERT's embeddings, its first 9 layers (the language encoder) and its pooler (same shape,
        same role on [CLS]; not with VOLTA's pooler). New: the visual feature encoder, the object-relationship and
        cross-modality encoders."""
        n = self.config.num_layers
        if num_bert_layers < n:
            raise ValueError(
                f"BERT checkpoint has {num_bert_layers} layers, LXMERT's language encoder needs {n}"
            )
        return [
            ("embeddings", "embeddings"),
            *((f"text_layers.{i}", f"layers.{i}") for i in range(n)),
            *([("pooler", "pooler")] if self.config.pooling == "cls" else []),
        ]

    def layer_plan(self) -> list[str]:
        c = self.config
        block = f"Block(dim {c.dim}, heads {c.num_heads}, ffn {c.ffn_dim})"
        return [
            text_embeddings_plan(c),
            f"region_embeddings: (LN(Linear({c.region_feat_dim}, {c.dim})) + LN(Linear({c.location_dims}, {c.dim})))"
            f" / 2 (global region: {c.global_region})",
            *(f"text_layers.{i}: {block} (language)" for i in range(c.num_layers)),
            *(f"vision_layers.{i}: {block} (object relationships)" for i in range(c.num_vision_layers)),
            *(
                f"cross_layers.{i}: shared CrossBlock(dim {c.dim}, heads {c.num_heads}) text->vision and "
                f"vision->text, then text {block}, vision {block}"
                for i in range(c.num_cross_layers)
            ),
            f"pooled: ReLU(Linear({c.dim}, {c.pooled_dim or c.dim})) on [CLS] * ReLU(Linear({c.dim}, "
            f"{c.pooled_dim or c.dim})) on the whole-image region"
            if c.pooling == "volta"
            else f"pooler: tanh(Linear({c.dim}, {c.dim})) on [CLS]",
        ]


def lxmert_base() -> LxmertConfig:
    """LXMERT as pre-trained (unc-nlp/lxmert-base-uncased): 9 language, 5 object-relationship,
    5 cross-modality layers at BERT-base width; 2048-d features."""
    return LxmertConfig()


def ctrl_lxmert() -> LxmertConfig:
    """VOLTA's controlled LXMERT (config/ctrl_lxmert.json): BERT-base sizes, 9 language, 5 object-relationship
    and 5 cross-modality layers, the whole-image region first, 5-d locations, the fused ReLU pooler at 1024
    and one region decoder over the detector's 1601 classes (VOLTA's visual target 0); no answer head."""
    return LxmertConfig(
        num_qa_labels=0,
        num_object_labels=1601,
        num_attr_labels=0,
        predict_region_feats=False,
        global_region="first",
        location_dims=5,
        pooling="volta",
        pooled_dim=1024,
    )


def lxmert_tiny() -> LxmertConfig:
    """A tiny LXMERT for tests."""
    return LxmertConfig(
        **TINY_SIZES,
        num_vision_layers=1,
        num_cross_layers=2,
        region_feat_dim=TINY_REGION_FEAT_DIM,
        num_qa_labels=7,
        num_object_labels=9,
        num_attr_labels=5,
    )
