"""BERT: Pre-training of Deep Bidirectional Transformers for Language Understanding (arXiv:1810.04805).

Word + position + segment embeddings (LayerNorm), a stack of post-LN ``Block``s, a tanh pooler on
[CLS]. Pre-trained with masked LM (decoder tied to the word embeddings) and next-sentence prediction.
Matches Hugging Face ``BertModel`` / ``BertForPreTraining`` exactly; the only deviation is that our NSP
head puts "is next" at index 1 (HF uses index 0); the converter swaps the rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mmbert.config import ModelConfig
from mmbert.models.base import (
    TINY_SIZES,
    Encoded,
    EncoderModel,
    ModelInputs,
    block_stack,
    check_text_inputs,
    text_embeddings_plan,
)
from mmbert.models.heads import PretrainingHeads
from mmbert.nn import PairHead, Pooler, TextEmbeddings, key_padding_bias


@dataclass
class BertConfig(ModelConfig):
    model_type = "bert"


class Bert(EncoderModel[BertConfig]):
    takes_scored_rows = True

    def __init__(self, config: BertConfig) -> None:
        super().__init__(config)
        c = config
        self.embeddings = TextEmbeddings.from_config(c)
        self.layers = block_stack(c, c.num_layers)
        self.pooler = Pooler(c.dim)
        self.init_weights()

    def encode_inputs(self, x: ModelInputs, output_attentions: bool = False, **extra: Any) -> Encoded:
        if x.has_regions():
            raise ValueError(
                "BERT is a text-only model: it takes no region_feats / region_boxes / region_mask"
            )
        if extra:
            raise TypeError(f"BERT got unexpected inputs {sorted(extra)}")
        text_ids, text_mask, segment_ids = x.text_ids, x.text_mask, x.segment_ids
        check_text_inputs(self.config, text_ids, text_mask, segment_ids)
        scored = x.scored_rows
        x = self.embeddings(text_ids, segment_ids)
        keep = scored.text_rows(text_ids.shape, x.device) if scored is not None else None
        bias = key_padding_bias(text_mask, x.dtype)
        x, maps = self.run_blocks(self.layers, x, text_mask, bias, output_attentions, keep)
        return Encoded(
            text=x,
            vision=None,
            pooled=self.pooler(x),
            attentions={"text_text": maps} if output_attentions else None,
        )

    def build_pretraining_heads(self) -> PretrainingHeads:
        return self.tied_heads(pair=PairHead(self.config.dim))

    def text_init_map(self, num_bert_layers: int) -> list[tuple[str, str]]:
        if num_bert_layers != self.config.num_layers:
            raise ValueError(
                f"BERT checkpoint has {num_bert_layers} layers, this model {self.config.num_layers}"
            )
        return [("embeddings", "embeddings"), ("layers", "layers"), ("pooler", "pooler")]

    def layer_plan(self) -> list[str]:
        c = self.config
        return [
            text_embeddings_plan(c),
            *(
                f"layers.{i}: Block(dim {c.dim}, heads {c.num_heads}, ffn {c.ffn_dim})"
                for i in range(c.num_layers)
            ),
            f"pooler: tanh(Linear({c.dim}, {c.dim})) on [CLS]",
        ]


def bert_base() -> BertConfig:
    """BERT-base: 12 layers, 768 hidden, 12 heads, 3072 FFN (110M parameters)."""
    return BertConfig()


def bert_large() -> BertConfig:
    """BERT-large: 24 layers, 1024 hidden, 16 heads, 4096 FFN (340M parameters)."""
    return BertConfig(dim=1024, num_heads=16, num_layers=24, ffn_dim=4096)


def bert_tiny() -> BertConfig:
    """A tiny BERT for tests and quick experiments."""
    return BertConfig(**TINY_SIZES)
