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

import argparse
import json
import tempfile

import common
import torch
import transformers

import mmbert
from mmbert.convert.hf_bert import to_hf_config
from mmbert.data.batch import Batch
from mmbert.nn import set_gradient_checkpointing
from mmbert.objectives import Pretraining
from mmbert.train.optim import build_optimizer

COMPUTES = {
    common.MMBERT: {
        "entry": "mmbert.Pretraining(load_pretraining(dir))(batch).loss; recipe bert: mlm + nsp",
        "scored_positions": "MLM transform + vocabulary projection only at the labelled tokens (mlm_positions)",
        "padding": "none in this batch (full sequences); padded tokens would be skipped in projections/FFN",
        "attention": "training: mmbert.nn.attention.dropout_attention (boolean dropout mask); eval: SDPA",
        "memory": "boolean dropout masks, GELU recomputed in backward, sparse word-lookup gradient",
        "optimizer": "mmbert.train.optim.build_optimizer: AdamW fused, wd 0.01 (not biases/LayerNorm)",
    },
    common.HF: {
        "entry": "transformers.BertForPreTraining(labels=, next_sentence_label=).loss",
        "scored_positions": "MLM logits at every one of the B x T positions, loss over the labelled ones",
        "padding": "none in this batch",
        "attention": "attn_implementation='sdpa' (with dropout in training: SDPA's unfused path)",
        "optimizer": "the same build_optimizer (fused AdamW, same groups)",
    },
}
SHAPE_ARGS = ("preset", "batch", "seq")


def hf_config(preset: str) -> transformers.BertConfig:
    fields = to_hf_config(mmbert.MODELS[preset](), True)
    cfg = transformers.BertConfig(**{k: v for k, v in fields.items() if k != "architectures"})
    cfg._attn_implementation = "sdpa"
    return cfg


def make_batch(config, batch: int, seq: int, device: str, seed: int = 1) -> Batch:
    g = torch.Generator().manual_seed(seed)
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
    ).to(device)


def hf_loss(ref, b: Batch) -> torch.Tensor:
    return ref(
        input_ids=b.text_ids,
        attention_mask=b.text_mask.long(),
        token_type_ids=b.segment_ids,
        labels=b.mlm_labels,
        next_sentence_label=1 - b.pair_labels,  # HF: 0 = is the next sentence
    ).loss


def build_side(args, side: str, weights_dir: str | None = None):
    """(model, zero-argument loss function) for one side; weights from ``weights_dir`` or random."""
    config = mmbert.MODELS[args.preset]()
    batch = make_batch(config, args.batch, args.seq, args.device)
    torch.manual_seed(0)
    if side == common.MMBERT:
        model = (
            mmbert.load_pretraining(weights_dir)
            if weights_dir
            else mmbert.PretrainingModel(mmbert.build_model(args.preset))
        )
        if args.checkpointing:
            set_gradient_checkpointing(model)
        objective = Pretraining(model.to(args.device).train())
        return model, lambda: objective(batch).loss
    ref = (
        transformers.BertForPreTraining.from_pretrained(weights_dir)
        if weights_dir
        else transformers.BertForPreTraining(hf_config(args.preset))
    )
    ref.to(args.device).train()
    return ref, lambda: hf_loss(ref, batch)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="bert_base", choices=[m for m in mmbert.MODELS if m.startswith("bert")])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=128)
    common.add_common_args(p, repeats=5)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.worker:
        common.memory_worker(args, lambda side: build_side(args, side))
        return

    memory = None if args.no_memory else common.measure_memory(__file__, args, SHAPE_ARGS, checkpointing=True)
    if args.memory_only:
        print(json.dumps({"benchmark": "pretraining_step_memory", **common.worker_shape(args, SHAPE_ARGS), **memory}))
        return
    with tempfile.TemporaryDirectory() as d:
        torch.manual_seed(0)
        transformers.BertForPreTraining(hf_config(args.preset)).save_pretrained(d)
        ours, ours_loss = build_side(args, common.MMBERT, d)
        ref, ref_loss = build_side(args, common.HF, d)
    batch = make_batch(ours.config, args.batch, args.seq, args.device)

    ours.eval()
    ref.eval()
    with torch.no_grad():
        hidden = ours.encoder(batch.text_ids, batch.text_mask, batch.segment_ids).text
        hidden_ref = ref.bert(
            input_ids=batch.text_ids, attention_mask=batch.text_mask.long(), token_type_ids=batch.segment_ids
        ).last_hidden_state
        parity = common.assert_parity(
            {
                "hidden_max_abs_diff": (common.max_abs_diff(hidden, hidden_ref), 1e-4),
                "loss_abs_diff": (abs(float(ours_loss()) - float(ref_loss())), 1e-4),
            }
        )
    saved = {}
    for side, model, loss_fn, layers in (
        (common.MMBERT, ours, ours_loss, ours.encoder.layers),
        (common.HF, ref, ref_loss, ref.bert.encoder.layer),
    ):
        model.train()
        meter = common.SavedActivations(layers, model)
        meter.run(loss_fn)
        saved[side] = meter.summary()

    opt_o, opt_r = build_optimizer(ours, lr=1e-5), build_optimizer(ref, lr=1e-5)
    times = common.alternate(
        {
            common.MMBERT: lambda: common.train_step(ours_loss, opt_o, args.device, args.dtype),
            common.HF: lambda: common.train_step(ref_loss, opt_r, args.device, args.dtype),
        },
        args.repeats,
    )
    result = {
        "benchmark": "bert_pretraining_step",
        "preset": args.preset,
        "batch": args.batch,
        "seq": args.seq,
        **common.environment(args.threads, args.device, args.dtype),
        "repeats": args.repeats,
        "parity": parity,
        "computes": COMPUTES,
        "step_s": times,
        "step_s_median": common.medians(times),
        "step_speedup": common.speedup(times),
        "saved_for_backward": saved,
        **(memory or {}),
    }
    common.print_rows(common.pretraining_rows(result))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
