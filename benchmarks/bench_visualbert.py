"""VisualBERT pre-training step, mmbert vs Hugging Face ``transformers.VisualBertForPreTraining``, in one run.

Same config, same weights (the HF model is saved and loaded by ``mmbert.load_pretraining``), same batch:
captions of COCO length (7 to 20 tokens, padded to the batch's longest), 36 regions of 2048-d features,
15 % MLM targets, image-text match labels. Each side runs its library's public training path: mmbert's
``Pretraining`` (MLM + ITM; ``score_mismatched=True`` so that both sides score the masked tokens of every
pair, as HF does) and ``VisualBertForPreTraining(labels=..., sentence_image_labels=...)``; the same
optimizer (``mmbert.train.optim.build_optimizer``). Loss and hidden states are asserted equal (eval mode)
before anything is timed. Harness: ``benchmarks/common.py``.

    python benchmarks/bench_visualbert.py                                   # visualbert_base, batch 32
    python benchmarks/bench_visualbert.py --preset visualbert_tiny --batch 4 --repeats 2   # quick check
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
from mmbert.convert.hf_visualbert import to_hf_config
from mmbert.data.batch import Batch
from mmbert.nn import set_gradient_checkpointing
from mmbert.objectives import Pretraining
from mmbert.train.optim import build_optimizer

COMPUTES = {
    common.MMBERT: {
        "entry": "mmbert.Pretraining(model, score_mismatched=True)(batch).loss: mlm + itm",
        "scored_positions": "MLM transform + vocabulary projection only at the labelled tokens (mlm_positions)",
        "padding": "padded text tokens skipped in every projection and FFN (masked as keys)",
        "attention": "training: mmbert.nn.attention.dropout_attention (boolean dropout mask); eval: SDPA",
        "memory": "boolean dropout masks, GELU recomputed in backward, sparse word-lookup gradient",
        "optimizer": "mmbert.train.optim.build_optimizer: AdamW fused, wd 0.01 (not biases/LayerNorm)",
    },
    common.HF: {
        "entry": "transformers.VisualBertForPreTraining(labels=, sentence_image_labels=).loss",
        "scored_positions": "MLM logits at all T + R joint positions, loss over the labelled tokens",
        "padding": "every padded position computed (additive key mask)",
        "attention": "eager matmul + softmax (the only implementation HF VisualBERT has)",
        "optimizer": "the same build_optimizer (fused AdamW, same groups)",
    },
}
SHAPE_ARGS = ("preset", "batch", "seq", "regions")


def hf_config(preset: str) -> transformers.VisualBertConfig:
    fields = to_hf_config(mmbert.MODELS[preset](), True)
    return transformers.VisualBertConfig(
        **{k: v for k, v in fields.items() if k not in ("architectures", "model_type")}
    )


def make_batch(config, batch: int, seq: int, regions: int, device: str, seed: int = 1) -> Batch:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000 if config.vocab_size > 2000 else 5, config.vocab_size, (batch, seq), generator=g)
    lengths = torch.randint(min(7, seq), seq + 1, (batch,), generator=g)
    lengths[0] = seq
    mask = torch.arange(seq)[None] < lengths[:, None]
    ids[~mask] = 0
    selected = (torch.rand(batch, seq, generator=g) < 0.15) & mask
    selected[:, 1] = True
    xy = torch.rand(batch, regions, 2, generator=g) * 0.5
    return Batch(
        text_ids=ids,
        text_mask=mask,
        segment_ids=torch.zeros(batch, seq, dtype=torch.long),
        region_feats=torch.randn(batch, regions, config.region_feat_dim, generator=g).relu(),
        region_boxes=torch.cat([xy, xy + torch.rand(batch, regions, 2, generator=g) * 0.5], -1),
        region_mask=torch.ones(batch, regions, dtype=torch.bool),
        mlm_labels=torch.where(selected, ids, torch.full_like(ids, -100)),
        pair_labels=torch.randint(0, 2, (batch,), generator=g),  # 1 = matches
    ).to(device)


def hf_inputs(b: Batch) -> dict:
    return dict(
        input_ids=b.text_ids,
        attention_mask=b.text_mask.long(),
        token_type_ids=b.segment_ids,
        visual_embeds=b.region_feats,
        visual_attention_mask=b.region_mask.long(),
    )


def hf_loss(ref, b: Batch) -> torch.Tensor:
    r = b.region_feats.shape[1]
    labels = torch.cat([b.mlm_labels, b.mlm_labels.new_full((b.size, r), -100)], 1)  # joint-sequence labels
    return ref(**hf_inputs(b), labels=labels, sentence_image_labels=1 - b.pair_labels).loss  # HF: 0 = matches


def build_side(args, side: str, weights_dir: str | None = None):
    config = mmbert.MODELS[args.preset]()
    batch = make_batch(config, args.batch, args.seq, args.regions, args.device)
    torch.manual_seed(0)
    if side == common.MMBERT:
        model = (
            mmbert.load_pretraining(weights_dir)
            if weights_dir
            else mmbert.PretrainingModel(mmbert.build_model(args.preset))
        )
        if args.checkpointing:
            set_gradient_checkpointing(model)
        objective = Pretraining(model.to(args.device).train(), score_mismatched=True)
        return model, lambda: objective(batch).loss
    ref = (
        transformers.VisualBertForPreTraining.from_pretrained(weights_dir)
        if weights_dir
        else transformers.VisualBertForPreTraining(hf_config(args.preset))
    )
    ref.to(args.device).train()
    return ref, lambda: hf_loss(ref, batch)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--preset", default="visualbert_base", choices=[m for m in mmbert.MODELS if m.startswith("visualbert")]
    )
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=20)
    p.add_argument("--regions", type=int, default=36)
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
        transformers.VisualBertForPreTraining(hf_config(args.preset)).save_pretrained(d)
        ours, ours_loss = build_side(args, common.MMBERT, d)
        ref, ref_loss = build_side(args, common.HF, d)
    b = make_batch(ours.config, args.batch, args.seq, args.regions, args.device)

    ours.eval()
    ref.eval()
    with torch.no_grad():
        text = ours.encoder(**b.model_inputs()).text
        text_ref = ref.visual_bert(**hf_inputs(b)).last_hidden_state[:, : args.seq]
        real = b.text_mask  # mmbert leaves zeros at padded tokens; their values are meaningless either way
        parity = common.assert_parity(
            {
                "text_hidden_max_abs_diff_real_tokens": (common.max_abs_diff(text[real], text_ref[real]), 1e-4),
                "loss_abs_diff": (abs(float(ours_loss()) - float(ref_loss())), 1e-4),
            }
        )
    saved = {}
    for side, model, loss_fn, layers in (
        (common.MMBERT, ours, ours_loss, ours.encoder.layers),
        (common.HF, ref, ref_loss, ref.visual_bert.encoder.layer),
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
        "benchmark": "visualbert_pretraining_step",
        "preset": args.preset,
        "batch": args.batch,
        "text_tokens_max": args.seq,
        "text_tokens_real_fraction": float(b.text_mask.float().mean()),
        "regions": args.regions,
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
