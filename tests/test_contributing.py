"""CONTRIBUTING.md, followed to the letter in a temporary copy of the package: a toy model and a toy task
each touch the number of files the page says, and the registry-parametrised tests pick both up."""

from __future__ import annotations

import filecmp
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import mmbert

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(mmbert.__file__).parent

TOY_MODEL = '''"""Toy: UNITER's assembly under another name (a test of CONTRIBUTING.md, not a paper)."""

from __future__ import annotations

from dataclasses import dataclass

from mmbert.models.base import TINY_REGION_FEAT_DIM, TINY_SIZES
from mmbert.models.uniter import Uniter, UniterConfig


@dataclass
class ToyConfig(UniterConfig):
    model_type = "toy"


class Toy(Uniter):
    config_class = ToyConfig


def toy_base() -> ToyConfig:
    return ToyConfig()


def toy_tiny() -> ToyConfig:
    return ToyConfig(**TINY_SIZES, region_feat_dim=TINY_REGION_FEAT_DIM, num_region_classes=11)
'''

TOY_TASK = '''"""Toy task: VQA read from the same files, with its own typed options (a test of CONTRIBUTING.md)."""

from __future__ import annotations

from dataclasses import dataclass

from mmbert.tasks.vqa import VQAOptions, VQATask


@dataclass
class ToyOptions(VQAOptions):
    max_text_len: int = 12


class ToyTask(VQATask):
    name = "toy"
    options_class = ToyOptions
'''


def add_entry(path: Path, anchor: str, line: str) -> None:
    """Insert ``line`` after the first line matching ``anchor`` (a regular expression)."""
    text = path.read_text()
    match = re.search(anchor, text, re.M)
    assert match, f"{path}: no line matching {anchor!r}"
    end = text.index("\n", match.end()) + 1
    path.write_text(text[:end] + line + "\n" + text[end:])


def follow_contributing(src: Path) -> None:
    """The steps CONTRIBUTING.md lists for a model and for a task."""
    models, tasks = src / "mmbert" / "models", src / "mmbert" / "tasks"
    # a model: its file, and its presets and class in the registry
    (models / "toy.py").write_text(TOY_MODEL)
    registry = models / "__init__.py"
    text = registry.read_text()
    registry.write_text(text.replace("from mmbert.models import ", "from mmbert.models import toy, ", 1))
    add_entry(registry, r"^MODELS: dict", '    "toy_base": toy.toy_base,\n    "toy_tiny": toy.toy_tiny,')
    add_entry(registry, r"^MODEL_CLASSES: dict", '    "toy": toy.Toy,')
    # a task: its file, and its entry in TASKS
    (tasks / "toy.py").write_text(TOY_TASK)
    registry = tasks / "__init__.py"
    add_entry(registry, r"^from mmbert\.tasks\.base import", "from mmbert.tasks.toy import ToyTask")
    add_entry(registry, r"^TASKS: dict", '    "toy": ToyTask,')


def touched(original: Path, copy: Path) -> set[str]:
    """Files added or changed in ``copy`` relative to ``original`` (Python sources only)."""
    out = set()
    for path in copy.rglob("*.py"):
        rel = path.relative_to(copy)
        before = original / rel
        if not before.exists() or not filecmp.cmp(before, path, shallow=False):
            out.add(str(rel))
    return out


def documented_count(section: str) -> int:
    """The number of files CONTRIBUTING.md's heading for ``section`` promises ("## A model: 2 files")."""
    text = (ROOT / "CONTRIBUTING.md").read_text()
    match = re.search(rf"^## {section}: (\d+) files", text, re.M)
    assert match, f"CONTRIBUTING.md has no '## {section}: N files' heading"
    return int(match.group(1))


def test_a_toy_model_and_task_touch_the_files_contributing_says(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(PACKAGE, src / "mmbert", ignore=shutil.ignore_patterns("__pycache__"))
    follow_contributing(src)
    changed = touched(PACKAGE.parent, src)
    model_files = {f for f in changed if f.startswith("mmbert/models/")}
    task_files = {f for f in changed if f.startswith("mmbert/tasks/")}
    assert model_files == {"mmbert/models/toy.py", "mmbert/models/__init__.py"}
    assert task_files == {"mmbert/tasks/toy.py", "mmbert/tasks/__init__.py"}
    assert changed == model_files | task_files
    assert len(model_files) == documented_count("A model")
    assert len(task_files) == documented_count("A downstream task")

    # the registry-parametrised tests, run on the copy, pick both up without being edited
    env = {**os.environ, "PYTHONPATH": str(src)}
    tests = ["tests/models/test_registry.py", "tests/tasks/test_options.py"]
    cmd = [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", *tests, "-k", "toy"]
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    model_tests = re.findall(r"test_registry\.py::(\w+)\[toy_tiny[^\]]*\] PASSED", run.stdout)
    task_tests = re.findall(r"test_options\.py::(\w+)\[toy\] PASSED", run.stdout)
    assert {"test_output_shapes", "test_gradients_reach_every_parameter"} <= set(model_tests), run.stdout[-3000:]
    assert len(model_tests) >= 5 and len(task_tests) == 2, run.stdout[-3000:]
    check = ("import mmbert; from mmbert.tasks import TASKS; "
             "assert 'toy_tiny' in mmbert.list_models() and TASKS['toy']().options.max_text_len == 12; "
             "print(mmbert.build_model('toy_tiny').__class__.__module__)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "mmbert.models.toy", out.stderr[-2000:]
