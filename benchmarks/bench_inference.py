"""Realistic padded inference, mmbert vs Hugging Face transformers: BERT, VisualBERT, LXMERT and ViLBERT.

The setting of evaluation and feature-serving jobs: batches whose lengths follow real data, padded to
the batch's longest — VQA questions (about 7 words, 3 to 16) and COCO captions (about 11 words, 6 to 25),
tokenised at about 1.15 word pieces per word plus [CLS] and [SEP], and adaptive detector output (10 to
100 regions per image). One timed call encodes one batch of questions and one batch of captions, each
with its images, in eval mode under ``torch.no_grad``. mmbert skips the padded tokens and regions in
every projection and FFN; transformers computes every padded position (the JSON's ``flops`` counts
both sides' arithmetic). ViLBERT has no transformers
implementation: its reference is mmbert's own plain path (``skip_padding = False``: every padded
position computed, as the authors' code does). The encoders' outputs are asserted equal at the real
positions before anything is timed. Harness: ``benchmarks/common.py``.

    python benchmarks/bench_inference.py                                     # base presets, batch 32
    python benchmarks/bench_inference.py --size tiny --batch 4 --repeats 2   # quick check
Prints a table, then one JSON object on the last line (``inference_speedup`` per model).
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile

import bench_lxmert
import bench_models
import bench_visualbert
import common
import torch

import mmbert
from mmbert.nn import compile_layers

MODELS = ("bert", "visualbert", "lxmert", "vilbert")
WORKLOADS = {"vqa_questions": (7.0, 2.0, 3, 16), "coco_captions": (11.0, 2.5, 6, 25)}  # words: mean, std, min, max


def text_batch(batch: int, words: tuple[float, float, int, int], vocab: int, max_positions: int, g) -> tuple:
    mean, std, low, high = words
    n_words = (torch.randn(batch, generator=g) * std + mean).round().clamp(low, high)
    lengths = (n_words * 1.15).round().long().clamp(max=max_positions - 2) + 2  # + [CLS], [SEP]
    t = int(lengths.max())
    mask = torch.arange(t)[None] < lengths[:, None]
    ids = torch.randint(1000 if vocab > 2000 else 5, vocab, (batch, t), generator=g).masked_fill(~mask, 0)
    return ids, mask


def region_batch(batch: int, feat_dim: int, g, low: int = 10, high: int = 100) -> tuple:
    counts = torch.randint(low, high + 1, (batch,), generator=g)
    r = int(counts.max())
    mask = torch.arange(r)[None] < counts[:, None]
    feats = (torch.rand(batch, r, feat_dim, generator=g) * 2).masked_fill(~mask[..., None], 0)
    xy = torch.rand(batch, r, 2, generator=g) * 0.7
    boxes = torch.cat([xy, xy + torch.rand(batch, r, 2, generator=g) * 0.3], -1).masked_fill(~mask[..., None], 0)
    return feats, boxes, mask


def make_inputs(config, batch: int, device: str, vision: bool, seed: int = 3) -> list[dict]:
    """One batch per workload: mmbert's input names (text_ids, text_mask, ... region_mask)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for words in WORKLOADS.values():
        ids, mask = text_batch(batch, words, config.vocab_size, config.max_positions, g)
        x = {"text_ids": ids, "text_mask": mask, "segment_ids": torch.zeros_like(ids)}
        if vision:
            feats, boxes, rmask = region_batch(batch, config.region_feat_dim, g)
            x.update(region_feats=feats, region_boxes=boxes, region_mask=rmask)
        out.append({k: v.to(device) for k, v in x.items()})
    return out


# transformers' side of each model: its config and the text states the pre-training scripts compare
REFERENCES = {"bert": bench_models.SPEC, "visualbert": bench_visualbert.SPEC, "lxmert": bench_lxmert.SPEC}


def build_pair(name: str, size: str, device: str):
    """(mmbert encoder, reference forward on mmbert inputs -> its text states (B, T, D), what the reference is)."""
    preset = f"{name}_{size}"
    torch.manual_seed(0)
    if name == "vilbert":
        ours = mmbert.build_model(preset).to(device).eval()
        plain = copy.deepcopy(ours)
        plain.skip_padding = False
        return ours, lambda x: plain(**x).text, "mmbert ViLBERT, skip_padding=False (every padded position computed)"
    spec = REFERENCES[name]
    cls = spec.hf_class
    with tempfile.TemporaryDirectory() as d:
        ref = cls(spec.hf_config(preset))
        ref.save_pretrained(d)
        ours = mmbert.load_pretraining(d).encoder.to(device).eval()
    ref.to(device).eval()
    kernel = "sdpa" if name == "bert" else "eager (its only implementation)"
    reference = f"transformers {cls.__name__}, attention {kernel}, every padded position computed"
    return ours, lambda x: spec.hf_text(ref, x), reference


