"""LXMERT speed and memory, mmbert vs Hugging Face ``transformers.LxmertForPreTraining``, side by side.

Same config, same weights (the HF model is converted), same inputs. Measures
  * the pre-training step with every LXMERT objective: masked LM, cross-modality matching, masked
    object prediction (object CE x confidence, attribute CE x confidence, feature SmoothL1; each
    x 6.67 and averaged over all B x R regions, as HF does), image QA; then backward and an AdamW step
    (train mode, dropout on). Ours computes the MLM and region heads only at the masked tokens and
    regions (the same loss value: HF multiplies every other position by zero);
  * inference: the encoder forward in eval mode under no_grad;
alternating the two implementations and taking medians (the machine is shared; absolute times drift),
and the peak resident memory of each pre-training step in a process of its own. ViLBERT (no Hugging Face
counterpart) is measured alone on the same batch: MLM + alignment + KL to the detector's 1601-class
distribution at the masked regions, backward, AdamW; and inference.

    python benchmarks/bench_lxmert.py                                   # lxmert_base, batch 8 x 20 tokens, 36 regions
    python benchmarks/bench_lxmert.py --preset lxmert_tiny --vilbert vilbert_tiny --repeats 2  # quick check
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
import torch.nn.functional as F
import transformers
from common import peak_rss_mib, print_table, timed

import mmbert
from mmbert.convert.hf_lxmert import to_hf_config
from mmbert.objectives import MaskedLM, PairMatch

VISUAL_LOSS_NORMALIZER = 6.67  # LXMERT's 1 / 0.15


def hf_config(preset: str) -> transformers.LxmertConfig:
    config = mmbert.MODELS[preset]()
    return transformers.LxmertConfig(
        **{k: v for k, v in to_hf_config(config, True).items() if k != "architectures"}
    )


def save_reference(preset: str, path: str, seed: int = 0) -> None:
    torch.manual_seed(seed)
    transformers.LxmertForPreTraining(hf_config(preset)).save_pretrained(path)


def load(which: str, path: str):
    if which == "mmbert":
        model = mmbert.load_pretraining(path)
        model.encoder.word_embeddings.sparse = True  # what mmbert's Pretraining does when MLM is trained
        return model
    return transformers.LxmertForPreTraining.from_pretrained(path)


def make_batch(config, batch: int, seq: int, regions: int, seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    low = 1000 if config.vocab_size > 2000 else 5
    ids = torch.randint(low, config.vocab_size, (batch, seq), generator=g)
    lengths = torch.randint(seq // 2, seq + 1, (batch,), generator=g)
    lengths[0] = seq
    mask = torch.arange(seq)[None] < lengths[:, None]
    ids[~mask] = 0
    seg = torch.zeros(batch, seq, dtype=torch.long)
    selected = (torch.rand(batch, seq, generator=g) < 0.15) & mask
    selected[:, 1] = True
    labels = torch.where(selected, ids, torch.full_like(ids, -100))
    feats = torch.rand(batch, regions, config.region_feat_dim, generator=g) * 2  # ReLU-like detector features
    xy = torch.rand(batch, regions, 2, generator=g) * 0.7
    boxes = torch.cat([xy, xy + torch.rand(batch, regions, 2, generator=g) * 0.3], -1)
    region_sel = torch.rand(batch, regions, generator=g) < 0.15
    region_sel[:, 0] = True
    return {
        "ids": ids,
        "mask": mask,
        "seg": seg,
        "labels": labels,
        "feats": feats,
        "boxes": boxes,
        "matched": torch.randint(0, 2, (batch,), generator=g),
        "obj": torch.randint(0, config.num_object_labels, (batch, regions), generator=g),
        "obj_conf": torch.rand(batch, regions, generator=g),
        "attr": torch.randint(0, config.num_attr_labels, (batch, regions), generator=g),
        "attr_conf": torch.rand(batch, regions, generator=g),
        "region_sel": region_sel,
        "answer": torch.randint(0, config.num_qa_labels, (batch,), generator=g),
        "cls_prob": torch.randn(batch, regions, 1601, generator=g).softmax(-1),  # ViLBERT's KL target
    }


def ours_loss(model, b: dict) -> torch.Tensor:
    enc = model.encoder(b["ids"], b["mask"], b["seg"], b["feats"], b["boxes"])
    heads = model.heads
    sel = b["region_sel"]
    n_regions = sel.numel()  # HF averages over every region, masked or not
    loss = MaskedLM()(heads.mlm(enc.text, b["labels"] != -100), b["labels"]).loss
    loss = loss + PairMatch()(heads.pair(enc.pooled), b["matched"]).loss
    region = heads.region(enc.vision[sel])  # only the masked regions: (N, .)
    obj = F.cross_entropy(region["class"], b["obj"][sel], reduction="none") * b["obj_conf"][sel]
    attr = F.cross_entropy(region["attr"], b["attr"][sel], reduction="none") * b["attr_conf"][sel]
    feat = F.smooth_l1_loss(region["feat"], b["feats"][sel], reduction="none").mean(-1)
    loss = loss + (obj.sum() + attr.sum() + feat.sum()) / n_regions * VISUAL_LOSS_NORMALIZER
    return loss + F.cross_entropy(heads.answer(enc.pooled), b["answer"])


def hf_loss(model, b: dict) -> torch.Tensor:
    sel = b["region_sel"].float()
    out = model(
        input_ids=b["ids"],
        attention_mask=b["mask"].long(),
        token_type_ids=b["seg"],
        visual_feats=b["feats"],
        visual_pos=b["boxes"],
        labels=b["labels"],
        matched_label=b["matched"],
        ans=b["answer"],
        obj_labels={
            "obj": (b["obj"], b["obj_conf"] * sel),
            "attr": (b["attr"], b["attr_conf"] * sel),
            "feat": (b["feats"], sel),
        },
    )
    return out.loss


def vilbert_loss(model, b: dict) -> torch.Tensor:
    feats = b["feats"][..., : model.config.region_feat_dim]
    enc = model.encoder(b["ids"], b["mask"], b["seg"], feats, b["boxes"])
    heads = model.heads
    sel = b["region_sel"]
    loss = MaskedLM()(heads.mlm(enc.text, b["labels"] != -100), b["labels"]).loss
    loss = loss + PairMatch()(heads.pair(enc.pooled), b["matched"]).loss
    logits = heads.region(enc.vision[:, 1:][sel])["class"]  # skip the global region at index 0
    target = b["cls_prob"][sel]
    return loss + F.kl_div(logits.log_softmax(-1), target, reduction="batchmean")


def vilbert_infer(model, b: dict) -> torch.Tensor:
    with torch.no_grad():
        feats = b["feats"][..., : model.config.region_feat_dim]
        return model.encoder(b["ids"], b["mask"], b["seg"], feats, b["boxes"]).text


def step(loss_fn, model, opt, b: dict) -> float:
    loss = loss_fn(model, b)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return float(loss.detach())


def ours_infer(model, b: dict) -> torch.Tensor:
    with torch.no_grad():
        return model.encoder(b["ids"], b["mask"], b["seg"], b["feats"], b["boxes"]).text


def hf_infer(model, b: dict) -> torch.Tensor:
    with torch.no_grad():
        return model.lxmert(
            input_ids=b["ids"],
            attention_mask=b["mask"].long(),
            token_type_ids=b["seg"],
            visual_feats=b["feats"],
            visual_pos=b["boxes"],
        ).language_output


def memory_worker(args) -> None:
    """Load one implementation, run a few pre-training steps, print its peak RSS in MiB."""
    model = load(args.worker, args.checkpoint).train()
    b = make_batch(mmbert.MODELS[args.preset](), args.batch, args.seq, args.regions)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)  # as mmbert's trainer
    loss_fn = ours_loss if args.worker == "mmbert" else hf_loss
    for _ in range(2):
        step(loss_fn, model, opt, b)
    print(json.dumps({"peak_rss_mib": peak_rss_mib()}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--preset", default="lxmert_base", choices=[m for m in mmbert.MODELS if m.startswith("lxmert")]
    )
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=20)
    p.add_argument("--regions", type=int, default=36)
    p.add_argument("--repeats", type=int, default=5, help="timed rounds per implementation (alternating)")
    p.add_argument("--vilbert", default="vilbert_base", help="ViLBERT preset measured alone ('none' to skip)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--worker", choices=["mmbert", "hf"], help=argparse.SUPPRESS)
    p.add_argument("--checkpoint", help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.worker:
        memory_worker(args)
        return

    config = mmbert.MODELS[args.preset]()
    b = make_batch(config, args.batch, args.seq, args.regions)
    with tempfile.TemporaryDirectory() as checkpoint:
        save_reference(args.preset, checkpoint)
        ours, ref = load("mmbert", checkpoint), load("hf", checkpoint)

        # parity on this very batch before timing (eval mode: no dropout)
        ours.eval()
        ref.eval()
        real = b["mask"]  # outputs at padded tokens are meaningless (mmbert leaves zeros there)
        hidden_diff = float((ours_infer(ours, b)[real] - hf_infer(ref, b)[real]).abs().max())
        with torch.no_grad():
            loss_diff = abs(float(ours_loss(ours, b)) - float(hf_loss(ref, b)))

        ours.train()
        ref.train()
        opt_o = torch.optim.AdamW(ours.parameters(), lr=1e-5, fused=True)  # as mmbert's trainer
        opt_r = torch.optim.AdamW(ref.parameters(), lr=1e-5, fused=True)  # as mmbert's trainer
        step(ours_loss, ours, opt_o, b)  # warm-up (also allocates the optimiser state)
        step(hf_loss, ref, opt_r, b)
        step_o, step_r, inf_o, inf_r = [], [], [], []
        for i in range(args.repeats):  # alternate, and swap who goes first every round
            for which in ("mmbert", "hf") if i % 2 == 0 else ("hf", "mmbert"):
                if which == "mmbert":
                    step_o.append(timed(step, ours_loss, ours, opt_o, b))
                else:
                    step_r.append(timed(step, hf_loss, ref, opt_r, b))
        ours.eval()
        ref.eval()
        ours_infer(ours, b)
        hf_infer(ref, b)
        for _ in range(args.repeats):
            inf_o.append(timed(ours_infer, ours, b))
            inf_r.append(timed(hf_infer, ref, b))
        del ours, ref, opt_o, opt_r

        def peak(worker: str) -> float:
            cmd = [
                sys.executable,
                __file__,
                "--worker",
                worker,
                "--checkpoint",
                checkpoint,
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
            return json.loads(out.strip().splitlines()[-1])["peak_rss_mib"]

        mem_o, mem_r = peak("mmbert"), peak("hf")

    vilbert = None
    if args.vilbert != "none":
        torch.manual_seed(0)
        model = mmbert.PretrainingModel(mmbert.build_model(args.vilbert)).train()
        b["cls_prob"] = b["cls_prob"][..., : model.config.num_region_classes].softmax(-1)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)  # as mmbert's trainer
        step(vilbert_loss, model, opt, b)
        vstep = [timed(step, vilbert_loss, model, opt, b) for _ in range(args.repeats)]
        model.eval()
        vilbert_infer(model, b)
        vinf = [timed(vilbert_infer, model, b) for _ in range(args.repeats)]
        vilbert = {
            "preset": args.vilbert,
            "parameters": model.encoder.num_parameters(),
            "step_s_median": statistics.median(vstep),
            "inference_s_median": statistics.median(vinf),
            "step_examples_per_s": args.batch / statistics.median(vstep),
        }
        del model, opt

    n = args.batch
    result = {
        "benchmark": "lxmert_pretraining_step_and_inference",
        "preset": args.preset,
        "batch": args.batch,
        "seq": args.seq,
        "regions": args.regions,
        "region_feat_dim": config.region_feat_dim,
        "dtype": "float32",
        "threads": args.threads,
        "repeats": args.repeats,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "parity_max_abs_diff_language_output": hidden_diff,
        "parity_abs_diff_total_loss": loss_diff,
        "step_s_median": {"mmbert": statistics.median(step_o), "hf": statistics.median(step_r)},
        "step_examples_per_s": {"mmbert": n / statistics.median(step_o), "hf": n / statistics.median(step_r)},
        "step_speedup": statistics.median(step_r) / statistics.median(step_o),
        "inference_s_median": {"mmbert": statistics.median(inf_o), "hf": statistics.median(inf_r)},
        "inference_speedup": statistics.median(inf_r) / statistics.median(inf_o),
        "step_peak_rss_mib": {"mmbert": mem_o, "hf": mem_r},
        "step_memory_ratio": mem_o / mem_r,
        "vilbert_alone": vilbert,
    }
    print_table(result, mem_o, mem_r)
    if vilbert:
        print(
            f"{args.vilbert + ' step / inference (s)':<26}{vilbert['step_s_median']:>12.3f}"
            f"{vilbert['inference_s_median']:>14.3f}"
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
