"""UNIMO's adversarial visual-entailment training: the perturbations' start and bound, and the loss on
unimo_tiny against the official formula written out here."""

from __future__ import annotations

import json
import math

import pytest
import torch

from mmbert.tasks import TaskModel
from mmbert.tasks.base import collate
from mmbert.tasks.records import TaskDataError
from mmbert.tasks.snli_ve import SNLIVETask
from mmbert.tasks.unimo_adversarial import AdversarialSettings, adversarial_step, init_delta, pgd_step

PAIRS = [
    {"Flickr30K_ID": "1", "sentence2": "a red circle", "gold_label": "entailment", "pairID": "p1"},
    {"Flickr30K_ID": "2", "sentence2": "two blue squares left of a star", "gold_label": "neutral", "pairID": "p2"},
    {"Flickr30K_ID": "3", "sentence2": "no star", "gold_label": "contradiction", "pairID": "p3"},
]


def norms(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).norm(dim=1)


def test_the_initial_perturbation_is_masked_and_within_init_mag():
    torch.manual_seed(0)
    mask = torch.tensor([[True, True, True, False], [True, False, False, False]])
    delta = init_delta(mask, 8, 0.4)
    assert delta.shape == (2, 4, 8) and not bool(delta[~mask].any())
    for i, n in enumerate((3, 1)):
        assert float(delta[i].abs().max()) <= 0.4 / math.sqrt(n * 8) + 1e-7
    assert bool((norms(delta) <= 0.4 + 1e-6).all())


def test_a_step_stays_within_the_bound_and_the_official_rule_is_available():
    torch.manual_seed(0)
    delta, grad = torch.randn(3, 5, 4) * 0.1, torch.randn(3, 5, 4)
    delta[2] *= 0.0  # starts at the centre: one small step stays inside the ball
    step = delta + 0.05 * grad / norms(grad).view(-1, 1, 1)
    for lr in (0.05, 10.0):
        bounded = pgd_step(delta, grad, lr, 0.4, "delta")
        assert bool((norms(bounded) <= 0.4 + 1e-6).all())
    torch.testing.assert_close(pgd_step(delta, grad, 0.05, 0.4, "delta")[2], step[2])  # inside: untouched
    torch.testing.assert_close(pgd_step(delta, grad, 0.05, 0.0, "delta"), step)  # max_norm 0: no bound
    g = norms(grad).view(-1, 1, 1)
    official = step * torch.where(g > 0.4, 0.4 / g, torch.ones_like(g))  # the gradient's norm decides
    torch.testing.assert_close(pgd_step(delta, grad, 0.05, 0.4, "gradient"), official)
    with pytest.raises(ValueError, match="projection 'l1'"):
        AdversarialSettings(projection="l1")
    with pytest.raises(TaskDataError, match="snli-ve.*steps must be an integer >= 1"):
        SNLIVETask(adversarial=True, adv_steps=0)


@pytest.fixture
def ve(tmp_path, tokenizer):
    from tasks.task_fixtures import make_store, tiny_encoder

    path = tmp_path / "snli_ve_train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in PAIRS))
    task = SNLIVETask(adversarial=True, adv_steps=2, adv_lr=0.3, adv_max_norm=0.5, adv_init_mag=0.4)
    data = task.load({"jsonl": path}, tokenizer, make_store(["1", "2", "3"]))
    encoder = tiny_encoder("unimo_tiny")
    # training mode (the perturbation runs only then) with no dropout: every forward repeats exactly
    model = TaskModel(encoder, task.build_head(encoder)).train()
    model.head.dropout = 0.0  # the head's fc dropout (0.1 in the official config)
    return task, model, collate([data[i] for i in range(3)])


