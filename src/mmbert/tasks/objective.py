"""A downstream task as the trainer sees it: ``batch -> LossOutput`` through the task's own training
step (``Task.model_step``), with the total under ``metrics["loss"]`` as the trainer logs and checks it.
``mmbert finetune`` and ``mmbert demo`` both train through it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from mmbert.data.batch import Batch
from mmbert.objectives.base import LossOutput
from mmbert.tasks.model import TaskModel

if TYPE_CHECKING:  # the task is passed in, never built here
    from mmbert.tasks.base import Task


class TaskObjective(nn.Module):
    """Its state is the task model's (``self.model``); the task is a plain object and holds no weights."""

    def __init__(self, task: Task, model: TaskModel) -> None:
        super().__init__()
        self.model = model
        self.task = task

    def forward(self, batch: Batch) -> LossOutput:
        out = self.task.model_step(self.model, batch)
        out.metrics["loss"] = float(out.loss.detach())
        return out
