"""BERT speed and memory, mmbert vs Hugging Face transformers, side by side in one run.

Same config, same weights (the HF model is converted), same inputs. Measures
  * the pre-training step: forward + MLM/NSP loss + backward + AdamW step (train mode, dropout on);
  * inference: encoder forward in eval mode under no_grad;
alternating the two implementations and taking medians (the machine is shared; absolute times drift),
and the peak resident memory of each pre-training step in a process of its own.

    python benchmarks/bench_models.py                      # bert_base, batch 16 x 128, fp32
    python benchmarks/bench_models.py --preset bert_tiny --batch 4 --seq 32 --repeats 3   # quick check
Prints a table, then one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile

import torch
import transformers
from common import peak_rss_mib, print_table, timed

import mmbert
from mmbert.convert.hf_bert import to_hf_config
from mmbert.objectives import MaskedLM, PairMatch


def make_models(preset: str, seed: int = 0):
    config = mmbert.MODELS[preset]()
    hf_cfg = transformers.BertConfig(
        **{k: v for k, v in to_hf_config(config, True).items() if k != "architectures"}
    )
    hf_cfg._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    ref = transformers.BertForPreTraining(hf_cfg)
    with tempfile.TemporaryDirectory() as d:
        ref.save_pretrained(d)
        ours = mmbert.load_pretraining(d)
    ours.encoder.word_embeddings.sparse = True  # what mmbert's Pretraining does when MLM is trained
    return ours, ref, config


def make_batch(config, batch: int, seq: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000 if config.vocab_size > 2000 else 5, config.vocab_size, (batch, seq), generator=g)
    mask = torch.ones(batch, seq, dtype=torch.bool)
    seg = torch.zeros(batch, seq, dtype=torch.long)
    seg[:, seq // 2 :] = 1
    selected = torch.rand(batch, seq, generator=g) < 0.15
    selected[:, 0] = True
    labels = torch.where(selected, ids, torch.full_like(ids, -100))
    nsp = torch.randint(0, 2, (batch,), generator=g)
    return ids, mask, seg, labels, nsp


def ours_step(model, opt, batch):
    ids, mask, seg, labels, nsp = batch
    out = model(ids, mask, seg, mlm_positions=labels != -100)
    loss = MaskedLM()(out.mlm_logits, labels).loss + PairMatch("nsp")(out.pair_logits, nsp).loss
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return float(loss.detach())


def hf_step(model, opt, batch):
    ids, mask, seg, labels, nsp = batch
    out = model(
        input_ids=ids,
        attention_mask=mask.long(),
        token_type_ids=seg,
        labels=labels,
        next_sentence_label=1 - nsp,
    )  # HF: 0 = is next
    out.loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return float(out.loss.detach())


def ours_infer(model, batch):
    ids, mask, seg, _, _ = batch
    with torch.no_grad():
        return model.encoder(ids, mask, seg).text


def hf_infer(model, batch):
    ids, mask, seg, _, _ = batch
    with torch.no_grad():
        return model.bert(input_ids=ids, attention_mask=mask.long(), token_type_ids=seg).last_hidden_state


def memory_worker(args) -> None:
    """Run a few pre-training steps of ONE implementation in this process; print its peak RSS in MiB.
    Only that model is ever built here (weights do not matter for memory), so the peak is the step's."""
    config = mmbert.MODELS[args.preset]()
    torch.manual_seed(0)
    if args.worker == "mmbert":
        model, step = mmbert.PretrainingModel(mmbert.build_model(args.preset)), ours_step
        model.encoder.word_embeddings.sparse = True
    else:
        hf_cfg = transformers.BertConfig(
            **{k: v for k, v in to_hf_config(config, True).items() if k != "architectures"}
        )
        hf_cfg._attn_implementation = "sdpa"
        model, step = transformers.BertForPreTraining(hf_cfg), hf_step
    model.train()
    batch = make_batch(config, args.batch, args.seq)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)  # as mmbert's trainer
    for _ in range(2):
        step(model, opt, batch)
    print(json.dumps({"peak_rss_mib": peak_rss_mib()}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--preset", default="bert_base", choices=[m for m in mmbert.MODELS if m.startswith("bert")]
    )
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--repeats", type=int, default=5, help="timed rounds per implementation (alternating)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--worker", choices=["mmbert", "hf"], help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.worker:
        memory_worker(args)
        return

    ours, ref, config = make_models(args.preset)
    batch = make_batch(config, args.batch, args.seq)
    ours.train()
    ref.train()
    opt_o = torch.optim.AdamW(ours.parameters(), lr=1e-5, fused=True)  # as mmbert's trainer
    opt_r = torch.optim.AdamW(ref.parameters(), lr=1e-5, fused=True)  # as mmbert's trainer
    # parity check on this very batch before timing (eval mode: no dropout)
    ours.eval()
    ref.eval()
    diff = float((ours_infer(ours, batch) - hf_infer(ref, batch)).abs().max())
    with torch.no_grad():
        o, r = (
            ours(*batch[:3]),
            ref(input_ids=batch[0], attention_mask=batch[1].long(), token_type_ids=batch[2]),
        )
    logit_diff = float((o.mlm_logits - r.prediction_logits).abs().max())
    ours.train()
    ref.train()
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

    def peak(worker: str) -> float:
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
            "--threads",
            str(args.threads),
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        return json.loads(out.strip().splitlines()[-1])["peak_rss_mib"]

    mem_o, mem_r = peak("mmbert"), peak("hf")
    n = args.batch
    result = {
        "benchmark": "bert_pretraining_step_and_inference",
        "preset": args.preset,
        "batch": args.batch,
        "seq": args.seq,
        "dtype": "float32",
        "threads": args.threads,
        "repeats": args.repeats,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "parity_max_abs_diff_hidden": diff,
        "parity_max_abs_diff_mlm_logits": logit_diff,
        "step_s_median": {"mmbert": statistics.median(step_o), "hf": statistics.median(step_r)},
        "step_examples_per_s": {"mmbert": n / statistics.median(step_o), "hf": n / statistics.median(step_r)},
        "step_speedup": statistics.median(step_r) / statistics.median(step_o),
        "inference_s_median": {"mmbert": statistics.median(inf_o), "hf": statistics.median(inf_r)},
        "inference_speedup": statistics.median(inf_r) / statistics.median(inf_o),
        "step_peak_rss_mib": {"mmbert": mem_o, "hf": mem_r},
        "step_memory_ratio": mem_o / mem_r,
    }
    print_table(result, mem_o, mem_r)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
