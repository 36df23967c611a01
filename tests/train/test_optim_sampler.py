"""AdamW parameter groups, learning-rate schedules, the step sampler, config validation, evaluation."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from mmbert.models import PretrainingModel, build_model
from mmbert.train import StepSampler, TrainConfig, build_optimizer, build_scheduler, param_groups
from mmbert.train.optim import lr_factor

sys.path.insert(0, str(Path(__file__).parent))
import toy  # noqa: E402


def test_no_weight_decay_on_biases_and_layer_norms():
    model = PretrainingModel(build_model("bert_tiny"))
    decay, exempt = param_groups(model, 0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    assert exempt["weight_decay"] == 0.0 and decay["weight_decay"] == 0.01
    exempt_names = {names[id(p)] for p in exempt["params"]}
    decay_names = {names[id(p)] for p in decay["params"]}
    assert all(n.endswith("bias") or ".norm" in n for n in exempt_names)
    assert any("norm" in n and n.endswith("weight") for n in exempt_names)
    assert all(not n.endswith("bias") for n in decay_names)
    assert "encoder.embeddings.word.weight" in decay_names  # embeddings decay, as in BERT
    assert len(exempt_names) + len(decay_names) == len(list(model.parameters()))  # tied matrix counted once
    opt = build_optimizer(model, 1e-3)
    assert isinstance(opt, torch.optim.AdamW) and len(opt.param_groups) == 2


def test_schedules_by_hand():
    # warm-up 4 steps to the peak, then 6 steps of decay to 0
    assert [lr_factor(s, 4, 10, "linear") for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(4, 4, 10, "linear") == 1.0
    assert lr_factor(7, 4, 10, "linear") == pytest.approx(0.5)
    assert lr_factor(10, 4, 10, "linear") == 0.0
    assert lr_factor(7, 4, 10, "cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(10, 4, 10, "cosine") == pytest.approx(0.0)
    assert lr_factor(9, 4, 10, "constant") == 1.0
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=2.0)
    sched = build_scheduler(opt, 2, 4, "linear")
    seen = []
    for _ in range(4):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == [1.0, 2.0, 2.0, 1.0]
    with pytest.raises(ValueError, match="schedule"):
        build_scheduler(opt, 0, 4, "step")


def test_sampler_covers_each_epoch_once_and_ranks_see_disjoint_slices():
    one = StepSampler(20, batch_size=4, grad_accum=1, world_size=1, seed=3)
    assert one.steps_per_epoch == 5
    epoch0 = [i for b in one.micro_batches(0) for i in b]
    assert sorted(epoch0) == list(range(20))
    assert one.micro_batches(0) != one.micro_batches(1)  # reshuffled per epoch
    assert one.micro_batches(1, first_step=3) == one.micro_batches(1)[3:]  # resuming mid-epoch
    ranks = [StepSampler(20, 2, 1, 2, r, seed=3) for r in range(2)]
    for k in range(ranks[0].steps_per_epoch):
        assert sorted(ranks[0].micro_batches(0)[k] + ranks[1].micro_batches(0)[k]) == sorted(one.micro_batches(0)[k])
    with pytest.raises(ValueError, match="fewer than one global batch"):
        StepSampler(5, 4, 2)


def test_train_config_refuses_unknown_keys_and_wrong_types():
    with pytest.raises(ValueError, match="unknown keys.*valid keys"):
        TrainConfig.from_dict({"max_step": 3})
    with pytest.raises(TypeError, match="'batch_size'"):
        TrainConfig.from_dict({"batch_size": "8"})
    with pytest.raises(TypeError, match="'progress'"):
        TrainConfig.from_dict({"progress": 1})
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(precision="fp8")
    assert TrainConfig.from_dict({"lr": 1, "find_unused_parameters": None}).lr == 1


def test_evaluation_every_n_steps_logs_and_keeps_the_best(tmp_path, monkeypatch):
    real_train = toy.train

    def with_eval(task, dataset, collate, config, out, **kw):
        config.eval_every = 2
        return real_train(task, dataset, collate, config, out, eval_dataset=toy.ToyPairs(n=16), **kw)

    monkeypatch.setattr(toy, "train", with_eval)
    result = toy.run(tmp_path, max_steps=6, save_every=3)  # best.pt is kept apart from the step schedule
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if "eval_loss" in r]
    assert [r["step"] for r in evals] == [2, 4, 6]
    assert result.eval_metrics["loss"] == evals[-1]["eval_loss"]
    best = torch.load(tmp_path / "checkpoints" / "best.pt", weights_only=True)
    assert best["best"] == min(r["eval_loss"] for r in evals)


def test_bf16_autocast_on_cpu_when_asked_and_fp16_refused(tmp_path):
    result = toy.run(tmp_path / "bf16", max_steps=2, save_every=2, precision="bf16")
    assert math.isfinite(result.metrics["loss"])
    with pytest.raises(ValueError, match="fp16 needs a GPU"):
        toy.run(tmp_path / "fp16", max_steps=2, save_every=2, precision="fp16")
