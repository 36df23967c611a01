"""``mmbert demo``: the survey's whole story on the built-in synthetic world, in a few minutes on a laptop.

1. Generate the world (cached): scenes, simulated detector features, captions, VQA, retrieval pools.
2. Pre-train a small V&L model with its paper's objectives (``objectives.Pretraining`` recipes) on the
   training captions, with the trainer of ``mmbert.train``.
3. Fine-tune VQA in a low-data regime (about 1000 questions) from that pre-training and from scratch,
   same budget, several seeds; compare with a text-only BERT and the per-question-type majority answer.
4. Zero-shot image-text retrieval with the pre-trained match head (100 images x 5 captions).
5. Write ``runs/demo/``: results.json, report.md (the table), loss curves and an attention picture.

Everything goes through the same readers as real data: the feature store (``mmbert.features``), the COCO
captions reader, the VQA v2 / Karpathy-split task readers. ``--quick`` is a seconds-long smoke version.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmbert.atomic import atomic_write, atomic_write_json, atomic_write_text

DEFAULT_MODEL = "visualbert_tiny"


@dataclass(frozen=True)
class DemoPlan:
    """The demo's budget. The default fits the 6-minute target on 2 CPU cores; ``QUICK`` is a smoke test."""

    images: int = 2000  # world size (80 % train, 10 % val, 10 % test)
    feat_dim: int = 64  # simulated detector feature width (real detectors: 2048)
    max_objects: int = 6
    dim: int = 64
    heads: int = 4
    layers: int = 2
    ffn_dim: int = 128
    dropout: float = 0.0  # tiny models on short budgets learn faster without it
    max_text_len: int = 36  # captions name the whole scene
    pretrain_steps: int = 2400  # the match loss sits at chance for 800-1300 steps first (trap 4)
    pretrain_batch: int = 64
    pretrain_lr: float = 2e-3
    vqa_questions: int = 1000  # the low-data fine-tuning regime
    vqa_steps: int = 800
    vqa_batch: int = 32
    vqa_lr: float = 1e-3
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)  # fine-tuning from a pre-trained start varies by seed: average 5
    retrieval_images: int = 100
    eval_questions: int = 1000
    workers: int = 1  # data-loader processes for pre-training (masking and reading run beside the model)


QUICK = DemoPlan(images=40, dim=32, heads=2, ffn_dim=64, pretrain_steps=6, pretrain_batch=16, vqa_questions=60,
                 vqa_steps=4, vqa_batch=16, seeds=(0,), retrieval_images=4, eval_questions=20, workers=0)  # fmt: skip


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


# ----------------------------------------------------------------------------------------- world --
def ensure_world(cache: Path, plan: DemoPlan, seed: int) -> Path:
    """The world for this plan and seed, generated once and then reused."""
    from mmbert.data.synthetic import WorldConfig, generate

    config = WorldConfig(feat_dim=plan.feat_dim, max_objects=plan.max_objects, max_extra_regions=2)
    path = cache / f"world-s{seed}-n{plan.images}-f{plan.feat_dim}-o{plan.max_objects}-v4"
    if (path / "manifest.json").exists():
        return path
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    from tqdm import tqdm

    bar = tqdm(desc="generate world", unit="image")

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    generate(tmp, plan.images, seed, config, nlvr2_pairs=0, progress=progress)
    bar.close()
    tmp.rename(path)
    return path


# ---------------------------------------------------------------------------------------- models --
def demo_config(name: str, plan: DemoPlan, vocab_size: int, num_answers: int):
    """The family of preset ``name`` at the demo's width: the family's tiny layer plan (dual-stream
    models keep their tiny co-attention plan), the world's vocabulary, features and detector classes."""
    from mmbert.data.synthetic import ATTRIBUTES, DETECTOR_CLASSES
    from mmbert.models import MODELS

    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(MODELS)}")
    family_tiny = name.rsplit("_", 1)[0] + "_tiny"
    preset = MODELS[family_tiny if family_tiny in MODELS else name]()
    names = {f.name for f in dataclasses.fields(preset)}
    over: dict[str, Any] = dict(dim=plan.dim, num_heads=plan.heads, ffn_dim=plan.ffn_dim, vocab_size=vocab_size,
                                dropout=plan.dropout, attn_dropout=plan.dropout,
                                max_positions=64, region_feat_dim=plan.feat_dim, vision_dim=plan.dim,
                                vision_heads=plan.heads, vision_ffn_dim=plan.ffn_dim, co_dim=plan.dim,
                                co_heads=plan.heads, pooled_dim=plan.dim,
                                num_region_classes=len(DETECTOR_CLASSES), num_object_labels=len(DETECTOR_CLASSES),
                                num_attr_labels=len(ATTRIBUTES), num_qa_labels=num_answers)  # fmt: skip
    if not any(n.endswith("co_ids") or n == "num_cross_layers" for n in names):
        over["num_layers"] = plan.layers
    return preset.replace(**{k: v for k, v in over.items() if k in names})


