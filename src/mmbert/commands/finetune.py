"""``mmbert finetune``: fine-tune a model on a downstream task read from its official files.

    mmbert finetune --task vqa --init runs/lxmert/final --features coco_obj36.h5 --tokenizer runs/lxmert/final \\
        --train questions=v2_OpenEnded_mscoco_train2014_questions.json \\
                annotations=v2_mscoco_train2014_annotations.json \\
        --val questions=...val2014_questions.json annotations=...val2014_annotations.json \\
        --out runs/lxmert-vqa --max-steps 20000 --batch-size 256 lr=4e-5 task.min_answer_count=9
    mmbert finetune ... --resume                  # continue a killed run exactly (same trainer as pretrain)
    torchrun --nproc_per_node=4 -m mmbert finetune ...

``--init`` is a checkpoint directory (mmbert, or Hugging Face BERT/VisualBERT/LXMERT) or a preset name
(fresh weights; ``model.<field>=...`` overrides its config). For retrieval the pre-trained image-text
matching head, when the checkpoint has one, starts the match head. Settings: every ``TrainConfig`` key,
``task.<option>`` (see each task's class) and ``model.<field>`` (presets only). The run directory holds
run.json, metrics.jsonl, checkpoints/ (resumable), final/ (the fine-tuned model: ``mmbert evaluate
--checkpoint DIR/final``), and, with ``--val``, the official metrics and prediction file of the val split.
"""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path
from typing import Any

from mmbert.commands.pretrain import _parse_value
from mmbert.train.config import TrainConfig

FLAG_KEYS = ("max_steps", "batch_size", "lr", "grad_accum")


def parse_files(items: list[str] | None, flag: str) -> dict[str, str]:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"{flag} {item!r}: expected NAME=PATH (e.g. questions=v2_questions.json)")
        name, path = item.split("=", 1)
        out[name.strip()] = path
    return out


def move_settings(args: argparse.Namespace, *flags: str) -> None:
    """``--train a=x b=y lr=1e-4`` : argparse gives the trailing key=value settings to the file list.
    Move every item whose key is a setting (a TrainConfig field, ``task.*``, ``model.*``) back."""
    from dataclasses import fields

    train_keys = {f.name for f in fields(TrainConfig)}
    for flag in flags:
        items = getattr(args, flag, None) or []
        keep = []
        for item in items:
            key = item.split("=", 1)[0].strip()
            if key in train_keys or key.startswith(("task.", "model.")):
                args.settings = [*(args.settings or []), item]
            else:
                keep.append(item)
        setattr(args, flag, keep or None)


def split_settings(items: list[str], args: argparse.Namespace | None = None) -> tuple[dict, dict, dict]:
    """key=value settings -> (train config, task options, model overrides); unknown keys are refused."""
    from dataclasses import fields

    train_keys = {f.name for f in fields(TrainConfig)}
    train: dict[str, Any] = {k: getattr(args, k) for k in FLAG_KEYS if args is not None and getattr(args, k, None)
                             is not None}  # fmt: skip
    task: dict[str, Any] = {}
    model: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"setting {item!r} is not key=value")
        key, value = (s.strip() for s in item.split("=", 1))
        if key in train_keys:
            train[key] = _parse_value(value)
        elif key.startswith("task."):
            task[key[5:]] = _parse_value(value)
        elif key.startswith("model."):
            model[key[6:]] = _parse_value(value)
        else:
            raise ValueError(f"unknown setting {key!r}; valid: {', '.join(sorted(train_keys))}, task.<option>, "
                             "model.<field>")  # fmt: skip
    return train, task, model


# mmbert.tasks.TASKS' names, spelt out so that --help needs no torch import (tests/commands/test_finetune.py
# checks they stay the registry's)
TASK_NAMES = ("vqa", "nlvr2", "retrieval", "refexp", "vcr", "caption", "gqa", "snli-ve", "flickr30k-entities")


def add_task_argument(p: argparse.ArgumentParser) -> None:
    """``--task NAME`` for the commands that build a task (finetune, evaluate)."""
    p.add_argument("--task", required=True, help=f"{', '.join(TASK_NAMES[:-1])} or {TASK_NAMES[-1]}")


