"""The trainer's ``optimizer_in_backward``: the same run as the normal optimizer without clipping, exact
resume, a non-finite loss stops before any update, the hooks leave with ``train``, and every setting that
needs the gradients after backward is refused by name."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from mmbert.objectives.base import LossOutput
from mmbert.train import DistEnv, NonFiniteLossError, TrainConfig, load_checkpoint, train

sys.path.insert(0, str(Path(__file__).parent))
import toy  # noqa: E402
from toy import assert_bit_identical, last_state  # noqa: E402

IN_BACKWARD = {"optimizer_in_backward": True, "max_grad_norm": 0.0}


def toy_config(**overrides) -> TrainConfig:
    return TrainConfig(**{"max_steps": 6, "batch_size": 8, "lr": 1e-3, "warmup_steps": 2, "save_every": 2,
                          "log_every": 1, "progress": False, "device": "cpu", "precision": "fp32",
                          **IN_BACKWARD, **overrides})  # fmt: skip


def test_in_backward_equals_the_normal_optimizer_and_resumes_exactly(tmp_path, monkeypatch):
    toy.run(tmp_path / "normal", max_steps=6, save_every=3, max_grad_norm=0.0)
    toy.run(tmp_path / "whole", max_steps=6, save_every=3, **IN_BACKWARD)
    def killed(out: LossOutput) -> LossOutput:
        raise KeyboardInterrupt  # the run dies after its step-3 checkpoint, mid-way through step 5

    with monkeypatch.context() as patch:
        toy.patch_forward(patch, 5, killed)
        with pytest.raises(KeyboardInterrupt):
            toy.run(tmp_path / "broken", max_steps=6, save_every=3, **IN_BACKWARD)
    assert last_state(tmp_path / "broken")["step"] == 3
    toy.run(tmp_path / "broken", max_steps=6, save_every=3, resume=True, **IN_BACKWARD)
    whole = last_state(tmp_path / "whole")
    assert_bit_identical(whole, last_state(tmp_path / "broken"))
    normal = last_state(tmp_path / "normal")
    for k in normal["task"]:  # same dropout, same schedule: the per-parameter updates are the normal ones
        torch.testing.assert_close(whole["task"][k], normal["task"][k], rtol=0, atol=1e-6, msg=k)
    assert normal["optimizer"]["param_groups"][0]["lr"] == whole["optimizer"]["param_groups"][0]["lr"]


def test_the_hooks_leave_with_train(tmp_path):
    task = toy.make_task()
    train(task, toy.ToyPairs(), toy.collate, toy_config(max_steps=2), tmp_path)
    task(toy.collate([toy.ToyPairs()[i] for i in range(4)])).loss.backward()
    assert all(p.grad is not None for p in task.parameters())  # no optimizer is applying or freeing them


def test_a_non_finite_loss_stops_before_the_backward_that_would_apply_it(tmp_path, monkeypatch):
    toy.patch_forward(monkeypatch, 5, toy.nan_loss)
    task = toy.make_task()
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 5.*step-00000004\.pt"):
        train(task, toy.ToyPairs(), toy.collate, toy_config(), tmp_path)
    saved = load_checkpoint(tmp_path / "checkpoints" / "step-00000004.pt")["task"]
    for k, v in task.state_dict().items():  # step 5 changed nothing (a NaN update would poison every weight)
        assert torch.equal(v, saved[k]), k


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"max_grad_norm": 1.0}, r"optimizer_in_backward=true cannot be combined with max_grad_norm=1\.0: global-norm"),
        ({"grad_accum": 2}, r"optimizer_in_backward=true cannot be combined with grad_accum=2"),
        ({"precision": "fp16"}, r"optimizer_in_backward=true cannot be combined with precision='fp16'"),
    ],
)
def test_settings_that_read_the_gradients_after_backward_are_refused(setting, message):
    with pytest.raises(ValueError, match=message):
        toy_config(**setting)
    toy_config(**setting, optimizer_in_backward=False)  # fine without it


def test_several_processes_are_refused(tmp_path):
    with pytest.raises(ValueError, match="optimizer_in_backward=true cannot run with 2 processes"):
        train(toy.make_task(), toy.ToyPairs(), toy.collate, toy_config(), tmp_path, env=DistEnv(world_size=2))


def test_in_backward_with_gradient_checkpointing_equals_the_normal_optimizer(tmp_path):
    # the recomputed layers run inside the backward pass that updates the parameters
    toy.run(tmp_path / "normal", max_steps=3, save_every=3, max_grad_norm=0.0, gradient_checkpointing=True)
    toy.run(tmp_path / "inback", max_steps=3, save_every=3, gradient_checkpointing=True, **IN_BACKWARD)
    a, b = last_state(tmp_path / "normal"), last_state(tmp_path / "inback")
    for k in a["task"]:
        torch.testing.assert_close(b["task"][k], a["task"][k], rtol=0, atol=1e-6, msg=k)
