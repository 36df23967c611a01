"""LXMERT pre-training step, mmbert vs Hugging Face ``transformers.LxmertForPreTraining``, in one run.

Same config, same weights (the HF model is saved and loaded by ``mmbert.load_pretraining``), same batch:
captions of 7 to 20 tokens padded to the batch's longest, 36 regions of 2048-d features, 15 % of tokens
and regions masked, every LXMERT objective: masked LM, cross-modality matching, object prediction as
LXMERT's code scores it (object and attribute CE x confidence at every region, feature SmoothL1 at the
masked ones; x 1 / 0.15 on both sides, averaged over all B x R regions) and image QA (dropped for
mismatched pairs on both sides). Each side runs its library's public training path: mmbert's
``Pretraining`` (recipe "lxmert") and ``LxmertForPreTraining(labels=,
obj_labels=, matched_label=, ans=)``; the same optimizer (``mmbert.train.optim.build_optimizer``). Loss
and hidden states are asserted equal (eval mode) before anything is timed. ViLBERT (no Hugging Face
counterpart) is timed alone on the same batch through ``Pretraining`` (MLM + ITM + KL to the detector's
class distribution). Harness: ``benchmarks/common.py``.

    python benchmarks/bench_lxmert.py                                   # lxmert_base, batch 8, 36 regions
    python benchmarks/bench_lxmert.py --preset lxmert_tiny --vilbert vilbert_tiny --repeats 2  # quick check
Prints a table, then one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile

import common
import torch
import transformers

import mmbert
from mmbert.convert.hf_lxmert import to_hf_config
from mmbert.data.batch import Batch
from mmbert.nn import set_gradient_checkpointing
from mmbert.objectives import Pretraining
from mmbert.objectives.regions import LXMERT_VISUAL_LOSS_NORMALIZER
from mmbert.train.optim import build_optimizer

COMPUTES = {
    common.MMBERT: {
        "entry": "mmbert.Pretraining(load_pretraining(dir))(batch).loss; recipe lxmert: mlm obj attr feat itm qa",
        "scored_positions": "MLM transform + vocabulary projection only at the labelled tokens; region heads "
        "at every region (as HF)",
        "padding": "padded text tokens skipped in every projection and FFN (masked as keys)",
        "attention": "training: mmbert.nn.attention.dropout_attention (boolean dropout mask); eval: SDPA",
        "memory": "boolean dropout masks, GELU recomputed in backward, sparse word-lookup gradient",
        "optimizer": "mmbert.train.optim.build_optimizer: AdamW fused, wd 0.01 (not biases/LayerNorm)",
    },
    common.HF: {
        "entry": "transformers.LxmertForPreTraining(labels=, obj_labels=, matched_label=, ans=).loss",
        "scored_positions": "MLM logits at every token, region heads at every region, losses weighted",
        "padding": "every padded position computed (additive key mask)",
        "attention": "eager matmul + softmax (the only implementation HF LXMERT has)",
        "optimizer": "the same build_optimizer (fused AdamW, same groups)",
    },
}
SHAPE_ARGS = ("preset", "batch", "seq", "regions")


def hf_config(preset: str) -> transformers.LxmertConfig:
    fields = to_hf_config(mmbert.MODELS[preset](), True)
    cfg = transformers.LxmertConfig(**{k: v for k, v in fields.items() if k != "architectures"})
    # the same region-loss scale on both sides: mmbert's 1 / 0.15 (Hugging Face rounds it to 6.67)
    cfg.visual_loss_normalizer = LXMERT_VISUAL_LOSS_NORMALIZER
    return cfg


def make_batch(config, batch: int, seq: int, regions: int, device: str, seed: int = 1) -> Batch:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000 if config.vocab_size > 2000 else 5, config.vocab_size, (batch, seq), generator=g)
    lengths = torch.randint(min(7, seq), seq + 1, (batch,), generator=g)
    lengths[0] = seq
    mask = torch.arange(seq)[None] < lengths[:, None]
    ids[~mask] = 0
    selected = (torch.rand(batch, seq, generator=g) < 0.15) & mask
    selected[:, 1] = True
    feats = torch.rand(batch, regions, config.region_feat_dim, generator=g) * 2  # ReLU-like detector features
    xy = torch.rand(batch, regions, 2, generator=g) * 0.7
    region_sel = torch.rand(batch, regions, generator=g) < 0.15
    region_sel[:, 0] = True
    pair = torch.randint(0, 2, (batch,), generator=g)
    num_obj = getattr(config, "num_object_labels", 1600)
    num_attr = getattr(config, "num_attr_labels", 400)
    num_qa = getattr(config, "num_qa_labels", 0) or 1
    num_cls = getattr(config, "num_region_classes", num_obj)
    return Batch(
        text_ids=ids,
        text_mask=mask,
        segment_ids=torch.zeros(batch, seq, dtype=torch.long),
        region_feats=feats,
        region_boxes=torch.cat([xy, xy + torch.rand(batch, regions, 2, generator=g) * 0.3], -1),
        region_mask=torch.ones(batch, regions, dtype=torch.bool),
        mlm_labels=torch.where(selected, ids, torch.full_like(ids, -100)),
        pair_labels=pair,
        region_labels=torch.randint(0, num_obj, (batch, regions), generator=g),
        region_obj_conf=torch.rand(batch, regions, generator=g),
        region_attr_labels=torch.randint(0, num_attr, (batch, regions), generator=g),
        region_attr_conf=torch.rand(batch, regions, generator=g),
        region_targets=feats,
        region_target_mask=region_sel,
        region_cls_prob=torch.randn(batch, regions, num_cls, generator=g).softmax(-1),
        answer_targets=torch.randint(0, num_qa, (batch,), generator=g),
    ).to(device)


def hf_inputs(b: Batch) -> dict:
    return dict(
        input_ids=b.text_ids,
        attention_mask=b.text_mask.long(),
        token_type_ids=b.segment_ids,
        visual_feats=b.region_feats,
        visual_pos=b.region_boxes,
    )


def hf_loss(ref, b: Batch) -> torch.Tensor:
    sel = b.region_target_mask.float()
    return ref(
        **hf_inputs(b),
        labels=b.mlm_labels,
        matched_label=b.pair_labels,  # HF LXMERT: 1 = matches, as mmbert
        ans=b.answer_targets.masked_fill(b.pair_labels == 0, -100),  # no QA on mismatched pairs (LXMERT)
        obj_labels={  # as lxmert_pretrain.py: object / attribute labels at every region, features at masked ones
            "obj": (b.region_labels, b.region_obj_conf),
            "attr": (b.region_attr_labels, b.region_attr_conf),
            "feat": (b.region_targets, sel),
        },
    ).loss


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
        objective = Pretraining(model.to(args.device).train())
        return model, lambda: objective(batch).loss
    ref = (
        transformers.LxmertForPreTraining.from_pretrained(weights_dir)
        if weights_dir
        else transformers.LxmertForPreTraining(hf_config(args.preset))
    )
    ref.to(args.device).train()
    return ref, lambda: hf_loss(ref, batch)


def time_vilbert(args) -> dict:
    """ViLBERT's pre-training step through ``Pretraining`` (no reference implementation to compare)."""
    torch.manual_seed(0)
    model = mmbert.PretrainingModel(mmbert.build_model(args.vilbert)).to(args.device).train()
    c = model.config
    b = make_batch(c, args.batch, args.seq, args.regions, args.device)
    b.region_feats = b.region_feats[..., : c.region_feat_dim]
    objective = Pretraining(model)
    opt = build_optimizer(model, lr=1e-5)
    times = common.alternate(
        {"vilbert": lambda: common.train_step(lambda: objective(b).loss, opt, args.device, args.dtype)}, args.repeats
    )
    return {
        "preset": args.vilbert,
        "objectives": list(objective.objective_names),
        "parameters": model.encoder.num_parameters(),
        "step_s_median": statistics.median(times["vilbert"]),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="lxmert_base", choices=[m for m in mmbert.MODELS if m.startswith("lxmert")])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=20)
    p.add_argument("--regions", type=int, default=36)
    p.add_argument("--vilbert", default="vilbert_base", help="ViLBERT preset timed alone ('none' to skip)")
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
        transformers.LxmertForPreTraining(hf_config(args.preset)).save_pretrained(d)
        ours, ours_loss = build_side(args, common.MMBERT, d)
        ref, ref_loss = build_side(args, common.HF, d)
    b = make_batch(ours.config, args.batch, args.seq, args.regions, args.device)

    ours.eval()
    ref.eval()
    with torch.no_grad():
        text = ours.encoder(**b.model_inputs()).text
        text_ref = ref.lxmert(**hf_inputs(b)).language_output
        real = b.text_mask  # mmbert leaves zeros at padded tokens; their values are meaningless either way
        parity = common.assert_parity(
            {
                "language_output_max_abs_diff_real_tokens": (common.max_abs_diff(text[real], text_ref[real]), 1e-4),
                "loss_abs_diff": (abs(float(ours_loss()) - float(ref_loss())), 1e-4),
            }
        )
    saved = {}
    for side, model, loss_fn, layers in (
        (
            common.MMBERT,
            ours,
            ours_loss,
            [*ours.encoder.text_layers, *ours.encoder.vision_layers, *ours.encoder.cross_layers],
        ),
        (
            common.HF,
            ref,
            ref_loss,
            [*ref.lxmert.encoder.layer, *ref.lxmert.encoder.r_layers, *ref.lxmert.encoder.x_layers],
        ),
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
        "benchmark": "lxmert_pretraining_step",
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
        "vilbert_alone": None if args.vilbert == "none" else time_vilbert(args),
    }
    common.print_rows(common.pretraining_rows(result))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
