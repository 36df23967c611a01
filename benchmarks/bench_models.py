"""BERT pre-training step, mmbert vs Hugging Face ``transformers.BertForPreTraining``, in one run.

Same config, same weights (the HF model is saved and loaded by ``mmbert.load_pretraining``), same batch:
full 128-token sequences (pre-training packs sentences to the maximum length), 15 % MLM targets, NSP.
Each side runs its library's public training path: mmbert's ``Pretraining`` objective (recipe "bert":
MLM + NSP) and ``BertForPreTraining(labels=..., next_sentence_label=...)``; the same optimizer on both
(``mmbert.train.optim.build_optimizer``: fused AdamW, weight decay 0.01 except biases / LayerNorm).
The loss and hidden states are asserted equal (eval mode) before anything is timed; the JSON's
``computes`` says what each side computes. Harness: ``benchmarks/common.py``.

    python benchmarks/bench_models.py                                   # bert_base, batch 16 x 128, fp32
    python benchmarks/bench_models.py --preset bert_tiny --batch 4 --seq 32 --repeats 2   # quick check
Prints a table, then one JSON object on the last line.
"""

from __future__ import annotations

from collections.abc import Mapping

import common
import torch

from mmbert.data.batch import Batch

COMPUTES = common.computes(
    {
        "entry": "mmbert.Pretraining(load_pretraining(dir))(batch).loss; recipe bert: mlm + nsp",
        "padding": "none in this batch (full sequences); padded tokens would be skipped in projections/FFN",
    },
    {
        "entry": "transformers.BertForPreTraining(labels=, next_sentence_label=).loss",
        "scored_positions": "MLM logits at every one of the B x T positions, loss over the labelled ones",
        "padding": "none in this batch",
        "attention": "attn_implementation='sdpa' (with dropout in training: SDPA's unfused path)",
    },
)


def make_batch(config, a, g: torch.Generator) -> Batch:
    batch, seq = a.batch, a.seq
    ids = torch.randint(1000 if config.vocab_size > 2000 else 5, config.vocab_size, (batch, seq), generator=g)
    seg = torch.zeros(batch, seq, dtype=torch.long)
    seg[:, seq // 2 :] = 1
    selected = torch.rand(batch, seq, generator=g) < 0.15
    selected[:, 1] = True
    labels = torch.where(selected, ids, torch.full_like(ids, -100))
    return Batch(
        text_ids=ids,
        text_mask=torch.ones(batch, seq, dtype=torch.bool),
        segment_ids=seg,
        mlm_labels=labels,
        pair_labels=torch.randint(0, 2, (batch,), generator=g),
    )


def hf_text(ref, x: Mapping) -> torch.Tensor:
    return ref.bert(**common.hf_text_inputs(x)).last_hidden_state


def hf_loss(ref, b: Batch) -> torch.Tensor:
    return ref(
        **common.hf_text_inputs(b.model_inputs()),
        labels=b.mlm_labels,
        next_sentence_label=1 - b.pair_labels,  # HF: 0 = is the next sentence
    ).loss


SPEC = common.PretrainingSpec(
    preset="bert_base",
    sizes={"batch": 16, "seq": 128},
    hf_class_name="BertForPreTraining",
    make_batch=make_batch,
    hf_loss=hf_loss,
    hf_text=hf_text,
    layers=lambda ours: ours.encoder.layers,
    hf_layers=lambda ref: ref.bert.encoder.layer,
    parity_name="hidden_max_abs_diff",
    computes=COMPUTES,
    hf_settings={"_attn_implementation": "sdpa"},
)

if __name__ == "__main__":
    common.pretraining_main(SPEC, __file__, __doc__.split("\n")[0])
