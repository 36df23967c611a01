"""``mmbert field-tasks``: captioning, GQA, SNLI-VE and Flickr30K Entities on the synthetic world.

    mmbert field-tasks                      # ~10 minutes on 2 CPU cores; --quick: a seconds-long smoke run
    mmbert field-tasks --model uniter_tiny --out runs/field

The demo's world and pre-training (``mmbert demo``'s ``ensure_world`` and ``pretrain``: the model's paper
objectives on the training captions), then each task fine-tuned from that pre-training on its training split
and scored on the held-out test split with its official metric, next to its trivial baseline: captioning
against the most common training caption given to every image and against the same model fine-tuned from
scratch at the same budget (CIDEr-D); GQA against the majority answer; SNLI-VE against the majority class;
Flickr30K Entities against the expected recall of a random region. Writes ``<out>/results.json`` and
prints the table. The experiment lives here, not in the test suite (the tests use tiny budgets).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections import Counter
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

DEFAULT_MODEL = "uniter_tiny"  # single-stream (captioning needs one joint sequence) and reads the boxes


@dataclass(frozen=True)
class FieldPlan:
    # captioning in the low-data regime where a pre-trained start shows (1500 steps: from scratch catches up),
    # with Unified VLP's masked objective, which predicts tokens in place as the pre-trained MLM head does
    caption_objective: str = "masked"
    caption_steps: int = 500
    gqa_steps: int = 1000
    snli_ve_steps: int = 600
    flickr_steps: int = 800
    batch: int = 64
    lr: float = 1e-3
    eval_images: int = 200  # test images captioned
    beam_size: int = 3
    seed: int = 0


QUICK_FIELD = FieldPlan(caption_steps=4, gqa_steps=4, snli_ve_steps=4, flickr_steps=4, batch=8, eval_images=4)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "field-tasks",
        help="captioning, GQA, SNLI-VE, Flickr30K Entities on the synthetic world",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"a single-stream model (default {DEFAULT_MODEL})")
    p.add_argument("--out", default="runs/field", help="output directory (default runs/field)")
    p.add_argument(
        "--cache", default="runs/cache", help="where generated worlds are kept (default runs/cache)"
    )
    p.add_argument("--seed", type=int, default=0, help="world and pre-training seed")
    p.add_argument("--quick", action="store_true", help="a seconds-long smoke run")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.set_defaults(func=run)


def finetune(task, encoder, head, data, steps: int, plan: FieldPlan, run_dir: Path, pad_id: int):
    from mmbert.commands.demo import train_config
    from mmbert.tasks.base import TaskModel, collate
    from mmbert.tasks.objective import TaskObjective
    from mmbert.train.loop import train

    torch.manual_seed(plan.seed)
    model = TaskModel(encoder, head)
    cfg = train_config(steps, plan.batch, plan.lr, plan.seed, quiet=False)
    train(
        TaskObjective(task, model),
        data,
        partial(collate, pad_token_id=pad_id),
        cfg,
        run_dir,
        run_info={"field_tasks": task.name},
    )
    return model


def first_images(dataset, n: int):
    """The records of the first ``n`` images of a caption dataset (all their captions)."""
    from mmbert.tasks.base import TaskDataset

    keep = list(dict.fromkeys(r["image"] for r in dataset.records))[:n]
    wanted = set(keep)
    info = {
        **dataset.info,
        "references": {k: v for k, v in dataset.info["references"].items() if k in wanted},
    }
    return TaskDataset(
        [r for r in dataset.records if r["image"] in wanted], dataset._build, dataset.report, info
    )


def run(args: argparse.Namespace) -> int:
    from mmbert.commands.demo import QUICK, DemoPlan, build_encoder, demo_config, ensure_world, pretrain
    from mmbert.data.tokenizer import Tokenizer
    from mmbert.tasks import Flickr30KEntitiesTask, GQATask, SNLIVETask

    if args.threads:
        torch.set_num_threads(args.threads)
    demo_plan, plan = (QUICK, QUICK_FIELD) if args.quick else (DemoPlan(), FieldPlan(seed=args.seed))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    world = ensure_world(Path(args.cache), demo_plan, args.seed)
    tok = Tokenizer.from_pretrained(world)
    features = world / "features.tsv"
    num_answers = len(json.loads((world / "vqa" / "answers.json").read_text()))
    config = demo_config(args.model, demo_plan, tok.vocab_size, num_answers)
    pretrained, objectives, _, _ = pretrain(
        world, tok, demo_plan, args.model, num_answers, out / "runs" / "pretrain", args.seed, False
    )

    def encoder(from_pretrained: bool):
        torch.manual_seed(1000 + plan.seed)
        enc = build_encoder(config)
        if from_pretrained:
            enc.load_state_dict(pretrained.encoder.state_dict())
        return enc

    results: dict[str, Any] = {
        "model": args.model,
        "pretraining_objectives": objectives,
        "plan": dataclasses.asdict(plan),
        "world": str(world),
    }
    results["caption"] = caption_stage(world, tok, demo_plan, plan, pretrained, encoder, out)

    # GQA: fine-tuned from the pre-training vs the majority answer
    gqa = GQATask(max_text_len=demo_plan.max_text_len, max_regions=None)
    gqa_train = gqa.load(
        {"lxmert": world / "gqa" / "train.json", "answers": world / "gqa" / "trainval_ans2label.json"},
        tok,
        features,
    )
    gqa_test = gqa.load({"lxmert": world / "gqa" / "testdev.json"}, tok, features)
    enc = encoder(True)
    model = finetune(
        gqa, enc, gqa.build_head(enc), gqa_train, plan.gqa_steps, plan, out / "runs" / "gqa", tok.pad_id
    )
    metrics, _ = gqa.evaluate(model, gqa_test, batch_size=256)
    majority = Counter(max(r["label"], key=r["label"].get) for r in gqa_train.records).most_common(1)[0][0]
    from mmbert.tasks.gqa import gqa_accuracy

    results["gqa"] = {
        "finetuned": metrics,
        "majority_answer": majority,
        "majority": gqa_accuracy({q: majority for q in gqa_test.info["labels"]}, gqa_test.info["labels"]),
    }

    # SNLI-VE: fine-tuned vs the majority class (the classes are balanced: chance)
    ve = SNLIVETask(max_text_len=demo_plan.max_text_len, max_regions=None)
    ve_train = ve.load({"jsonl": world / "snli_ve" / "snli_ve_train.jsonl"}, tok, features)
    ve_test = ve.load({"jsonl": world / "snli_ve" / "snli_ve_test.jsonl"}, tok, features)
    enc = encoder(True)
    model = finetune(
        ve, enc, ve.build_head(enc), ve_train, plan.snli_ve_steps, plan, out / "runs" / "snli_ve", tok.pad_id
    )
    metrics, _ = ve.evaluate(model, ve_test, batch_size=256)
    top = Counter(r["label"] for r in ve_train.records).most_common(1)[0][0]
    results["snli_ve"] = {
        "finetuned": metrics,
        "majority": 100.0 * sum(r["label"] == top for r in ve_test.records) / len(ve_test.records),
    }

    # Flickr30K Entities: fine-tuned vs a random region
    fl = Flickr30KEntitiesTask(max_text_len=demo_plan.max_text_len, max_regions=None)
    root = world / "flickr30k_entities"

    def flickr_files(split: str) -> dict[str, Path]:
        return {
            "sentences": root / "Sentences",
            "annotations": root / "Annotations",
            "images": root / f"{split}.txt",
        }

    fl_train = fl.load(flickr_files("train"), tok, features)
    fl_test = fl.load(flickr_files("test"), tok, features)
    enc = encoder(True)
    model = finetune(
        fl, enc, fl.build_head(enc), fl_train, plan.flickr_steps, plan, out / "runs" / "flickr", tok.pad_id
    )
    metrics, _ = fl.evaluate(model, fl_test, batch_size=256)
    results["flickr30k_entities"] = {
        "finetuned": {k: v for k, v in metrics.items() if k != "chance"},
        "random_region": metrics["chance"],
    }
    results["total_s"] = round(time.perf_counter() - start, 1)
    from mmbert.atomic import atomic_write_json

    atomic_write_json(out / "results.json", results)
    print(table(results))
    return 0


def caption_stage(world: Path, tok, demo_plan, plan: FieldPlan, pretrained, encoder, out: Path) -> dict:
    """Captioning from the pre-training and from scratch at the same budget, and the constant caption."""
    from mmbert.tasks import CaptionTask
    from mmbert.tasks.caption_metrics import score_captions

    features = world / "features.tsv"
    task = CaptionTask(
        objective=plan.caption_objective, max_text_len=demo_plan.max_text_len, max_regions=None,
        max_caption_len=demo_plan.max_text_len - 2, beam_size=plan.beam_size, length_penalty=1.0,
    )  # fmt: skip
    train_caps = task.load({"captions": world / "captions_train.json"}, tok, features)
    test_caps = first_images(
        task.load({"captions": world / "captions_test.json"}, tok, features), plan.eval_images
    )
    caption: dict[str, Any] = {"objective": plan.caption_objective, "steps": plan.caption_steps}
    for name in ("pretrained", "from_scratch"):
        enc = encoder(name == "pretrained")
        head = task.build_head(enc)
        if name == "pretrained":  # the pre-trained MLM head (transform + bias; the decoder is tied)
            head.lm.load_state_dict(pretrained.heads.mlm.state_dict())
        model = finetune(task, enc, head, train_caps, plan.caption_steps, plan, out / "runs" / f"caption-{name}",
                         tok.pad_id)  # fmt: skip
        metrics, predictions = task.evaluate(model, test_caps, batch_size=50, progress=True)
        task.write_predictions(predictions, out / f"caption_{name}_results.json")
        caption[name] = metrics
    common = Counter(r["caption"] for r in train_caps.records).most_common(1)[0][0]
    refs = test_caps.info["references"]
    caption["constant_caption"] = {**score_captions({k: common for k in refs}, refs), "caption": common}
    return caption


def table(r: dict) -> str:
    c, g, v, f = r["caption"], r["gqa"], r["snli_ve"], r["flickr30k_entities"]
    rows = [
        (
            "caption",
            "CIDEr-D",
            f"constant caption {c['constant_caption']['cider']:.3f}; from scratch "
            f"{c['from_scratch']['cider']:.3f}",
            f"{c['pretrained']['cider']:.3f}",
        ),
        (
            "caption",
            "BLEU-4",
            f"constant {c['constant_caption']['bleu_4']:.3f}; scratch {c['from_scratch']['bleu_4']:.3f}",
            f"{c['pretrained']['bleu_4']:.3f}",
        ),
        (
            "gqa (testdev)",
            "accuracy %",
            f"majority {g['majority']['accuracy']:.2f}",
            f"{g['finetuned']['accuracy']:.2f}",
        ),
        (
            "snli-ve (test)",
            "accuracy %",
            f"majority {v['majority']:.2f}",
            f"{v['finetuned']['accuracy']:.2f}",
        ),
        (
            "flickr30k-entities (test)",
            "R@1 / R@5 %",
            f"random region {f['random_region']['r@1']:.1f} / {f['random_region']['r@5']:.1f}",
            f"{f['finetuned']['r@1']:.1f} / {f['finetuned']['r@5']:.1f}",
        ),
    ]
    lines = ["| task | metric | baseline | fine-tuned from pre-training |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {x} | {y} |" for a, b, x, y in rows]
    return "\n".join(lines)