def build_task(name: str, options: dict[str, Any]):
    from mmbert.tasks import TASKS

    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; available: {', '.join(TASKS)}")
    try:
        return TASKS[name](**options)
    except TypeError as e:  # an unknown option: the message names the task's options
        raise ValueError(str(e)) from None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("finetune", help="fine-tune on a downstream task (VQA, NLVR2, retrieval, RefCOCO, VCR)",
                       description=__doc__.split("\n\n")[0])  # fmt: skip
    add_task_argument(p)
    p.add_argument("--init", required=True, help="checkpoint directory, or a preset name for fresh weights")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument(
        "--train", nargs="+", required=True, metavar="NAME=PATH", help="the training split's files"
    )
    p.add_argument("--val", nargs="+", metavar="NAME=PATH", help="the validation split's files")
    p.add_argument("--train-split", help="split inside the files (retrieval / refexp), default: the task's")
    p.add_argument("--val-split", default="val", help="split inside the --val files (retrieval / refexp)")
    p.add_argument("--features", help="region feature store (TSV, HDF5, LMDB, npz directory)")
    p.add_argument(
        "--tokenizer", help="directory with vocab.txt / tokenizer.json (default: --init when it has one)"
    )
    p.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow reading pickled files (RefCOCO refs(unc).p, VOLTA LMDB stores); only for files you trust",
    )
    p.add_argument("--max-steps", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--grad-accum", type=int)
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    p.add_argument(
        "settings", nargs="*", metavar="key=value", help="e.g. warmup_steps=500 task.max_regions=36"
    )
    p.set_defaults(func=run, lock_out=True)  # mmbert.cli locks --out for the whole run


def load_init(init: str, task_name: str, model_overrides: dict[str, Any]):
    """(encoder, pre-training model or None, tokenizer directory or None) from --init."""
    from mmbert.convert import load_model, load_pretraining
    from mmbert.models import MODELS, build_model

    path = Path(init)
    if path.is_dir():
        if model_overrides:
            raise ValueError("model.<field> settings apply to presets only, not to a checkpoint")
        has_tok = any((path / n).exists() for n in ("vocab.txt", "tokenizer.json"))
        # tasks whose head starts from a pre-trained one: retrieval (the match head), caption (the MLM head)
        start_head = {"retrieval": "pair", "caption": "mlm"}.get(task_name)
        if start_head is not None:
            pt = load_pretraining(path, allow_new_heads=True)
            return (
                pt.encoder,
                (pt if start_head not in getattr(pt, "new_heads", []) else None),
                path if has_tok else None,
            )
        return load_model(path), None, path if has_tok else None
    if init in MODELS:
        return build_model(init, **model_overrides), None, None
    raise ValueError(
        f"--init {init!r} is neither a checkpoint directory nor a preset; presets: {', '.join(MODELS)}"
    )


def run(args: argparse.Namespace) -> int:
    import torch

    from mmbert.atomic import atomic_write_json
    from mmbert.data.tokenizer import Tokenizer
    from mmbert.tasks.base import TaskModel, collate, open_features, write_json
    from mmbert.tasks.checkpoint import save_task_model
    from mmbert.tasks.features import check_feature_width
    from mmbert.tasks.objective import TaskObjective
    from mmbert.train.distributed import cleanup, init_distributed
    from mmbert.train.runs import refuse_old_checkpoints, train_or_stop

    move_settings(args, "train", "val")
    if not args.train:
        raise ValueError("--train needs at least one NAME=PATH file")
    train_raw, task_options, model_overrides = split_settings(args.settings or [], args)
    train_config = TrainConfig.from_dict(train_raw, "settings")
    task = build_task(args.task, task_options)
    out = Path(args.out)
    refuse_old_checkpoints(out, args.resume)
    torch.manual_seed(train_config.seed)
    encoder, pretraining, tok_dir = load_init(args.init, args.task, model_overrides)
    tok_dir = Path(args.tokenizer) if args.tokenizer else tok_dir
    if tok_dir is None:
        raise ValueError("no tokenizer: pass --tokenizer DIR (a directory with vocab.txt or tokenizer.json)")
    tokenizer = Tokenizer.from_pretrained(tok_dir)
    if tokenizer.vocab_size > encoder.config.vocab_size:
        raise ValueError(f"the tokenizer has {tokenizer.vocab_size} tokens but the model's vocab_size is "
                         f"{encoder.config.vocab_size}")  # fmt: skip
    if args.trust_pickle:
        task.update_options(trust_pickle=True)
    features = open_features(args.features, args.trust_pickle) if args.features else None
    if features is not None:
        check_feature_width(features, encoder.config, args.features)
    train_set = task.load_split(args.train_split, parse_files(args.train, "--train"), tokenizer, features)
    val_set = (
        task.load_split(args.val_split, parse_files(args.val, "--val"), tokenizer, features)
        if args.val
        else None
    )
    for label, ds in (("train", train_set), ("val", val_set)):
        if ds is not None and ds.report:
            print(f"{label}: skipped/changed: {ds.report.summary()}")
    if len(train_set) == 0:
        raise ValueError("the training split is empty (see the skipped counts above)")

    head = task.head_from_pretraining(pretraining) if pretraining is not None else task.build_head(encoder)
    model = TaskModel(encoder, head)
    objective = TaskObjective(task, model)
    run_info = {"task": task.name, "task_options": {k: v for k, v in task.state().items() if k != "trust_pickle"},
                "init": str(args.init), "model_config": encoder.config.to_dict()}  # fmt: skip
    env = init_distributed(None if train_config.device == "auto" else train_config.device,
                           train_config.dist_timeout_minutes)
    if env.is_main:
        out.mkdir(parents=True, exist_ok=True)
        record = {
            **run_info,
            "train_files": parse_files(args.train, "--train"),
            "val_files": parse_files(args.val, "--val"),
            "features": args.features,
            "tokenizer": str(tok_dir),
            "train": train_config.to_dict(),
            "skipped": {"train": train_set.report.counts, "val": val_set.report.counts if val_set else {}},
        }
        if not args.resume:
            atomic_write_json(out / "run.json", record)
    collate_fn = functools.partial(collate, pad_token_id=encoder.config.pad_token_id)
    result = train_or_stop("finetune", env, objective, train_set, collate_fn, train_config, out,
                           eval_dataset=val_set, resume=args.resume, run_info=run_info)  # fmt: skip
    if result is None:
        return 1
    summary: dict[str, Any] = {"out": str(out), "step": result.step, "train": result.metrics}
    if env.is_main:
        save_task_model(model, task, out / "final", tokenizer)
        if val_set is not None:
            metrics, predictions = task.evaluate(model, val_set, train_config.batch_size, env.device)
            write_json(metrics, out / "final" / f"{args.val_split}_metrics.json")
            task.write_predictions(predictions, out / "final" / f"{args.val_split}_{task.prediction_file}")
            summary["val"] = metrics
        print(json.dumps(summary))
    cleanup(env)  # after rank 0's final evaluation: every rank waits, then the group goes
    return 0