def hand_loss(model, batch, k: int, lr: float, max_norm: float, init_mag: float) -> torch.Tensor:
    """The official loop, written out: deltas drawn text first, then regions ([IMG] + regions)."""
    inputs = batch.encoder_inputs(model.encoder)
    tmask = inputs["text_mask"].float()[..., None]
    vmask = torch.cat([torch.ones_like(inputs["region_mask"][:, :1]), inputs["region_mask"]], 1).float()[..., None]
    d, f = model.config.dim, inputs["region_feats"].shape[-1]
    deltas = []
    for mask, width in ((tmask, d), (vmask, f)):
        u = torch.rand(mask.shape[0], mask.shape[1], width) * 2 - 1
        deltas.append(u * mask * init_mag / (mask.sum((1, 2)) * width).sqrt().view(-1, 1, 1))

    def logits(**extra):
        return model.head(model.encoder(**inputs, **extra), batch)

    def ce(z):
        return torch.nn.functional.cross_entropy(z, batch.labels)

    def skl(zq, zp):
        q, p = zq.softmax(-1), zp.softmax(-1)
        return ((q * (q.log() - p.log())).sum(-1) + (p * (p.log() - q.log())).sum(-1)).mean()

    total = 0.0
    for _ in range(k):
        text, image = (x.clone().requires_grad_() for x in deltas)
        z, zt, zi = logits(), logits(text_delta=text), logits(region_delta=image)
        total = total + (ce(z) + ce(zt) + ce(zi)) / k + skl(z, zt) + skl(z, zi)
        new = []
        for delta, loss in ((text, ce(zt) / k), (image, ce(zi) / k)):
            g = torch.autograd.grad(loss, delta, retain_graph=True)[0]
            moved = delta.detach() + lr * g / norms(g).clamp(min=1e-8).view(-1, 1, 1)
            n = norms(moved).view(-1, 1, 1)
            new.append(moved * torch.where(n > max_norm, max_norm / n, torch.ones_like(n)))
        deltas = new
    return total


def test_the_adversarial_loss_is_the_official_formula_on_unimo_tiny(ve):
    task, model, batch = ve
    torch.manual_seed(7)
    out = task.model_step(model, batch)
    torch.manual_seed(7)
    want = hand_loss(model, batch, k=2, lr=0.3, max_norm=0.5, init_mag=0.4)
    assert float(out.loss.detach()) == pytest.approx(float(want.detach()), rel=1e-5)
    assert {"ve_loss", "ve_acc", "adv_text_kl", "adv_image_kl"} <= set(out.metrics)
    out.loss.backward()
    assert float(model.encoder.text_embeddings.word.weight.grad.abs().sum()) > 0
    assert float(model.encoder.region_embeddings.feat_proj.weight.grad.abs().sum()) > 0
    plain = SNLIVETask().model_step(model, batch)  # adversarial off: the plain cross-entropy
    assert float(plain.loss.detach()) == pytest.approx(out.metrics["ve_loss"], rel=1e-5)
    with torch.no_grad():  # the trainer's evaluation: the clean model's loss, no perturbation
        assert float(task.model_step(model.eval(), batch).loss) == pytest.approx(out.metrics["ve_loss"], rel=1e-5)


def test_eval_mode_scores_the_clean_model_even_with_grad_enabled(ve):
    """Evaluation is the model's mode (the official is_train flag), not the grad mode: in eval mode with
    grad enabled (e.g. a caller that scores under autograd) the loss is the clean cross-entropy only."""
    task, model, batch = ve
    model.eval()
    assert torch.is_grad_enabled()
    out = task.model_step(model, batch)
    plain = SNLIVETask().model_step(model, batch)
    assert float(out.loss.detach()) == pytest.approx(float(plain.loss.detach()), rel=1e-6)
    assert "adv_text_kl" not in out.metrics


def test_every_round_perturbs_within_the_bound_even_with_a_large_step(ve):
    task, model, batch = ve
    settings = AdversarialSettings(steps=4, lr=5.0, init_mag=0.4, max_norm=0.5)
    torch.manual_seed(0)
    result = adversarial_step(model, batch, lambda z: torch.nn.functional.cross_entropy(z, batch.labels), settings)
    assert len(result.deltas) == 4
    for text, image in result.deltas:
        assert bool((norms(text) <= 0.5 + 1e-5).all()) and bool((norms(image) <= 0.5 + 1e-5).all())
    assert bool((norms(result.deltas[-1][0]) > 0.49).all())  # the big steps reach the bound
    assert not bool(result.deltas[-1][0][~batch.text_mask].abs().gt(1e-6).any())  # padding stays unperturbed


def test_adversarial_training_is_unimo_only(ve, tokenizer):
    from tasks.task_fixtures import tiny_encoder

    task, _, batch = ve
    encoder = tiny_encoder("visualbert_tiny")
    model = TaskModel(encoder, SNLIVETask().build_head(encoder))
    with pytest.raises(ValueError, match="adversarial=true is UNIMO's .* 'visualbert'"):
        task.model_step(model, batch)


def test_fp16_autocast_is_refused_before_its_pgd_gradients_can_underflow(ve):
    """The inner PGD gradients (torch.autograd.grad, no GradScaler) of an fp16 forward may underflow to 0
    and stall the perturbation silently: under fp16 autocast the step is refused, naming the way out."""
    task, model, batch = ve
    with torch.autocast("cpu", dtype=torch.float16), pytest.raises(ValueError, match="fp16 .*precision bf16 or fp32"):
        task.model_step(model, batch)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16 has fp32's range: allowed
        assert torch.isfinite(task.model_step(model, batch).loss)
