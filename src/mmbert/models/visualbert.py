"""VisualBERT: A Simple and Performant Baseline for Vision and Language (Li et al. 2019, arXiv:1908.03557).

Architecture: BERT's text embeddings (word + position + segment) and, for each region, a linear
projection of its detector feature + a visual segment embedding (type 1) + a visual position embedding
(position 0, plus the mean of the aligned words' position embeddings when ``image_text_alignment`` is
given); ONE LayerNorm over the joint sequence [text ; regions]; 12 shared post-LN Transformer layers;
a tanh pooler on [CLS]. Pre-trained with masked LM on the text and sentence-image matching.

Matches Hugging Face ``VisualBertModel`` / ``VisualBertForPreTraining`` exactly (parity-tested), with
these deviations: the match head puts "matches" at index 1 (HF: 0; the converter swaps the rows);
the MLM head scores text positions only (HF also scores every region against the vocabulary);
``bypass_transformer`` is not implemented (no released checkpoint uses it); ``visual_token_type_ids``
are ``region_segment`` (1, HF's default; 0 for the original uclanlp checkpoints). ``region_boxes``
are accepted and validated but not used: VisualBERT has no box input. An optional whole-image region
(``global_region``, off by default) follows DESIGN.md.
The ``image_text_alignment`` input is (B, R, K) word indices, -1 = none, as in Hugging Face.
``VisualBertTaskHead`` holds the Hugging Face task classifiers (VQA, NLVR2, multiple choice).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmbert.config import GlobalRegion, ModelConfig, check_global_region
from mmbert.models.base import TINY_REGION_FEAT_DIM, TINY_SIZES, Encoded, ModelInputs
from mmbert.models.heads import PretrainingHeads
from mmbert.models.single_stream import SingleStreamModel
from mmbert.nn import RegionHeads, TextEmbeddings


@dataclass
class VisualBertConfig(ModelConfig):
    model_type = "visualbert"

    region_feat_dim: int = 2048  # HF `visual_embedding_dim`: 2048 (VQA), 1024 (NLVR2), 512 (VCR)
    special_visual_initialize: bool = True  # visual segment/position tables start as copies of the text ones
    global_region: GlobalRegion = "none"  # whole-image region (mean of the real regions): first/last/none
    # Row of the visual segment table regions use: 1 (Hugging Face); 0 in the original uclanlp
    # pre-training, whose data passes no visual token types (its checkpoints load with 0).
    region_segment: int = 1
    # VOLTA's controlled VisualBERT: "volta" pooling (ReLU text x ReLU whole-image pooler, pooled_dim wide;
    # needs global_region "first") and a region head over the detector's classes (0 = none, as the paper)
    pooling: str = "cls"
    pooled_dim: int = 0
    num_region_classes: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_global_region(self)
        if self.type_vocab_size < 2:
            raise ValueError("VisualBertConfig.type_vocab_size must be >= 2 (regions use segment type 1)")
        self.check_positive("region_feat_dim")
        if self.pooling not in ("cls", "volta"):
            raise ValueError(f"VisualBertConfig.pooling must be 'cls' or 'volta', got {self.pooling!r}")
        if not 0 <= self.region_segment < self.type_vocab_size:
            raise ValueError(
                f"VisualBertConfig.region_segment {self.region_segment} is outside 0..{self.type_vocab_size - 1}"
            )


class VisualBertEmbeddings(nn.Module):
    """Text sum + region sum, then one LayerNorm over both (``text.norm``, BERT's embedding LayerNorm)."""

    def __init__(self, c: VisualBertConfig) -> None:
        super().__init__()
        self.text = TextEmbeddings.from_config(c)
        self.visual_proj = nn.Linear(c.region_feat_dim, c.dim)
        self.visual_segment = nn.Embedding(c.type_vocab_size, c.dim)
        self.visual_position = nn.Embedding(c.max_positions, c.dim)
        self.region_segment = c.region_segment
        self.dropout = c.dropout

    def forward(
        self,
        text_ids: Tensor,
        segment_ids: Tensor | None,
        region_feats: Tensor,
        image_text_alignment: Tensor | None = None,
    ) -> Tensor:
        """text_ids (B, T), region_feats (B, R, F), alignment (B, R, K) -> joint embeddings (B, T + R, D)."""
        text = self.text.summed(text_ids, segment_ids)
        vision = (
            self.visual_proj(region_feats)
            + self.visual_segment.weight[self.region_segment]
            + self.visual_position.weight[0]
        )
        if image_text_alignment is not None:
            aligned = image_text_alignment != -1  # (B, R, K)
            pos = self.text.position(image_text_alignment.clamp(min=0)) * aligned[..., None].to(vision.dtype)
            count = aligned.sum(-1, keepdim=True).clamp(min=1).to(vision.dtype)  # no aligned word: adds 0
            vision = vision + pos.sum(2) / count
        joint = torch.cat([text, vision], dim=1)
        return F.dropout(self.text.norm(joint), self.dropout, self.training)


class VisualBert(SingleStreamModel[VisualBertConfig]):
    embeddings_class = VisualBertEmbeddings
    needs_boxes = False

    def __init__(self, config: VisualBertConfig) -> None:
        super().__init__(config)
        if config.special_visual_initialize:
            with torch.no_grad():
                self.embeddings.visual_segment.weight.copy_(self.embeddings.text.segment.weight)
                self.embeddings.visual_position.weight.copy_(self.embeddings.text.position.weight)

    def check_extra_inputs(self, region_feats: Tensor, image_text_alignment: Tensor | None = None, **extra) -> None:
        super().check_extra_inputs(region_feats, **extra)  # global_feats included
        if image_text_alignment is None:
            return
        b, r = region_feats.shape[:2]
        a = image_text_alignment
        if a.dim() != 3 or a.shape[:2] != (b, r):
            raise ValueError(
                f"image_text_alignment has shape {tuple(a.shape)}, expected ({b}, {r}, K) to match region_feats"
            )
        if a.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"image_text_alignment must hold integer word indices, got dtype {a.dtype}")
        bad = (a < -1) | (a >= self.config.max_positions)
        if bool(bad.any()):
            i, j, k = bad.nonzero()[0].tolist()
            raise ValueError(
                f"image_text_alignment[{i}, {j}, {k}] = {int(a[i, j, k])} is not a word position "
                f"(0..{self.config.max_positions - 1}) or -1"
            )

    def embed(
        self, x: ModelInputs, image_text_alignment: Tensor | None = None, global_feats: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        # the whole-image region (if any) is aligned to no word
        region_feats, _, region_mask = self.with_global_region(
            x.region_feats, x.region_boxes, x.region_mask, global_feats
        )
        image_text_alignment = self.align_to_global(image_text_alignment, -1)
        joint = self.embeddings(x.text_ids, x.segment_ids, region_feats, image_text_alignment)
        return joint, torch.cat([x.text_mask, region_mask], 1)

    def build_pretraining_heads(self) -> PretrainingHeads:
        """Masked LM on the text and sentence-image matching (index 1 = matches); the paper has no
        region objectives."""
        c = self.config
        return self.tied_heads(
            pair=self.match_head(),
            region=RegionHeads(c.dim, {"class": c.num_region_classes}, c.layer_norm_eps)
            if c.num_region_classes
            else None,
        )

    def text_init_map(self, num_bert_layers: int) -> list[tuple[str, str]]:
        pairs = super().text_init_map(num_bert_layers)
        if self.config.special_visual_initialize:  # as HF: visual tables start as copies of the text ones
            pairs += [
                ("embeddings.visual_segment", "embeddings.segment"),
                ("embeddings.visual_position", "embeddings.position"),
            ]
        return pairs

    def layer_plan(self) -> list[str]:
        c = self.config
        return [
            f"embeddings.text: word {c.vocab_size}x{c.dim} + position {c.max_positions} + segment {c.type_vocab_size}",
            f"embeddings.visual: Linear({c.region_feat_dim}, {c.dim}) + visual segment (1) + visual position (0"
            " + mean of aligned words' positions)",
            f"embeddings.text.norm: one LayerNorm over [text ; regions] (global region: {c.global_region})",
            *self.block_plan(),
        ]


TASK_KINDS = ("question_answering", "visual_reasoning", "multiple_choice")


class VisualBertTaskHead(nn.Module):
    """The Hugging Face VisualBERT task classifiers, one Linear ``proj`` (HF ``cls``) after dropout:

    * ``question_answering`` (VQA): reads the text hidden state at index ``text_mask.sum(1) - 2`` (the
      last token before [SEP], "as in the original code") -> (B, num_labels);
    * ``visual_reasoning`` (NLVR2): the pooled output -> (B, num_labels);
    * ``multiple_choice`` (VCR): the pooled output of each (example, choice) row -> (B, C) with
      ``num_choices=C`` (rows ordered example-major, as HF flattens them).
    """

    def __init__(self, kind: str, dim: int, num_labels: int, dropout: float = 0.1) -> None:
        super().__init__()
        if kind not in TASK_KINDS:
            raise ValueError(f"unknown VisualBERT task head {kind!r}; choose from {TASK_KINDS}")
        if kind == "multiple_choice" and num_labels != 1:
            raise ValueError(
                f"a multiple-choice head scores each choice with 1 output, got num_labels={num_labels}"
            )
        self.kind = kind
        self.proj = nn.Linear(dim, num_labels)
        self.dropout = dropout

    def forward(
        self, enc: Encoded, text_mask: Tensor | None = None, num_choices: int | None = None
    ) -> Tensor:
        if self.kind == "question_answering":
            b, t, _ = enc.text.shape
            lengths = (
                text_mask.sum(1) if text_mask is not None else torch.full((b,), t, device=enc.text.device)
            )
            if bool((lengths < 2).any()):
                raise ValueError(
                    "the question-answering head reads token length-2: every text needs >= 2 tokens"
                )
            h = enc.text[torch.arange(b, device=enc.text.device), lengths - 2]
        else:
            h = enc.pooled
        logits = self.proj(F.dropout(h, self.dropout, self.training))
        if self.kind == "multiple_choice":
            if num_choices is None:
                raise ValueError("the multiple-choice head needs num_choices to group its rows")
            return logits.view(-1, num_choices)
        return logits


def visualbert_base() -> VisualBertConfig:
    """VisualBERT-base with 2048-d detector features (the VQA checkpoints; MMF's default)."""
    return VisualBertConfig()


def ctrl_visualbert() -> VisualBertConfig:
    """VOLTA's controlled VisualBERT (config/ctrl_visualbert_base.json): BERT-base sizes, the whole-image
    region first, pooled = ReLU(Linear([CLS])) * ReLU(Linear(whole image)) at 1024, and a region head over
    the detector's 1601 classes (VOLTA's visual target 0)."""
    return VisualBertConfig(
        special_visual_initialize=False,
        global_region="first",
        pooling="volta",
        pooled_dim=1024,
        num_region_classes=1601,
    )


def visualbert_tiny() -> VisualBertConfig:
    """A tiny VisualBERT for tests."""
    return VisualBertConfig(**TINY_SIZES, region_feat_dim=TINY_REGION_FEAT_DIM)
