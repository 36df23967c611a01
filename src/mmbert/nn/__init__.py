"""Model-agnostic building blocks shared by every mmbert model."""

from mmbert.nn.attention import Attention, key_padding_bias
from mmbert.nn.block import Block, CrossBlock, compile_layers, set_gradient_checkpointing
from mmbert.nn.embeddings import TextEmbeddings
from mmbert.nn.feedforward import FeedForward
from mmbert.nn.heads import (
    FUSION_DROPOUT,
    MLMHead,
    MLPClassifier,
    PairHead,
    Pooler,
    PredictionTransform,
    RegionHeads,
)
from mmbert.nn.masks import attention_mask, bidirectional_mask, captioning_mask, seq2seq_mask

__all__ = [
    "FUSION_DROPOUT",
    "Attention",
    "Block",
    "CrossBlock",
    "FeedForward",
    "MLMHead",
    "MLPClassifier",
    "PredictionTransform",
    "RegionHeads",
    "PairHead",
    "Pooler",
    "TextEmbeddings",
    "attention_mask",
    "bidirectional_mask",
    "captioning_mask",
    "compile_layers",
    "key_padding_bias",
    "seq2seq_mask",
    "set_gradient_checkpointing",
]
