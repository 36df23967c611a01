"""UNITER's task schedule: counts follow the mix ratio, one task per step, resume keeps it exactly."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import fields

import pytest
import torch

from mmbert.data.batch import Batch
from mmbert.models import PretrainingModel, build_model
from mmbert.objectives import Pretraining
from mmbert.train import TrainConfig, train
from mmbert.train.pretrain_data import PretrainingBatch
from mmbert.train.schedule import TaskSchedule
from tests.train.toy import ToyPairs, collate

UNITER_TASKS, UNITER_RATIO = ("itm", "mlm", "mrfr", "mrckl"), (2, 2, 1, 1)


def test_task_counts_follow_the_mix_ratio_within_binomial_bounds():
    schedule = TaskSchedule(UNITER_TASKS, UNITER_RATIO, seed=3)
    n = 6000
    counts = schedule.counts(0, n)
    assert sum(counts.values()) == n and set(counts) == set(UNITER_TASKS)
    for task, p in schedule.probabilities.items():
        assert abs(counts[task] - n * p) <= 4.5 * math.sqrt(n * p * (1 - p)), (task, counts[task])
    assert schedule.probabilities == {"itm": 1 / 3, "mlm": 1 / 3, "mrfr": 1 / 6, "mrckl": 1 / 6}


def test_the_schedule_is_a_function_of_seed_and_step():
    a, b = TaskSchedule(UNITER_TASKS, UNITER_RATIO, 0), TaskSchedule(UNITER_TASKS, UNITER_RATIO, 0)
    assert [a.task(s) for s in range(200)] == [b.task(s) for s in range(200)]
    assert [a.task(s) for s in range(150, 200)] == [b.task(s) for s in range(150, 200)]  # resumed mid-way
    assert [a.task(s) for s in range(200)] != [TaskSchedule(UNITER_TASKS, UNITER_RATIO, 1).task(s) for s in range(200)]
    only = TaskSchedule(("mlm", "itm"), (1, 0))
    assert set(only.counts(0, 100)) == {"mlm"}


def test_bad_schedules_are_refused():
    with pytest.raises(ValueError, match="mix ratios"):
        TaskSchedule(("mlm", "itm"), (1,))
    with pytest.raises(ValueError, match="non-negative"):
        TaskSchedule(("mlm", "itm"), (1, -1))
    with pytest.raises(ValueError, match="repeat"):
        TaskSchedule(("mlm", "mlm"), (1, 1))


class ScheduledToy(ToyPairs):
    """The toy sentence pairs with a task schedule over BERT's two objectives: keys are (index, task)."""

    def __init__(self, schedule: TaskSchedule) -> None:
        super().__init__()
        self.schedule = schedule

    def step_keys(self, step: int, indices: list[int]) -> list[tuple[int, str]]:
        return [(i, self.schedule.task(step)) for i in indices]

    def __getitem__(self, key: tuple[int, str]) -> dict:
        index, task = key
        return {**super().__getitem__(index), "task": task}


def scheduled_collate(items: list[dict]) -> PretrainingBatch:
    batch = collate(items)
    tasks = {x["task"] for x in items}
    assert len(tasks) == 1, tasks  # every micro-batch of a step carries that step's one task
    return PretrainingBatch(**{f.name: getattr(batch, f.name) for f in fields(Batch)}, task=tasks.pop())


def run_scheduled(out, max_steps: int, resume: bool = False):
    torch.manual_seed(0)
    model = PretrainingModel(build_model("bert_tiny", dropout=0.0, attn_dropout=0.0))
    task = Pretraining(model, ["mlm", "nsp"])
    task.scheduled = True
    config = TrainConfig(max_steps=max_steps, batch_size=8, grad_accum=2, lr=1e-3, warmup_steps=1, save_every=3,
                         log_every=1, progress=False, seed=0, device="cpu")  # fmt: skip
    data = ScheduledToy(TaskSchedule(("mlm", "nsp"), (2, 1), seed=0))
    info = {"model": "bert_tiny", "objectives": ["mlm", "nsp"]}
    result = train(task, data, scheduled_collate, config, out, resume=resume, run_info=info)
    return result, model, data.schedule


def logged_tasks(out) -> list[str]:
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    tasks = []
    for r in records:
        present = [t for t in ("mlm", "nsp") if f"{t}_loss" in r]
        assert len(present) == 1, r  # one task per step
        tasks.append(present[0])
    return tasks


def test_each_step_computes_one_task_and_a_resumed_run_keeps_the_schedule(tmp_path):
    _, whole, schedule = run_scheduled(tmp_path / "whole", 6)
    expected = [schedule.task(s) for s in range(6)]
    assert set(expected) == {"mlm", "nsp"}  # this seed exercises both tasks
    assert logged_tasks(tmp_path / "whole") == expected
    # the run as a kill after step 3 leaves it: the step-3 checkpoint is the newest
    shutil.copytree(tmp_path / "whole", tmp_path / "split")
    for late in (tmp_path / "split" / "checkpoints").glob("step-*.pt"):
        if late.name != "step-00000003.pt":
            late.unlink()
    _, resumed, _ = run_scheduled(tmp_path / "split", 6, resume=True)
    assert logged_tasks(tmp_path / "split") == expected
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
