"""Every registered task takes typed options: keyword settings or an options dataclass, saved by
``state()`` and rebuilt from it; unknown names are refused naming the valid ones."""

from __future__ import annotations

import dataclasses

import pytest

from mmbert.tasks import TASKS
from mmbert.tasks.base import TaskOptions


@pytest.mark.parametrize("name", TASKS)
def test_options_are_a_dataclass_that_round_trips(name):
    cls = TASKS[name]
    task = cls()
    assert isinstance(task.options, TaskOptions) and isinstance(task.options, cls.options_class)
    rebuilt = cls(**task.state())
    assert rebuilt.options == task.options
    assert cls(options=dataclasses.replace(task.options, max_text_len=11)).options.max_text_len == 11


@pytest.mark.parametrize("name", TASKS)
def test_unknown_options_are_refused_by_name(name):
    cls = TASKS[name]
    with pytest.raises(TypeError, match=r"has no option\(s\) \['colour'\]; its options: .*max_text_len"):
        cls(colour="red")
    task = cls()
    with pytest.raises(TypeError, match="colour"):
        task.update_options(colour="red")
    task.update_options(trust_pickle=True)
    assert task.options.trust_pickle is True
