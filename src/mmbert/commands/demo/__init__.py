"""``mmbert demo``: the survey's whole story on the built-in synthetic world, in 5-6 minutes on 2 CPU cores.

1. Generate the world (cached): scenes, simulated detector features, captions, VQA, retrieval pools.
2. Pre-train a small V&L model with its paper's objectives (``objectives.Pretraining`` recipes) on the
   training captions, with the trainer of ``mmbert.train``.
3. Fine-tune VQA in a low-data regime (about 1000 questions) from that pre-training and from scratch,
   same budget, several seeds; compare with a text-only BERT and the per-question-type majority answer.
4. Zero-shot image-text retrieval with the pre-trained match head (100 images x 5 captions).
5. Write ``runs/demo/``: results.json, report.md (the table), loss curves and an attention picture.

Everything goes through the same readers as real data: the feature store (``mmbert.features``), the COCO
captions reader, the VQA v2 / Karpathy-split task readers. The checks (``checks.py``) are judged on the
world's held-out test split and a failed one makes ``mmbert demo`` exit with status 1. Run time: 5-6
minutes on 2 otherwise idle CPU cores (317-341 s measured: pre-training about 150 s, VQA 160-175 s; the README
says the same; a busy machine takes longer).
``--quick`` is a seconds-long smoke version whose checks are reported, not enforced.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from mmbert.atomic import atomic_write_json
from mmbert.commands.demo.checks import EVAL_SPLITS, acceptance, exit_status
from mmbert.commands.demo.experiment import (
    finetune_vqa,
    first_items,
    left_chance_at,
    majority_baseline,
    pretrain,
    read_curve,
    zero_shot_retrieval,
)
from mmbert.commands.demo.plan import DEFAULT_MODEL, QUICK, DemoPlan, build_encoder, demo_config, train_config
from mmbert.commands.demo.plots import attention_picture, plot_curves
from mmbert.commands.demo.report import mean, write_report
from mmbert.commands.demo.world import ensure_world, vqa_files


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the main job: pre-train, fine-tune and compare on the synthetic world")
    p.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"a registered model, run at the demo's size (default {DEFAULT_MODEL})",
    )
    p.add_argument("--out", default="runs/demo", help="output directory (default runs/demo)")
    p.add_argument(
        "--cache", default="runs/cache", help="where generated worlds are kept (default runs/cache)"
    )
    p.add_argument("--seed", type=int, default=0, help="world and pre-training seed")
    p.add_argument("--quick", action="store_true", help="a seconds-long smoke run (tiny world and budget)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads for the model (default 1: the models are tiny, and a second thread "
                        "only contends; the data loader gets its own process)")  # fmt: skip
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mmbert.data.tokenizer import Tokenizer
    from mmbert.models import MODELS
    from mmbert.objectives.pretraining import recipe_for
    from mmbert.tasks.vqa import VQATask

    if args.model not in MODELS:
        raise KeyError(f"unknown model {args.model!r}; available: {', '.join(MODELS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    plan = QUICK if args.quick else DemoPlan()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    quiet = False
    timings: dict[str, float] = {}
    start = time.perf_counter()

    t = time.perf_counter()
    world = ensure_world(Path(args.cache), plan, args.seed)
    timings["world_s"] = time.perf_counter() - t
    tok = Tokenizer.from_pretrained(world)
    answers = json.loads((world / "vqa" / "answers.json").read_text())
    print(f"world: {world} ({tok.vocab_size} words, {len(answers)} answers)")

    # pre-training
    t = time.perf_counter()
    runs = out / "runs"
    if runs.exists():
        shutil.rmtree(runs)
    pretrained, objectives, pre_metrics, pre_curve = pretrain(world, tok, plan, args.model, len(answers),
                                                              runs / "pretrain", args.seed, quiet)  # fmt: skip
    timings["pretrain_s"] = time.perf_counter() - t
    shown = {k: v for k, v in pre_metrics.items() if k.endswith(("loss", "acc"))}
    print("pre-training done: " + ", ".join(f"{k}={v:.3f}" for k, v in shown.items()))

    # zero-shot retrieval with the match head
    t = time.perf_counter()
    retrieval = None
    from mmbert.train.pretrain_data import builds_pairs

    if builds_pairs(objectives):  # VL-BERT pre-trains without matching: it has no match head to rank with
        retrieval = zero_shot_retrieval(world, tok, pretrained, plan)
        retrieval["chance_r@1"] = 100.0 / retrieval["num_images"]
    timings["retrieval_s"] = time.perf_counter() - t

    # VQA: the same low-data fine-tuning from pre-training, from scratch, and text-only
    t = time.perf_counter()
    task = VQATask(answer_list=answers, max_text_len=plan.max_text_len, max_regions=None)
    train_full = task.load(vqa_files(world, "train"), tok, world / "features.tsv")
    train_data = torch.utils.data.Subset(train_full, range(min(plan.vqa_questions, len(train_full))))
    # val: the split the budget and thresholds were tuned on; test: held out, where the checks are judged
    evals = {split: first_items(task.load(vqa_files(world, split), tok, world / "features.tsv"), plan.eval_questions)
             for split in EVAL_SPLITS}  # fmt: skip
    text_task = VQATask(answer_list=answers, max_text_len=plan.max_text_len)
    text_train = torch.utils.data.Subset(
        text_task.load(vqa_files(world, "train"), tok), range(len(train_data))
    )
    text_evals = {split: first_items(text_task.load(vqa_files(world, split), tok), plan.eval_questions)
                  for split in EVAL_SPLITS}  # fmt: skip
    train_anns = [
        train_full.info["annotations"][train_full.records[i]["question_id"]] for i in train_data.indices
    ]
    by_split: dict[str, dict[str, Any]] = {
        split: {"train_questions": len(train_data), f"{split}_questions": len(data),
                "majority": majority_baseline(train_anns, data.info["annotations"])}
        for split, data in evals.items()
    }  # fmt: skip
    curves: dict[str, list[dict]] = {"pretrained": [], "from_scratch": [], "text_only": []}
    config = demo_config(args.model, plan, tok.vocab_size, len(answers))
    bert_config = demo_config("bert_tiny", plan, tok.vocab_size, len(answers))
    attention = None
    for name in ("pretrained", "from_scratch", "text_only"):
        scores: dict[str, list[float]] = {split: [] for split in EVAL_SPLITS}
        per_type: dict[str, list[dict]] = {split: [] for split in EVAL_SPLITS}
        for seed in plan.seeds:
            if name == "pretrained":
                encoder = build_encoder(config)
                encoder.load_state_dict(pretrained.encoder.state_dict())
            else:
                torch.manual_seed(1000 + seed)
                encoder = build_encoder(bert_config if name == "text_only" else config)
            print(f"VQA fine-tuning: {name}, seed {seed}")
            data = (text_train, text_evals) if name == "text_only" else (train_data, evals)
            metrics, curve, model = finetune_vqa(text_task if name == "text_only" else task, encoder, *data, plan,
                                                 seed, runs / f"vqa-{name}-{seed}", tok.pad_id, quiet)  # fmt: skip
            for split, m in metrics.items():
                scores[split].append(m["overall"])
                per_type[split].append(m["perQuestionType"])
            curves[name].append(curve)
            if name == "pretrained" and seed == plan.seeds[0]:
                attention = attention_picture(out, world, tok, model)
        for split in EVAL_SPLITS:
            types = per_type[split][0]
            by_split[split][name] = {"seeds": scores[split], "mean": mean(scores[split]),
                                     "per_type": {k: mean([p[k] for p in per_type[split]]) for k in types}}  # fmt: skip
    timings["vqa_s"] = time.perf_counter() - t

    pictures = plot_curves(out, pre_curve, curves)
    timings["total_s"] = time.perf_counter() - start
    manifest = json.loads((world / "manifest.json").read_text())
    results = {
        "model": args.model,
        "parameters": sum(p.numel() for p in pretrained.encoder.parameters()),
        "uses_boxes": bool(getattr(pretrained.encoder, "needs_boxes", True)),
        "plan": dataclasses.asdict(plan),
        "world": {"path": str(world), "images": manifest["num_images"], "seed": manifest["seed"],
                  "feat_dim": plan.feat_dim},
        "pretraining": {"objectives": objectives, "final": pre_metrics, "curve": pre_curve,
                        "qa_left_out": "qa" in recipe_for(config.model_type).objectives,
                        "itm_left_chance_at_step": left_chance_at(pre_curve)},
        "retrieval_zero_shot": retrieval,
        "vqa": by_split["val"],
        "vqa_test": by_split["test"],
        "attention": attention,
        "pictures": [*pictures, *(["attention.png"] if attention else [])],
        "timings": {k: round(v, 1) for k, v in timings.items()},
    }  # fmt: skip
    results["acceptance"] = acceptance(results)
    results["checks_enforced"] = not args.quick  # --quick's budget is far too small for the thresholds
    atomic_write_json(out / "results.json", results)
    table = write_report(out, results)
    print()
    print(table)
    print()
    for c in results["acceptance"]:
        print(f"{'PASS' if c['pass'] else 'FAIL'}: {c['what']} ({c['value']})")
    print(f"\nwrote {out}/results.json, report.md, {', '.join(results['pictures'])} "
          f"in {timings['total_s']:.0f} s")  # fmt: skip
    return exit_status(results["acceptance"], results["checks_enforced"])


__all__ = [
    "DEFAULT_MODEL",
    "QUICK",
    "DemoPlan",
    "exit_status",
    "acceptance",
    "attention_picture",
    "build_encoder",
    "demo_config",
    "ensure_world",
    "finetune_vqa",
    "left_chance_at",
    "majority_baseline",
    "plot_curves",
    "pretrain",
    "read_curve",
    "register",
    "run",
    "train_config",
    "vqa_files",
    "write_report",
    "zero_shot_retrieval",
]
