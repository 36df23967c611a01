"""``mmbert evaluate``: a fine-tuned model (or, for retrieval, a pre-trained one: zero-shot) on one split,
scored with the task's official metric; writes the metrics JSON and the official prediction file.

    mmbert evaluate --task vqa --checkpoint runs/lxmert-vqa/final --split minival \\
        --data questions=v2_OpenEnded_mscoco_val2014_questions.json annotations=v2_mscoco_val2014_annotations.json \\
        --features coco_obj36.h5
    mmbert evaluate --task retrieval --checkpoint runs/uniter/final --split test --zero-shot \\
        --data karpathy=dataset_flickr30k.json --features flickr30k.h5 --tokenizer runs/uniter/final

Writes ``<out>/<split>_metrics.json`` and ``<out>/<split>_<prediction file>`` (``--out`` defaults to
``<checkpoint>/eval``) and prints the metrics. For retrieval and refexp ``--split`` selects the split
inside the file; for the other tasks the files are the split and ``--split`` names the outputs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mmbert.commands.finetune import add_task_argument, build_task, move_settings, parse_files, split_settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="score a fine-tuned (or zero-shot) model on a task split; write predictions",
                       description=__doc__.split("\n\n")[0])  # fmt: skip
    add_task_argument(p)
    p.add_argument("--checkpoint", required=True, help="a `mmbert finetune` model directory (its final/)")
    p.add_argument(
        "--split",
        required=True,
        help="split name (selects the split for retrieval / refexp); several comma-separated, e.g. "
        "val,testA,testB for RefCOCO, are evaluated one after the other",
    )
    p.add_argument(
        "--data", nargs="+", required=True, metavar="NAME=PATH", help="the split's annotation files"
    )
    p.add_argument("--features", help="region feature store")
    p.add_argument("--tokenizer", help="tokenizer directory (default: the checkpoint)")
    p.add_argument("--out", help="output directory (default: <checkpoint>/eval)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    p.add_argument(
        "--zero-shot",
        action="store_true",
        help="retrieval only: score with the pre-trained image-text matching head of --checkpoint",
    )
    p.add_argument("--trust-pickle", action="store_true", help="allow reading pickled files you trust")
    p.add_argument("--progress", action="store_true", help="show a progress bar")
    p.add_argument("settings", nargs="*", metavar="task.key=value", help="task options, e.g. task.mode=qa2r")
    p.set_defaults(func=run)


def load_for_evaluation(args: argparse.Namespace, task_options: dict):
    """(task, model) for the checkpoint: a fine-tuned task model, or a pre-trained model (zero-shot)."""
    from mmbert.tasks import TASKS
    from mmbert.tasks.checkpoint import load_task_model
    from mmbert.tasks.model import TaskModel

    if args.zero_shot:
        if args.task != "retrieval":
            raise ValueError("--zero-shot applies to retrieval only")
        from mmbert.convert import load_pretraining

        task = build_task("retrieval", task_options)
        pt = load_pretraining(args.checkpoint)
        return task, TaskModel(pt.encoder, task.head_from_pretraining(pt)).eval()
    task, model = load_task_model(args.checkpoint, TASKS)
    if task.name != args.task:
        raise ValueError(f"{args.checkpoint} was fine-tuned for {task.name!r}, not {args.task!r}")
    try:
        task.update_options(**task_options)
    except TypeError as e:
        raise ValueError(str(e)) from None
    return task, model


def run(args: argparse.Namespace) -> int:
    from mmbert.data.tokenizer import Tokenizer
    from mmbert.tasks.base import open_features, write_json
    from mmbert.tasks.features import check_feature_width
    from mmbert.train.distributed import resolve_device

    args.device = resolve_device(args.device)  # refused up front when it is not here
    move_settings(args, "data")
    if not args.data:
        raise ValueError("--data needs at least one NAME=PATH file")
    train_raw, task_options, model_raw = split_settings(args.settings or [])
    if train_raw or model_raw:
        raise ValueError("evaluate takes task.<option> settings only")
    task, model = load_for_evaluation(args, task_options)
    if args.trust_pickle:
        task.update_options(trust_pickle=True)
    model.to(args.device)
    tokenizer = Tokenizer.from_pretrained(args.tokenizer or args.checkpoint)
    features = open_features(args.features, args.trust_pickle) if args.features else None
    if features is not None:
        check_feature_width(features, model.config, args.features)
    out = Path(args.out) if args.out else Path(args.checkpoint) / "eval"
    files = parse_files(args.data, "--data")
    for split in [s.strip() for s in args.split.split(",") if s.strip()]:
        dataset = task.load_split(split, files, tokenizer, features)
        if dataset.report:
            print(f"{split}: skipped: {dataset.report.summary()}")
        metrics, predictions = task.evaluate(
            model, dataset, args.batch_size, args.device, progress=args.progress
        )
        write_json(metrics, out / f"{split}_metrics.json")
        pred_path = task.write_predictions(predictions, out / f"{split}_{task.prediction_file}")
        print(
            json.dumps({"task": task.name, "split": split, "metrics": metrics, "predictions": str(pred_path)})
        )
    return 0
