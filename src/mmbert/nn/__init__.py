"""Model-agnostic building blocks shared by every mmbert model."""

from mmbert.nn.attention import Attention, key_padding_bias
from mmbert.nn.block import Block, CrossBlock
from mmbert.nn.embeddings import TextEmbeddings
from mmbert.nn.feedforward import FeedForward
from mmbert.nn.heads import MLMHead, MLPClassifier, PairHead, Pooler, PredictionTransform, RegionHeads

__all__ = [
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
    "key_padding_bias",
]
