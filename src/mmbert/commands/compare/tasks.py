"""The downstream tasks of the comparison, read from a directory laid out like the synthetic world
(``mmbert synthetic``'s output, or the user's own data under the same file names): which files a split
reads, which feature store, and whether a text-only model can take the task at all."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmbert.commands.compare.plan import ComparePlan, parse_names


@dataclass(frozen=True)
class TaskSpec:
    """One task of the grid: ``files(world, split)`` -> the task's file dict; ``split_option``: the
    split name passed to tasks whose one file holds every split (refexp, retrieval); ``text_only``:
    whether a model without images can be fine-tuned on it (ranking images or pointing at regions
    cannot be done from text); ``metric``: the reported name of the task's main metric."""

    name: str
    metric: str
    files: Callable[[Path, str], dict[str, Path]]
    features: str = "features.tsv"
    split_option: dict[str, str] | None = None
    text_only: bool = True


def _vqa(world: Path, split: str) -> dict[str, Path]:
    return {"questions": world / "vqa" / f"v2_OpenEnded_synthetic_{split}_questions.json",
            "annotations": world / "vqa" / f"v2_synthetic_{split}_annotations.json"}  # fmt: skip


SPECS: dict[str, TaskSpec] = {
    "vqa": TaskSpec("vqa", "VQA accuracy", _vqa),
    "refexp": TaskSpec("refexp", "accuracy (IoU >= 0.5)",
                       lambda w, s: {"refs": w / "refcoco" / "refs.json",
                                     "instances": w / "refcoco" / "instances.json"},
                       split_option={"train": "train", "test": "testB"}, text_only=False),
    "retrieval": TaskSpec("retrieval", "mean recall (R@1,5,10 both ways)",
                          lambda w, s: {"karpathy": w / "dataset_synthetic.json"},
                          split_option={"train": "train", "test": "test"}, text_only=False),
    "nlvr2": TaskSpec("nlvr2", "accuracy",
                      lambda w, s: {"data": w / "nlvr2" / f"{ {'train': 'train', 'test': 'test1'}[s]}.json"},
                      features="nlvr2/features.tsv"),
    "vcr": TaskSpec("vcr", "Q->A accuracy", lambda w, s: {"data": w / "vcr" / f"{s}.jsonl"}),
    "gqa": TaskSpec("gqa", "accuracy",
                    lambda w, s: {"lxmert": w / "gqa" / ("train.json" if s == "train" else "testdev.json"),
                                  "answers": w / "gqa" / "trainval_ans2label.json"}),
    "snli-ve": TaskSpec("snli-ve", "accuracy", lambda w, s: {"jsonl": w / "snli_ve" / f"snli_ve_{s}.jsonl"}),
}  # fmt: skip


def parse_tasks(text: str) -> list[str]:
    return parse_names(text, list(SPECS), "--tasks", "task", lambda s: s.replace("_", "-"))


def check_files(world: Path, tasks: list[str]) -> None:
    """Every file the chosen tasks read exists, before any work (the error names the first missing one)."""
    for name in tasks:
        spec = SPECS[name]
        for split in ("train", "test"):
            for what, path in [*spec.files(world, split).items(), ("features", world / spec.features)]:
                if not path.exists():
                    raise FileNotFoundError(f"{path}: the {what} file of task {name!r} ({split} split) is missing "
                                            f"from --data {world} (expected the synthetic world's layout)")  # fmt: skip


def build_task(name: str, world: Path, plan: ComparePlan):
    """A fresh task object at the plan's sizes (VQA's answers from the world's answer list)."""
    from mmbert.tasks import TASKS

    options: dict[str, Any] = {"max_text_len": plan.demo.max_text_len, "max_regions": None}
    if name == "vqa":
        options["answer_list"] = json.loads((world / "vqa" / "answers.json").read_text())
    if name == "retrieval":
        options.update(image_key="cocoid", max_images=plan.retrieval_images)
    if name == "vcr":
        options["max_text_len"] = 2 * plan.demo.max_text_len  # question and answer in one sequence
    return TASKS[name](**options)


def load_split(task, name: str, world: Path, split: str, tok, text_only: bool, plan: ComparePlan):
    """One split of a task (images from the world's store unless ``text_only``). Training splits are cut
    to their first ``plan.train_items`` examples; test splits are scored whole, except VQA's (its first
    ``plan.eval_items`` questions) and retrieval's pool (its first ``plan.retrieval_images`` images)."""
    from mmbert.commands.demo.experiment import first_items

    spec = SPECS[name]
    features = None if text_only else world / spec.features
    option = (spec.split_option or {}).get(split)
    if name == "retrieval":
        task.update_options(max_images=plan.retrieval_images if split == "test" else None)
    data = task.load_split(option, spec.files(world, split), tok, features)
    if split == "train":
        return first_items(data, plan.train_items)
    return first_items(data, plan.eval_items) if name == "vqa" else data


def main_score(task, metrics: dict[str, Any]) -> float:
    """The task's main metric (all of them are percentages)."""
    return float(metrics[task.main_metric])
