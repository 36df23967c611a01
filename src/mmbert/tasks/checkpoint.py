"""Fine-tuned task checkpoints: the encoder and head weights, the task's name and options
(``task.json``) and the tokenizer, in one directory."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mmbert.atomic import atomic_write_json
from mmbert.convert.common import load_state_strict, read_config, read_weights
from mmbert.models import config_from_dict, model_class
from mmbert.models.base import save_module
from mmbert.tasks.base import Task
from mmbert.tasks.files import read_json
from mmbert.tasks.model import TaskModel

TASK_FILE = "task.json"


def save_task_model(model: TaskModel, task: Task, path: str | os.PathLike, tokenizer: Any = None) -> Path:
    """A fine-tuned model directory: config.json + model.safetensors (``encoder.*``, ``head.*``), task.json
    (task name and options, e.g. the answer vocabulary) and the tokenizer when given."""
    path = Path(path)
    save_module(
        model, model.encoder.config, path, extra_config={"mmbert_heads": "task", "mmbert_task": task.name}
    )
    record = {"task": task.name, "options": task.state()}
    atomic_write_json(path / TASK_FILE, record)
    if tokenizer is not None:
        tokenizer.save(path)
    return path


def load_task_model(path: str | os.PathLike, registry: Mapping[str, type[Task]]) -> tuple[Task, TaskModel]:
    """(task, model) from a directory written by ``save_task_model``; every weight must be there."""
    path = Path(path)
    if not (path / TASK_FILE).is_file():
        raise FileNotFoundError(
            f"{path}: no {TASK_FILE}; not a fine-tuned task model (see `mmbert finetune`)"
        )
    record = read_json(path / TASK_FILE)
    if record.get("task") not in registry:
        raise ValueError(
            f"{path / TASK_FILE}: unknown task {record.get('task')!r}; known: {sorted(registry)}"
        )
    task = registry[record["task"]](**record.get("options", {}))
    raw = read_config(path)
    config = config_from_dict(
        {k: v for k, v in raw.items() if not k.startswith("mmbert_")}, str(path / "config.json")
    )
    encoder = model_class(config)(config)
    model = TaskModel(encoder, task.build_head(encoder))
    state, source = read_weights(path)
    load_state_strict(model, state, source)
    return task, model.eval()
