"""AdamW applied in the backward pass (``build_optimizer(in_backward=True)``): the same parameters as the
normal optimizer under a schedule, one update of the tied word embedding per step, no gradient left
after backward, exact state_dict round trip, and a plain AdamW again after ``close()``."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import make_inputs

from mmbert.models import PretrainingModel, build_model
from mmbert.nn.tied import TiedEmbedding
from mmbert.objectives import Pretraining
from mmbert.train import build_optimizer, build_scheduler
from mmbert.train.optim import AdamWInBackward
from mmbert.train.pretrain_data import PretrainingBatch

IGNORE = -100


def batch_for(config, seed: int) -> PretrainingBatch:
    """Text (and regions) with two labelled tokens per example and one mismatched pair."""
    inputs = make_inputs(config, batch=3, text_len=8, seed=seed)
    labels = torch.full_like(inputs["text_ids"], IGNORE)
    labels[:, 1:3] = inputs["text_ids"][:, 1:3]
    return PretrainingBatch(**inputs, mlm_labels=labels, pair_labels=torch.tensor([1, 0, 1]))


def train_steps(task: Pretraining, opt: torch.optim.Optimizer, sched, seeds: range, seen: list | None = None) -> None:
    """The trainer's order: forward, backward, step, schedule, zero_grad; dropout drawn from seed 0 + step."""
    for s in seeds:
        torch.manual_seed(100 + s)
        task(batch_for(task.model.config, s)).loss.backward()
        if seen is not None:
            seen.append([p.grad for p in task.parameters()])
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)


def pair(name: str) -> tuple[Pretraining, Pretraining]:
    torch.manual_seed(0)
    model = PretrainingModel(build_model(name))
    return Pretraining(model), Pretraining(copy.deepcopy(model))


@pytest.mark.parametrize("name", ["bert_tiny", "visualbert_tiny"])
def test_updates_in_backward_equal_the_normal_optimizer_under_a_schedule(name):
    normal, inback = pair(name)
    # the tied gradients' in-place sum (mmbert.nn.tied) runs under MLM
    assert isinstance(inback.model.encoder.word_embeddings, TiedEmbedding) and "mlm" in inback.objective_names
    opt_n = build_optimizer(normal, 1e-2)
    opt_b = build_optimizer(inback, 1e-2, in_backward=True)
    assert isinstance(opt_b, AdamWInBackward) and opt_b.defaults["fused"] == opt_n.defaults["fused"]
    assert [len(g["params"]) for g in opt_b.param_groups] == [len(g["params"]) for g in opt_n.param_groups]
    word = inback.model.encoder.word_embeddings.weight
    assert inback.model.heads.mlm.decoder_weight is word  # one parameter, two uses in the graph
    updates = []
    word.register_post_accumulate_grad_hook(lambda p: updates.append(1))
    seen: list = []
    steps = range(6)  # warm-up 2 then linear decay: a different learning rate every step
    train_steps(normal, opt_n, build_scheduler(opt_n, 2, 6), steps)
    train_steps(inback, opt_b, build_scheduler(opt_b, 2, 6), steps, seen)
    assert len(updates) == len(steps)  # the tied matrix: one complete gradient, one update per step
    assert all(g is None for grads in seen for g in grads)  # nothing kept after backward
    for (key, a), b in zip(normal.named_parameters(), inback.parameters()):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-6, msg=key)
    assert any(not torch.equal(a, b) for a, b in zip(pair(name)[0].parameters(), inback.parameters()))


def test_state_dict_round_trip_continues_exactly_and_is_adamws():
    first, _ = pair("bert_tiny")
    whole = copy.deepcopy(first)
    opt = build_optimizer(whole, 1e-2, in_backward=True)
    train_steps(whole, opt, build_scheduler(opt, 2, 6), range(6))

    opt = build_optimizer(first, 1e-2, in_backward=True)
    sched = build_scheduler(opt, 2, 6)
    train_steps(first, opt, sched, range(3))
    saved = copy.deepcopy((first.state_dict(), opt.state_dict(), sched.state_dict()))
    opt.close()
    build_optimizer(first, 1e-2).load_state_dict(saved[1])  # the same format as the normal optimizer's checkpoint

    resumed, _ = pair("bert_tiny")
    resumed.load_state_dict(saved[0])
    opt = build_optimizer(resumed, 1e-2, in_backward=True)
    sched = build_scheduler(opt, 2, 6)
    opt.load_state_dict(saved[1])  # replaces the group dicts: the hooks must read the new ones
    sched.load_state_dict(saved[2])
    train_steps(resumed, opt, sched, range(3, 6))
    for (key, a), b in zip(whole.named_parameters(), resumed.parameters()):
        assert torch.equal(a, b), key


def test_a_second_backward_before_step_is_refused():
    task, _ = pair("bert_tiny")
    opt = build_optimizer(task, 1e-2, in_backward=True)
    task(batch_for(task.model.config, 0)).loss.backward()
    with pytest.raises(RuntimeError, match="received a second gradient before optimizer.step"):
        task(batch_for(task.model.config, 1)).loss.backward()
    opt.step()
    task(batch_for(task.model.config, 1)).loss.backward()  # a new step: allowed


def test_close_makes_it_a_plain_adamw_again():
    inback, normal = pair("bert_tiny")
    with build_optimizer(inback, 1e-2, in_backward=True) as opt:
        train_steps(inback, opt, build_scheduler(opt, 0, 4), range(1))
    normal.load_state_dict(inback.state_dict())
    plain = build_optimizer(normal, 1e-2)
    plain.load_state_dict(copy.deepcopy(opt.state_dict()))  # its own moments, not shared tensors
    for task, o in ((inback, opt), (normal, plain)):
        torch.manual_seed(7)
        task(batch_for(task.model.config, 1)).loss.backward()
        assert all(p.grad is not None for p in task.parameters())  # gradients stay for step()
        o.step()
    for (key, a), b in zip(normal.named_parameters(), inback.parameters()):
        assert torch.equal(a, b), key
