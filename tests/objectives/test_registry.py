"""Every registered objective, checked the same way: its declarations name real fields, and some tiny
model's heads produce what it reads and it scores a full batch. A new entry in OBJECTIVES is covered here
for free."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from objectives.test_pretraining import TINY, full_batch

from mmbert.data.batch import RegionFeatures
from mmbert.models import PretrainingModel, PretrainingOutput, build_model
from mmbert.objectives import OBJECTIVES, Objective, Pretraining
from mmbert.train.pretrain_data import PretrainingBatch

OUTPUTS = {f.name for f in dataclasses.fields(PretrainingOutput)} - {"encoded"}
BATCH_FIELDS = {f.name for f in dataclasses.fields(PretrainingBatch)}
STORE_FIELDS = {f.name for f in dataclasses.fields(RegionFeatures)}


@pytest.mark.parametrize("name", OBJECTIVES)
def test_an_objective_declares_real_fields(name):
    objective = OBJECTIVES[name]()
    assert isinstance(objective, Objective) and objective.name == name
    assert objective.output in OUTPUTS
    assert objective.batch_fields and set(objective.batch_fields) <= BATCH_FIELDS
    if objective.detector is not None:
        assert set(objective.detector.fields) <= STORE_FIELDS
        assert objective.detector.size_key.startswith("num_")
    assert objective.describe().startswith(f"{name}: scores {objective.output}")


@pytest.mark.parametrize("name", OBJECTIVES)
def test_an_objective_scores_a_full_batch_on_some_model(name):
    torch.manual_seed(0)
    output = OBJECTIVES[name]().output
    for preset in TINY:
        model = PretrainingModel(build_model(preset))
        try:
            task = Pretraining(model, [name])
        except ValueError:  # this model has no head for the objective
            continue
        out = task(full_batch(model.config))
        assert math.isfinite(out.metrics[f"{name}_loss"]) and out.loss.requires_grad
        return
    pytest.fail(f"no tiny model has a head producing {output!r} for objective {name!r}")
