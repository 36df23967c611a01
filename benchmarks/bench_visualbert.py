"""VisualBERT speed and memory, mmbert vs Hugging Face ``transformers.VisualBertForPreTraining``, side by side.

Same config, same weights (the HF model is converted), same inputs: batch 32, 20 tokens + 36 regions of
2048-d features, fp32, VisualBERT-base. Measures
  * the pre-training step: forward + MLM and image-text-match losses + backward + AdamW step (train mode).
    mmbert scores only the masked tokens against the vocabulary (``mlm_positions``); Hugging Face takes
    labels over the whole joint sequence and scores all 56 positions;
  * inference: encoder forward in eval mode under no_grad;
alternating the two implementations and taking medians (the machine is shared; absolute times drift),
and the peak resident memory of each pre-training step, each in a process of its own.

    python benchmarks/bench_visualbert.py                                   # the measurement above
    python benchmarks/bench_visualbert.py --preset visualbert_tiny --batch 4 --repeats 2   # quick check
    python benchmarks/bench_visualbert.py --others      # also time unicoder_vl/vl_bert/uniter (no reference)
Prints a table, then one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
import transformers
from common import print_table, timed

import mmbert
from mmbert.convert.hf_visualbert import to_hf_config
from mmbert.objectives import MaskedLM, PairMatch


def hf_config(config) -> transformers.VisualBertConfig:
    fields = {k: v for k, v in to_hf_config(config, True).items() if k not in ("architectures", "model_type")}
    return transformers.VisualBertConfig(**fields)


def make_models(preset: str, seed: int = 0):
    config = mmbert.MODELS[preset]()
    torch.manual_seed(seed)
    ref = transformers.VisualBertForPreTraining(hf_config(config))
    with tempfile.TemporaryDirectory() as d:
        ref.save_pretrained(d)
        ours = mmbert.load_pretraining(d)
    ours.encoder.word_embeddings.sparse = True  # what mmbert's Pretraining does when MLM is trained
    return ours, ref, config


def make_batch(config, batch: int, seq: int, regions: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    low = 1000 if config.vocab_size > 2000 else 5
    ids = torch.randint(low, config.vocab_size, (batch, seq), generator=g)
    mask = torch.ones(batch, seq, dtype=torch.bool)
    seg = torch.zeros(batch, seq, dtype=torch.long)
    feats = torch.randn(batch, regions, config.region_feat_dim, generator=g).relu()
    xy = torch.rand(batch, regions, 2, generator=g) * 0.5
    boxes = torch.cat([xy, xy + torch.rand(batch, regions, 2, generator=g) * 0.5], -1)
    rmask = torch.ones(batch, regions, dtype=torch.bool)
    selected = torch.rand(batch, seq, generator=g) < 0.15
    selected[:, 1] = True
    labels = torch.where(selected, ids, torch.full_like(ids, -100))
    match = torch.randint(0, 2, (batch,), generator=g)  # 1 = matches
    return dict(
        ids=ids, mask=mask, seg=seg, feats=feats, boxes=boxes, rmask=rmask, labels=labels, match=match
    )


def ours_step(model, opt, b) -> float:
    out = model(
        b["ids"],
        b["mask"],
        b["seg"],
        region_feats=b["feats"],
        region_boxes=b["boxes"],
        region_mask=b["rmask"],
        mlm_positions=b["labels"] != -100,
    )
    loss = MaskedLM()(out.mlm_logits, b["labels"]).loss
    if out.pair_logits is not None:  # VL-BERT pre-trains without a match head
        loss = loss + PairMatch("itm")(out.pair_logits, b["match"]).loss
    if out.region_class_logits is not None:  # the other single-stream models: masked region classes
        targets = torch.randint(0, out.region_class_logits.shape[-1], out.region_class_logits.shape[:2])
        picked = torch.rand(targets.shape) < 0.15
        loss = loss + F.cross_entropy(out.region_class_logits[picked], targets[picked])
    if out.region_feat_pred is not None:
        r = b["feats"].shape[1]
        loss = loss + F.mse_loss(out.region_feat_pred[:, -r:], b["feats"])
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return float(loss)


def hf_step(model, opt, b) -> float:
    r = b["feats"].shape[1]
    labels = torch.cat([b["labels"], torch.full((b["ids"].shape[0], r), -100)], 1)  # joint-sequence labels
    out = model(
        input_ids=b["ids"],
        attention_mask=b["mask"].long(),
        token_type_ids=b["seg"],
        visual_embeds=b["feats"],
        visual_attention_mask=b["rmask"].long(),
        labels=labels,
        sentence_image_labels=1 - b["match"],
    )  # HF: 0 = matches
    out.loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return float(out.loss)


def ours_infer(model, b):
    with torch.no_grad():
        return model.encoder(b["ids"], b["mask"], b["seg"], region_feats=b["feats"], region_mask=b["rmask"])


def hf_infer(model, b):
    with torch.no_grad():
        return model.visual_bert(
            input_ids=b["ids"],
            attention_mask=b["mask"].long(),
            token_type_ids=b["seg"],
            visual_embeds=b["feats"],
            visual_attention_mask=b["rmask"].long(),
        )


def memory_worker(args) -> None:
    """A few pre-training steps of one implementation, built alone; print its peak RSS in MiB."""
    config = mmbert.MODELS[args.preset]()
    torch.manual_seed(0)
    if args.worker == "hf":
        model, step = transformers.VisualBertForPreTraining(hf_config(config)), hf_step
    else:
        model, step = mmbert.PretrainingModel(mmbert.build_model(args.preset)), ours_step
        model.encoder.word_embeddings.sparse = True
    model.train()
    batch = make_batch(config, args.batch, args.seq, args.regions)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)  # as mmbert's trainer
    for _ in range(2):
        step(model, opt, batch)
    peak = {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    status = Path("/proc/self/status")
    if status.exists():  # this process's own high-water mark, as a cross-check (Linux)
        hwm = next((line for line in status.read_text().splitlines() if line.startswith("VmHWM:")), None)
        if hwm:
            peak["vm_hwm_mib"] = int(hwm.split()[1]) / 1024
    print(json.dumps(peak))


def time_others(args) -> dict[str, float]:
    """Pre-training step of the other single-stream models (no reference implementation exists)."""
    out = {}
    for name in ("unicoder_vl_base", "vl_bert_base", "uniter_base"):
        preset = name if args.preset.endswith("_base") else name.replace("_base", "_tiny")
        model = mmbert.PretrainingModel(mmbert.build_model(preset)).train()
        batch = make_batch(model.config, args.batch, args.seq, args.regions)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)  # as mmbert's trainer
        ours_step(model, opt, batch)
        out[preset] = statistics.median(timed(ours_step, model, opt, batch) for _ in range(args.repeats))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--preset",
        default="visualbert_base",
        choices=[m for m in mmbert.MODELS if m.startswith("visualbert")],
    )
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=20)
    p.add_argument("--regions", type=int, default=36)
    p.add_argument("--repeats", type=int, default=3, help="timed rounds per implementation (alternating)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument(
        "--others", action="store_true", help="also time the other single-stream models (mmbert only)"
    )
    p.add_argument("--memory-only", action="store_true", help="only the peak-memory comparison")
    p.add_argument("--worker", choices=["mmbert", "hf"], help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.worker:
        memory_worker(args)
        return

    def peak(worker: str) -> dict[str, float]:
        cmd = [
            sys.executable,
            __file__,
            "--worker",
            worker,
            "--preset",
            args.preset,
            "--batch",
            str(args.batch),
            "--seq",
            str(args.seq),
            "--regions",
            str(args.regions),
            "--threads",
            str(args.threads),
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        return json.loads(out.strip().splitlines()[-1])

    # First, while this process is small: a child starts with its parent's RSS high-water mark
    # (fork copies it, exec keeps it), so measuring after building the models here would report ours.
    mem = {"mmbert": peak("mmbert"), "hf": peak("hf")}
    mem_o, mem_r = mem["mmbert"]["peak_rss_mib"], mem["hf"]["peak_rss_mib"]
    if args.memory_only:
        print(
            json.dumps(
                {
                    "benchmark": "visualbert_pretraining_step_peak_memory",
                    "preset": args.preset,
                    "batch": args.batch,
                    "text_tokens": args.seq,
                    "regions": args.regions,
                    "step_peak_rss_mib": {"mmbert": mem_o, "hf": mem_r},
                    "step_memory_ratio": mem_o / mem_r,
                    "step_peak_vm_hwm_mib": {k: v.get("vm_hwm_mib") for k, v in mem.items()},
                }
            )
        )
        return

    ours, ref, config = make_models(args.preset)
    batch = make_batch(config, args.batch, args.seq, args.regions)
    # parity on this very batch before timing (eval mode: no dropout)
    ours.eval()
    ref.eval()
    diff = float(
        (ours_infer(ours, batch).text - hf_infer(ref, batch).last_hidden_state[:, : args.seq]).abs().max()
    )
    ours.train()
    ref.train()
    opt_o = torch.optim.AdamW(ours.parameters(), lr=1e-5, fused=True)  # as mmbert's trainer
    opt_r = torch.optim.AdamW(ref.parameters(), lr=1e-5, fused=True)  # as mmbert's trainer
    ours_step(ours, opt_o, batch)  # warm-up
    hf_step(ref, opt_r, batch)
    step_o, step_r, inf_o, inf_r = [], [], [], []
    for _ in range(args.repeats):
        step_o.append(timed(ours_step, ours, opt_o, batch))
        step_r.append(timed(hf_step, ref, opt_r, batch))
    ours.eval()
    ref.eval()
    ours_infer(ours, batch)
    hf_infer(ref, batch)
    for _ in range(args.repeats):
        inf_o.append(timed(ours_infer, ours, batch))
        inf_r.append(timed(hf_infer, ref, batch))
    del ours, ref, opt_o, opt_r

    n = args.batch
    result = {
        "benchmark": "visualbert_pretraining_step_and_inference",
        "preset": args.preset,
        "batch": args.batch,
        "text_tokens": args.seq,
        "regions": args.regions,
        "region_feat_dim": config.region_feat_dim,
        "dtype": "float32",
        "threads": args.threads,
        "repeats": args.repeats,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "parity_max_abs_diff_text_hidden": diff,
        "step_s_median": {"mmbert": statistics.median(step_o), "hf": statistics.median(step_r)},
        "step_examples_per_s": {"mmbert": n / statistics.median(step_o), "hf": n / statistics.median(step_r)},
        "step_speedup": statistics.median(step_r) / statistics.median(step_o),
        "inference_s_median": {"mmbert": statistics.median(inf_o), "hf": statistics.median(inf_r)},
        "inference_speedup": statistics.median(inf_r) / statistics.median(inf_o),
        "step_peak_rss_mib": {"mmbert": mem_o, "hf": mem_r},
        "step_memory_ratio": mem_o / mem_r,
        "step_peak_vm_hwm_mib": {k: v.get("vm_hwm_mib") for k, v in mem.items()},
    }
    if args.others:
        result["others_step_s_median"] = time_others(args)
    print_table(result, mem_o, mem_r)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