def time_compiled(ours, run_eager, batches: list[dict], args) -> dict:
    """mmbert eager vs ``mmbert.nn.compile_layers`` on the same batches: compile time (the first call),
    parity, and the median gain of alternating rounds."""
    compiled = copy.deepcopy(ours)
    compile_layers(compiled)

    def run_compiled():
        with torch.no_grad(), common.autocast(args.device, args.dtype):
            out = [compiled(**x).text for x in batches]
        common.sync(args.device)
        return out

    compile_s = common.timed(run_compiled)
    diff = max(
        common.max_abs_diff(a[x["text_mask"]], b[x["text_mask"]])
        for a, b, x in zip(run_compiled(), run_eager(), batches)
    )
    common.assert_parity({"compiled_vs_eager_max_abs_diff": (diff, 1e-4)})
    times = common.alternate({"eager": run_eager, "compiled": run_compiled}, args.repeats)
    m = common.medians(times)
    return {
        "compile_and_first_call_s": compile_s,
        "max_abs_diff_vs_eager": diff,
        "inference_s_median": m,
        "gain": m["eager"] / m["compiled"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", choices=["base", "tiny"], default="base")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    p.add_argument(
        "--compile", action="store_true", help="also time mmbert with mmbert.nn.compile_layers (vs eager)"
    )
    common.add_common_args(p, repeats=5)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    result: dict = {
        "benchmark": "padded_inference",
        "batch": args.batch,
        "workloads": {k: {"words_mean_std_min_max": v} for k, v in WORKLOADS.items()},
        "regions_per_image": [10, 100],
        **common.environment(args.threads, args.device, args.dtype),
        "repeats": args.repeats,
        "models": {},
    }
    rows = []
    for name in args.models:
        ours, ref_fn, reference = build_pair(name, args.size, args.device)
        batches = make_inputs(ours.config, args.batch, args.device, vision=name != "bert")
        padding = {
            "text_real_fraction": [float(x["text_mask"].float().mean()) for x in batches],
            "regions_real_fraction": [float(x["region_mask"].float().mean()) for x in batches if "region_mask" in x],
        }

        def run_ours(batches=batches, ours=ours, dtype=args.dtype):
            with torch.no_grad(), common.autocast(args.device, dtype):
                out = [ours(**x).text for x in batches]
            common.sync(args.device)
            return out

        def run_ref(batches=batches, ref_fn=ref_fn, dtype=args.dtype):
            with torch.no_grad(), common.autocast(args.device, dtype):
                out = [ref_fn(x) for x in batches]
            common.sync(args.device)
            return out

        diffs = [  # in fp32, whatever --dtype times
            common.max_abs_diff(a[x["text_mask"]], b[x["text_mask"]])
            for a, b, x in zip(run_ours(dtype="fp32"), run_ref(dtype="fp32"), batches)
        ]
        parity = common.assert_parity({"text_hidden_max_abs_diff_real_tokens": (max(diffs), 1e-4)})
        flops = common.flops_record(
            common.count_flops(lambda: run_ours(dtype="fp32")), common.count_flops(lambda: run_ref(dtype="fp32"))
        )
        times = common.alternate({common.MMBERT: run_ours, common.HF: run_ref}, args.repeats)
        result["models"][name] = {
            "preset": f"{name}_{args.size}",
            "reference": reference,
            "mmbert": "encoder forward, padded tokens and regions skipped in every projection and FFN, SDPA",
            "padding": padding,
            "parity": parity,
            "flops": flops,
            "inference_s": times,
            "inference_s_median": common.medians(times),
        }
        if args.compile:
            result["models"][name]["compiled"] = time_compiled(ours, run_ours, batches, args)
        m = common.medians(times)
        rows.append((f"{name} inference (s)", m[common.MMBERT], m[common.HF], f"{common.speedup(times):.2f}x"))
        g = flops["gflop"]
        rows.append((f"{name} forward (GFLOP)", g[common.MMBERT], g[common.HF], f"{flops['ratio']:.2f}x"))
        del ours, ref_fn
    result["inference_speedup"] = {
        name: r["inference_s_median"][common.HF] / r["inference_s_median"][common.MMBERT]
        for name, r in result["models"].items()
    }
    common.print_rows(rows)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
