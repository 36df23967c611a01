"""The demo's experiment: pre-training, low-data VQA fine-tuning (pre-trained / from scratch / text-only),
the per-type majority baseline and zero-shot retrieval, each through the library's own readers, trainer
and tasks."""

from __future__ import annotations

import json
from collections import Counter
from functools import partial
from pathlib import Path

import torch
from torch import nn

from mmbert.commands.demo.plan import DemoPlan, build_encoder, demo_config, train_config


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


def pretrain(world: Path, tok, plan: DemoPlan, model_name: str, num_answers: int, run_dir: Path, seed: int,
             quiet: bool, recipe=None):  # fmt: skip
    """Pre-train with the paper's objectives on the training captions. LXMERT's image-QA objective is left
    out: it would pre-train on the VQA answers that the low-data fine-tuning comparison withholds.

    ``recipe`` (an ``objectives.Recipe``) replaces the paper's: its objectives, region masking and
    mismatched-pair rule (``mmbert compare``'s controlled setting, one recipe for every model). A model
    whose paper has no match head gets a fresh one when the recipe matches image and text."""
    from mmbert.data.captions import read_coco_captions
    from mmbert.data.datasets import CaptionDataset
    from mmbert.models.pretraining import PretrainingModel
    from mmbert.objectives.pretraining import Pretraining, recipe_for
    from mmbert.train.loop import train
    from mmbert.train.pretrain_data import PretrainingDataset, builds_pairs

    recipe = recipe or recipe_for(demo_config(model_name, plan, tok.vocab_size, num_answers).model_type)
    objectives = [o for o in recipe.objectives if o != "qa"]
    config = demo_config(model_name, plan, tok.vocab_size, num_answers, objectives)  # region heads it scores
    torch.manual_seed(seed)
    model = PretrainingModel(build_encoder(config))
    if model.heads.pair is None and any(o in ("itm", "itm_wra") for o in objectives):
        from mmbert.models.base import init_heads
        from mmbert.nn.heads import PairHead

        model.heads.pair = PairHead(getattr(config, "pooled_dim", None) or config.dim)
        init_heads(model.heads.pair, config.init_std)
    captions = CaptionDataset(read_coco_captions(world / "captions_train.json"), world / "features.tsv", tok,
                              max_text_length=plan.max_text_len, max_regions=None)  # fmt: skip
    data = PretrainingDataset(captions, region_rule=recipe.region_rule, match=builds_pairs(objectives), seed=seed)
    task = Pretraining(model, objectives, score_mismatched=recipe.score_mismatched)
    cfg = train_config(plan.pretrain_steps, plan.pretrain_batch, plan.pretrain_lr, seed, quiet, plan.workers)
    result = train(task, data, data.collate, cfg, run_dir, run_info={"demo": "pretrain", "model": model_name})
    keys = ("loss", *(f"{o}_loss" for o in objectives), "mlm_acc", "itm_acc")
    return model, objectives, result.metrics, read_curve(run_dir, keys)




def finetune_vqa(task, encoder: nn.Module, train_data, eval_data: dict, plan: DemoPlan, seed: int, run_dir: Path,
                 pad_id: int, quiet: bool) -> tuple[dict[str, dict], dict, nn.Module]:  # fmt: skip
    """Fine-tune on ``train_data``; the official metrics on each of ``eval_data`` (split name -> dataset)."""
    model = finetune_task(task, encoder, train_data, plan.vqa_steps, plan.vqa_batch, plan.vqa_lr, seed, run_dir,
                          pad_id, quiet)  # fmt: skip
    metrics = {split: task.evaluate(model, data, batch_size=256)[0] for split, data in eval_data.items()}
    return metrics, read_curve(run_dir, ("loss", "vqa_score")), model


def finetune_task(task, encoder: nn.Module, train_data, steps: int, batch: int, lr: float, seed: int, run_dir: Path,
                  pad_id: int, quiet: bool) -> nn.Module:  # fmt: skip
    """``encoder`` + a fresh head of ``task``, trained ``steps`` steps on ``train_data`` (seeded: the head's
    initialisation and the batch order follow ``seed``); returns the ``TaskModel``."""
    from mmbert.tasks.base import TaskModel, collate
    from mmbert.tasks.objective import TaskObjective
    from mmbert.train.loop import train

    torch.manual_seed(seed)
    model = TaskModel(encoder, task.build_head(encoder))
    cfg = train_config(steps, batch, lr, seed, quiet)
    train(TaskObjective(task, model), train_data, partial(collate, pad_token_id=pad_id), cfg, run_dir,
          run_info={"demo": task.name})  # fmt: skip
    return model


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


def first_items(dataset, n: int):
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
