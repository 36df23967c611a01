"""Downstream tasks, each with its official data format, metric and prediction file.

``TASKS`` maps a task name to its class; ``TASKS[name](**options)`` builds one. A new task costs one
file plus one line here.
"""

from __future__ import annotations

from mmbert.tasks.base import Example, LoadReport, Task, TaskDataError, TaskDataset, TaskModel, View, collate
from mmbert.tasks.caption import CaptionTask
from mmbert.tasks.flickr30k_entities import Flickr30KEntitiesTask
from mmbert.tasks.gqa import GQATask
from mmbert.tasks.nlvr2 import NLVR2Task
from mmbert.tasks.refexp import RefExpTask
from mmbert.tasks.retrieval import RetrievalTask
from mmbert.tasks.snli_ve import SNLIVETask
from mmbert.tasks.vcr import VCRTask
from mmbert.tasks.vqa import VQATask

TASKS: dict[str, type[Task]] = {
    "vqa": VQATask,
    "nlvr2": NLVR2Task,
    "retrieval": RetrievalTask,
    "refexp": RefExpTask,
    "vcr": VCRTask,
    "caption": CaptionTask,
    "gqa": GQATask,
    "snli-ve": SNLIVETask,
    "flickr30k-entities": Flickr30KEntitiesTask,
}

__all__ = [
    "TASKS",
    "CaptionTask",
    "Flickr30KEntitiesTask",
    "GQATask",
    "SNLIVETask",
    "Example",
    "LoadReport",
    "NLVR2Task",
    "RefExpTask",
    "RetrievalTask",
    "Task",
    "TaskDataError",
    "TaskDataset",
    "TaskModel",
    "VCRTask",
    "VQATask",
    "View",
    "collate",
]