def build_encoder(config) -> nn.Module:
    from mmbert.models import model_class

    return model_class(config)(config)


def train_config(plan_steps: int, batch: int, lr: float, seed: int, quiet: bool, workers: int = 0):
    from mmbert.train.config import TrainConfig

    return TrainConfig(max_steps=plan_steps, batch_size=batch, lr=lr, warmup_steps=max(1, plan_steps // 10),
                       schedule="linear", seed=seed, device="cpu", save_every=0, keep_last=1,
                       log_every=max(1, min(10, plan_steps // 20)), progress=not quiet,
                       num_workers=workers)  # fmt: skip


def read_curve(run_dir: Path, keys: tuple[str, ...]) -> dict[str, list]:
    """The trainer's metrics.jsonl as {"step": [...], key: [...]} for the keys it logged."""
    curve: dict[str, list] = {"step": []}
    path = run_dir / "metrics.jsonl"
    for line in path.read_text().splitlines() if path.exists() else []:
        rec = json.loads(line)
        if "loss" not in rec:
            continue
        curve["step"].append(rec["step"])
        for k in keys:
            curve.setdefault(k, []).append(rec.get(k))
    return curve


def left_chance_at(curve: dict, key: str = "itm_acc", threshold: float = 0.6, window: int = 3) -> int | None:
    """The first logged step at which the mean of the last ``window`` logged training accuracies reaches
    ``threshold``: where the match objective left its chance plateau (None if it never did)."""
    values = curve.get(key) or []
    for i in range(window - 1, len(values)):
        recent = values[i - window + 1 : i + 1]
        if all(v is not None for v in recent) and sum(recent) / window >= threshold:
            return curve["step"][i]
    return None


# ---------------------------------------------------------------------------------------- stages --
def pretrain(world: Path, tok, plan: DemoPlan, model_name: str, num_answers: int, run_dir: Path, seed: int,
             quiet: bool):  # fmt: skip
    """Pre-train with the paper's objectives on the training captions. LXMERT's image-QA objective is left
    out: it would pre-train on the VQA answers that the low-data fine-tuning comparison withholds."""
    from mmbert.data.captions import read_coco_captions
    from mmbert.data.datasets import CaptionDataset
    from mmbert.models.pretraining import PretrainingModel
    from mmbert.objectives.pretraining import Pretraining, recipe_for
    from mmbert.train.loop import train
    from mmbert.train.pretrain_data import PretrainingDataset, builds_pairs

    config = demo_config(model_name, plan, tok.vocab_size, num_answers)
    torch.manual_seed(seed)
    model = PretrainingModel(build_encoder(config))
    recipe = recipe_for(config.model_type)
    objectives = [o for o in recipe.objectives if o != "qa"]
    captions = CaptionDataset(read_coco_captions(world / "captions_train.json"), world / "features.tsv", tok,
                              max_text_length=plan.max_text_len, max_regions=None)  # fmt: skip
    data = PretrainingDataset(captions, region_rule=recipe.region_rule, match=builds_pairs(objectives), seed=seed)
    task = Pretraining(model, objectives)
    cfg = train_config(plan.pretrain_steps, plan.pretrain_batch, plan.pretrain_lr, seed, quiet, plan.workers)
    result = train(task, data, data.collate, cfg, run_dir, run_info={"demo": "pretrain", "model": model_name})
    keys = ("loss", *(f"{o}_loss" for o in objectives), "mlm_acc", "itm_acc")
    return model, objectives, result.metrics, read_curve(run_dir, keys)


def vqa_files(world: Path, split: str) -> dict[str, Path]:
    return {"questions": world / "vqa" / f"v2_OpenEnded_synthetic_{split}_questions.json",
            "annotations": world / "vqa" / f"v2_synthetic_{split}_annotations.json"}  # fmt: skip


def finetune_vqa(task, encoder: nn.Module, train_data, val_data, plan: DemoPlan, seed: int, run_dir: Path,
                 pad_id: int, quiet: bool) -> tuple[dict, dict, nn.Module]:  # fmt: skip
    from mmbert.tasks.base import TaskModel, collate
    from mmbert.tasks.objective import TaskObjective
    from mmbert.train.loop import train

    torch.manual_seed(seed)
    model = TaskModel(encoder, task.build_head(encoder))
    cfg = train_config(plan.vqa_steps, plan.vqa_batch, plan.vqa_lr, seed, quiet)
    train(TaskObjective(task, model), train_data, partial(collate, pad_token_id=pad_id), cfg, run_dir,
          run_info={"demo": "vqa"})  # fmt: skip
    metrics, _ = task.evaluate(model, val_data, batch_size=256)
    return metrics, read_curve(run_dir, ("loss", "vqa_score")), model


def majority_baseline(train_anns: list[dict], val_anns: dict) -> dict:
    """Predict, for each question type, its most common answer among the fine-tuning questions."""
    from mmbert.tasks.metrics import vqa_evaluate

    by_type: dict[str, Counter] = {}
    for a in train_anns:
        by_type.setdefault(a["question_type"], Counter())[a["multiple_choice_answer"]] += 1
    preds = {q: by_type[a["question_type"]].most_common(1)[0][0] for q, a in val_anns.items()}
    return vqa_evaluate(preds, val_anns)


def zero_shot_retrieval(world: Path, tok, pretrained: nn.Module, plan: DemoPlan) -> dict:
    from mmbert.tasks.base import TaskModel
    from mmbert.tasks.retrieval import RetrievalTask

    task = RetrievalTask(split="test", image_key="cocoid", max_images=plan.retrieval_images, max_regions=None,
                         max_text_len=plan.max_text_len)  # fmt: skip
    data = task.load({"karpathy": world / "dataset_synthetic.json"}, tok, world / "features.tsv")
    model = TaskModel(pretrained.encoder, task.head_from_pretraining(pretrained))
    metrics, _ = task.evaluate(model, data, batch_size=500, progress=True)
    return metrics


# -------------------------------------------------------------------------------------- pictures --
def plot_curves(out: Path, pre_curve: dict, vqa_curves: dict[str, list[dict]]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for k, v in pre_curve.items():
        if k.endswith("_loss") or k == "loss":
            if any(x is not None for x in v):
                axes[0].plot(pre_curve["step"], v, label=k)
    axes[0].set_title("pre-training losses")
    axes[0].set_xlabel("step")
    axes[0].legend(fontsize=8)
    for k in ("mlm_acc", "itm_acc"):
        if any(x is not None for x in pre_curve.get(k, [])):
            axes[1].plot(pre_curve["step"], pre_curve[k], label=k)
    axes[1].axhline(0.5, color="grey", lw=0.8, ls="--", label="ITM chance")
    axes[1].set_title("pre-training accuracies")
    axes[1].set_xlabel("step")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    atomic_write(out / "pretrain_curves.png", lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    written.append("pretrain_curves.png")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    colours = {"pretrained": "tab:blue", "from_scratch": "tab:orange", "text_only": "tab:grey"}
    for name, curves in vqa_curves.items():
        for i, c in enumerate(curves):
            label = name if i == 0 else None
            axes[0].plot(c["step"], c["loss"], color=colours.get(name), alpha=0.8, label=label)
            if any(x is not None for x in c.get("vqa_score", [])):
                axes[1].plot(c["step"], c["vqa_score"], color=colours.get(name), alpha=0.8, label=label)
    axes[0].set_ylim(0, 5)
    axes[0].set_title("VQA fine-tuning loss (each seed)")
    axes[1].set_title("VQA training-batch score (each seed)")
    for ax in axes:
        ax.set_xlabel("step")
        ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(out / "vqa_curves.png", lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    written.append("vqa_curves.png")
    return written


@torch.no_grad()
def attention_picture(out: Path, world: Path, tok, model: nn.Module, max_questions: int = 200) -> dict | None:
    """Where a question's shape word looks. Over validation questions naming a shape, measure per layer
    how often the word's attention (mean over heads) peaks on a region showing an object of that shape
    (the grounding rate, against the chance of a random region); then draw, for the first colour question,
    the best layer's attention from the shape word to each region over the rendered image. Single-stream
    models return it as ``text_vision``; dual-stream models as their text->vision cross-attention."""
    from PIL import Image

    from mmbert.data import features
    from mmbert.data.boxes import normalise_boxes
    from mmbert.data.synthetic import SHAPES, draw_regions

    path = world / "vqa" / "v2_OpenEnded_synthetic_val_questions.json"
    questions = json.loads(path.read_text())["questions"]
    scenes = {s["image_id"]: s for s in json.loads((world / "scenes.json").read_text())["images"]}

    def shape_word(q: dict) -> str | None:
        return next((w for w in q["question"].lower().rstrip("?").split() if w in SHAPES), None)

    named = [q for q in questions if shape_word(q)][:max_questions]
    if not named:
        return None
    model.eval()
    hits: list[list[bool]] = []
    chance: list[float] = []
    per_question = []
    with features.open(world / "features.tsv") as store:
        for q in named:
            word, enc_text = shape_word(q), tok.encode(q["question"])
            rec = store[str(q["image_id"])]
            r = rec.num_regions
            enc = model.encoder(
                torch.tensor([enc_text.ids]), text_mask=torch.ones(1, len(enc_text.ids), dtype=torch.bool),
                segment_ids=torch.zeros(1, len(enc_text.ids), dtype=torch.long),
                region_feats=torch.from_numpy(rec.feats.copy())[None],
                region_boxes=normalise_boxes(torch.from_numpy(rec.boxes.copy()), rec.image_size)[None],
                region_mask=torch.ones(1, r, dtype=torch.bool), output_attentions=True,
            )  # fmt: skip
            maps = (enc.attentions or {}).get("text_vision")
            if not maps:
                return None
            pos = enc_text.tokens.index(word)
            layers = [m[0, :, pos].mean(0) for m in maps]  # each (R') over the vision positions
            if layers[0].shape[0] == r + 1:  # a whole-image region: leave it out
                first = model.encoder.config.global_region == "first"
                layers = [a[1:] if first else a[:-1] for a in layers]
            scene = scenes[q["image_id"]]
            shows = [o >= 0 and scene["objects"][o]["shape"] == word for o in scene["region_object"]]
            hits.append([shows[int(a.argmax())] for a in layers])
            chance.append(sum(shows) / r)
            per_question.append((q, word, rec, scene, layers))
    rates = [round(100.0 * sum(h[k] for h in hits) / len(hits), 1) for k in range(len(hits[0]))]
    best = max(range(len(rates)), key=lambda k: rates[k])
    q, word, rec, scene, layers = next((x for x in per_question if "colo" in x[0]["question"].lower()),
                                       per_question[0])  # fmt: skip
    weights = layers[best].tolist()
    with Image.open(world / "images" / scene["file_name"]) as im:
        picture = draw_regions(im.convert("RGB"), rec.boxes.tolist(), weights, [f"{w:.2f}" for w in weights])
    picture.save(out / "attention.png")
    owner = scene["region_object"][int(layers[best].argmax())]
    return {
        "question": q["question"], "word": word, "image_id": q["image_id"], "layer": best, "attention": weights,
        "most_attended_region_shows": scene["objects"][owner]["shape"] if owner >= 0 else "background",
        "grounding_rate_per_layer": rates, "grounding_chance": round(100.0 * sum(chance) / len(chance), 1),
        "questions_measured": len(hits), "file": "attention.png",
    }  # fmt: skip


# ----------------------------------------------------------------------------------------- report --
def mean(xs: list[float]) -> float:
    return round(sum(xs) / len(xs), 2) if xs else float("nan")


def write_report(out: Path, results: dict) -> str:
    v = results["vqa"]
    r = results["retrieval_zero_shot"]
    rows = [
        ("per-type majority answer", v["majority"]["overall"], "-"),
        ("text-only BERT", v["text_only"]["mean"], ", ".join(f"{x:.1f}" for x in v["text_only"]["seeds"])),
        (f"{results['model']} from scratch", v["from_scratch"]["mean"],
         ", ".join(f"{x:.1f}" for x in v["from_scratch"]["seeds"])),
        (f"{results['model']} pre-trained", v["pretrained"]["mean"],
         ", ".join(f"{x:.1f}" for x in v["pretrained"]["seeds"])),
    ]  # fmt: skip
    table = ["| VQA (val, official accuracy) | mean % | per seed |", "|---|---:|---|"]
    table += [f"| {a} | {b:.2f} | {c} |" for a, b, c in rows]
    types = sorted(v["pretrained"]["per_type"])
    type_table = [
        "| question type | majority | text-only | from scratch | pre-trained |",
        "|---|---:|---:|---:|---:|",
    ]
    for t in types:
        type_table.append(f"| {t} | {v['majority']['perQuestionType'].get(t, 0):.1f} | "
                          f"{v['text_only']['per_type'].get(t, 0):.1f} | {v['from_scratch']['per_type'].get(t, 0):.1f}"
                          f" | {v['pretrained']['per_type'].get(t, 0):.1f} |")  # fmt: skip
    if r is None:
        ret = [f"Zero-shot retrieval: not available ({results['model']} pre-trains without image-text matching, "
               "so it has no match head)."]  # fmt: skip
    else:
        ret = ["| zero-shot retrieval (match head) | R@1 | R@5 | R@10 | chance R@1 |", "|---|---:|---:|---:|---:|",
               f"| text -> image | {r['ir_r@1']:.1f} | {r['ir_r@5']:.1f} | {r['ir_r@10']:.1f} | "
               f"{r['chance_r@1']:.1f} |",
               f"| image -> text | {r['tr_r@1']:.1f} | {r['tr_r@5']:.1f} | {r['tr_r@10']:.1f} | - |"]  # fmt: skip
    checks = results["acceptance"]
    qa_note = "; image QA left out: it would see the VQA answers the comparison withholds"
    lines = [
        "# mmbert demo: pre-training on the synthetic world",
        "",
        f"Model: `{results['model']}` ({results['parameters']:,} parameters, objectives: "
        f"{', '.join(results['pretraining']['objectives'])}"
        f"{qa_note if results['pretraining']['qa_left_out'] else ''}"
        f"); world: {results['world']['images']} images, "
        f"seed {results['world']['seed']}; pre-training {results['plan']['pretrain_steps']} steps x "
        f"{results['plan']['pretrain_batch']} pairs; VQA fine-tuning on {results['vqa']['train_questions']} "
        f"questions, {results['plan']['vqa_steps']} steps, seeds {list(results['plan']['seeds'])}; "
        f"evaluated on {results['vqa']['val_questions']} validation questions. "
        f"Total time {results['timings']['total_s']:.0f} s.",
        "",
        *table,
        "",
        *type_table,
        "",
        *ret,
        "",
        *(
            [
                f"Note: {results['model']} takes no region boxes (by design), so the spatial-relation "
                "questions are beyond it whatever its pre-training.",
                "",
            ]
            if not results["uses_boxes"]
            else []
        ),
        "## Checks",
        "",
        f"- the match objective's training accuracy left its chance plateau at step "
        f"{results['pretraining']['itm_left_chance_at_step']} of {results['plan']['pretrain_steps']} "
        "(trap 4: the budget leaves room for the plateau)",
        *[f"- {'PASS' if c['pass'] else 'FAIL'}: {c['what']} ({c['value']})" for c in checks],
        "",
        "## Pictures",
        "",
        "![pre-training curves](pretrain_curves.png)",
        "",
        "![VQA fine-tuning curves](vqa_curves.png)",
        "",
    ]
    if results.get("attention"):
        a = results["attention"]
        lines += [f"Attention from the word *{a['word']}* in \"{a['question']}\" to each region (layer {a['layer']}, "
                  "mean over heads; redder = more; the most attended region shows a "
                  f"{a['most_attended_region_shows']}). Over {a['questions_measured']} validation questions naming a "
                  f"shape, the word's attention peaks on a region showing that shape in "
                  f"{', '.join(f'{x:.0f} %' for x in a['grounding_rate_per_layer'])} of them (layer by layer; a "
                  f"random region would in {a['grounding_chance']:.0f} %).",
                  "", "![attention](attention.png)", ""]  # fmt: skip
    text = "\n".join(lines)
    atomic_write_text(out / "report.md", text)
    return "\n".join([*table, "", *ret])


def acceptance(results: dict) -> list[dict]:
    v, r = results["vqa"], results["retrieval_zero_shot"]
    maj, text, scratch, pre = (v["majority"]["overall"], v["text_only"]["mean"], v["from_scratch"]["mean"],
                               v["pretrained"]["mean"])  # fmt: skip
    return [
        {"what": "text-only at most 3 points above the per-type majority", "value": f"{text - maj:+.2f}",
         "pass": text - maj <= 3.0},
        {"what": "V&L (pre-trained) at least 8 points above text-only", "value": f"{pre - text:+.2f}",
         "pass": pre - text >= 8.0},
        {"what": "pre-trained at least 5 points above from-scratch (mean over seeds)", "value": f"{pre - scratch:+.2f}",
         "pass": pre - scratch >= 5.0},
    ] + ([] if r is None else [
        {"what": "zero-shot text->image R@1 >= 15 %", "value": f"{r['ir_r@1']:.1f} %", "pass": r["ir_r@1"] >= 15.0},
    ])  # fmt: skip


# -------------------------------------------------------------------------------------------- run --
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
    val_full = task.load(vqa_files(world, "val"), tok, world / "features.tsv")
    train_data = torch.utils.data.Subset(train_full, range(min(plan.vqa_questions, len(train_full))))
    val_data = _first(val_full, plan.eval_questions)
    text_task = VQATask(answer_list=answers, max_text_len=plan.max_text_len)
    text_train = torch.utils.data.Subset(
        text_task.load(vqa_files(world, "train"), tok), range(len(train_data))
    )
    text_val = _first(text_task.load(vqa_files(world, "val"), tok), plan.eval_questions)
    train_anns = [
        train_full.info["annotations"][train_full.records[i]["question_id"]] for i in train_data.indices
    ]
    vqa: dict[str, Any] = {"train_questions": len(train_data), "val_questions": len(val_data),
                           "majority": majority_baseline(train_anns, val_data.info["annotations"])}  # fmt: skip
    curves: dict[str, list[dict]] = {"pretrained": [], "from_scratch": [], "text_only": []}
    config = demo_config(args.model, plan, tok.vocab_size, len(answers))
    bert_config = demo_config("bert_tiny", plan, tok.vocab_size, len(answers))
    attention = None
    for name in ("pretrained", "from_scratch", "text_only"):
        scores, per_type = [], []
        for seed in plan.seeds:
            if name == "pretrained":
                encoder = build_encoder(config)
                encoder.load_state_dict(pretrained.encoder.state_dict())
            else:
                torch.manual_seed(1000 + seed)
                encoder = build_encoder(bert_config if name == "text_only" else config)
            print(f"VQA fine-tuning: {name}, seed {seed}")
            data = (text_train, text_val) if name == "text_only" else (train_data, val_data)
            metrics, curve, model = finetune_vqa(text_task if name == "text_only" else task, encoder, *data, plan,
                                                 seed, runs / f"vqa-{name}-{seed}", tok.pad_id, quiet)  # fmt: skip
            scores.append(metrics["overall"])
            per_type.append(metrics["perQuestionType"])
            curves[name].append(curve)
            if name == "pretrained" and seed == plan.seeds[0]:
                attention = attention_picture(out, world, tok, model)
        vqa[name] = {"seeds": scores, "mean": mean(scores),
                     "per_type": {k: mean([p[k] for p in per_type]) for k in per_type[0]}}  # fmt: skip
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
        "vqa": vqa,
        "attention": attention,
        "pictures": [*pictures, *(["attention.png"] if attention else [])],
        "timings": {k: round(v, 1) for k, v in timings.items()},
    }  # fmt: skip
    results["acceptance"] = acceptance(results)
    atomic_write_json(out / "results.json", results)
    table = write_report(out, results)
    print()
    print(table)
    print()
    for c in results["acceptance"]:
        print(f"{'PASS' if c['pass'] else 'FAIL'}: {c['what']} ({c['value']})")
    print(f"\nwrote {out}/results.json, report.md, {', '.join(results['pictures'])} "
          f"in {timings['total_s']:.0f} s")  # fmt: skip
    return 0


def _first(dataset, n: int):
    """The first ``n`` items of a task dataset, still a TaskDataset (evaluation reads its info)."""
    from mmbert.tasks.base import TaskDataset

    if len(dataset) <= n:
        return dataset
    info = dict(dataset.info)
    records = dataset.records[:n]
    if info.get("annotations") is not None:
        keep = {r["question_id"] for r in records}
        info["annotations"] = {q: a for q, a in info["annotations"].items() if q in keep}
    return TaskDataset(records, dataset._build, dataset.report, info)


__all__ = ["QUICK", "DemoPlan", "demo_config", "ensure_world", "register", "run"]
