"""UNIMO's adversarial fine-tuning for visual entailment, as the official code builds it
(PaddlePaddle/Research ``NLP/UNIMO/src/finetune/visual_entailment.py``, ``src/model/unimo_finetune.py``; its
defaults in ``src/args/visual_entailment_args.py``, under "args for villa": VILLA-style PGD).

Two perturbations, one per modality: ``text_delta`` (B, T, D) added to the text's word + position
embeddings before their LayerNorm, and ``region_delta`` (B, 1 + R, F) added to the region features fed to
``image_emb`` ([IMG]'s mean feature first). Each starts as

    delta = U(-1, 1) * mask * init_mag / sqrt(n * W)

with n the example's real positions (text tokens; [IMG] + regions) and W the width (D or F), so its L2
norm is at most ``init_mag``. Then, for t = 1 .. K (``steps``), three forwards — clean, text-perturbed,
image-perturbed — give logits z, z_text, z_image and

    L_t = (CE(z) + CE(z_text) + CE(z_image)) / K + SKL(z, z_text) + SKL(z, z_image)
    SKL(q, p) = mean over the batch of sum_c [q_c (log q_c - log p_c) + p_c (log p_c - log q_c)],
                q = softmax(z), p = softmax(z_perturbed)          (SMART's symmetric KL)

and each delta takes a step along the normalised gradient of its CE(z_perturbed) / K:

    g = d(CE / K) / d(delta),   delta <- delta + lr * g / max(||g||_2, 1e-8)      (per example)

The loss is L = sum_t L_t; gradients reach the model through every term (the KL terms are not divided by
K, as in the official graph). The deltas are constants to the model: only their own gradient moves them.

The bound. The official code then rescales delta by ``max_norm / ||g||`` where the *gradient* norm ||g||
exceeds ``max_norm`` (it reuses the gradient's norm; FreeLB and VILLA, which it follows, compare the
perturbation's own norm), so its delta is not kept within ``max_norm``. ``projection="delta"`` (default)
projects onto the L2 ball: delta <- delta * min(1, max_norm / ||delta||_2) per example, so ||delta|| <=
``max_norm`` always; ``projection="gradient"`` reproduces the official code's rule exactly. ``max_norm=0``
means no bound in either.

Defaults = the official arguments: K = 4 (``adv_step``), lr 0.05 (``adv_lr``), L2 (``norm_type``),
``adv_max_norm`` 0.4, ``adv_init_mag`` 0.4. The released ``script/visual_entailment/SNLI-VE*/`` run scripts
(which may override them) were not in the sources we could read. Evaluation runs the clean model only.
fp16 autocast is refused (the PGD gradients are unscaled and could underflow); bf16 and fp32 run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from mmbert.data.batch import Batch
from mmbert.objectives.base import LossOutput
from mmbert.tasks.model import TaskModel

PROJECTIONS = ("delta", "gradient")


@dataclass(frozen=True)
class AdversarialSettings:
    steps: int = 4
    lr: float = 0.05
    init_mag: float = 0.4
    max_norm: float = 0.4
    projection: str = "delta"

    def __post_init__(self) -> None:
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"adversarial steps must be an integer >= 1, got {self.steps!r}")
        if not self.lr > 0 or not self.init_mag > 0:  # the official code asserts adv_init_mag > 0
            raise ValueError(f"adversarial step size and initial magnitude must be > 0, got {self.lr}, {self.init_mag}")
        if not self.max_norm >= 0:
            raise ValueError(f"adversarial max_norm must be >= 0 (0 = no bound), got {self.max_norm}")
        if self.projection not in PROJECTIONS:
            raise ValueError(f"adversarial projection {self.projection!r} is not one of {PROJECTIONS}")


def _norms(x: Tensor) -> Tensor:
    """Per-example L2 norm, shaped to broadcast over x."""
    return x.flatten(1).norm(dim=1).view(-1, *([1] * (x.dim() - 1)))


def init_delta(mask: Tensor, width: int, init_mag: float) -> Tensor:
    """(B, L, width): U(-1, 1) on the real positions of ``mask`` (B, L), scaled by init_mag / sqrt(n * width)."""
    m = mask.float()[..., None]
    n = m.flatten(1).sum(1).clamp(min=1.0).view(-1, 1, 1) * width
    u = torch.rand(*mask.shape, width, device=mask.device) * 2 - 1
    return u * m * (init_mag / n.sqrt())


def pgd_step(delta: Tensor, grad: Tensor, lr: float, max_norm: float, projection: str = "delta") -> Tensor:
    """One ascent step along the per-example normalised gradient, then the bound (module docstring)."""
    gnorm = _norms(grad).clamp(min=1e-8)
    delta = delta + lr * grad / gnorm
    if max_norm > 0:
        norm = _norms(delta) if projection == "delta" else gnorm
        delta = delta * torch.where(norm > max_norm, max_norm / norm.clamp(min=1e-12), torch.ones_like(norm))
    return delta.detach()


def symmetric_kl(q_logits: Tensor, p_logits: Tensor) -> Tensor:
    """KL(q || p) + KL(p || q) of the softmaxes, summed over classes, averaged over the batch."""
    log_q, log_p = F.log_softmax(q_logits.float(), -1), F.log_softmax(p_logits.float(), -1)
    return ((log_q.exp() - log_p.exp()) * (log_q - log_p)).sum(-1).mean()


def check_no_fp16_autocast(device: torch.device) -> None:
    """The PGD steps take ``torch.autograd.grad`` of an unscaled loss: under fp16 autocast those gradients
    may underflow to 0 (the trainer's GradScaler scales only the final backward), which would stall the
    perturbation without a sign, so fp16 is refused; bf16 has fp32's exponent range."""
    if torch.is_autocast_enabled(device.type) and torch.get_autocast_dtype(device.type) == torch.float16:
        raise ValueError(
            "adversarial=true under fp16 autocast: the inner PGD gradients are not loss-scaled and may underflow "
            "to 0; train with precision bf16 or fp32"
        )


@dataclass
class AdversarialOutput:
    out: LossOutput
    logits: Tensor  # the clean logits of the last round
    deltas: list[tuple[Tensor, Tensor]]  # (text, region) perturbation used in each round


def adversarial_step(
    model: TaskModel, batch: Batch, ce: Callable[[Tensor], Tensor], settings: AdversarialSettings
) -> AdversarialOutput:
    """The official visual-entailment training loss (module docstring). ``ce(logits)`` is the task's mean
    cross-entropy; the text delta is drawn before the region delta, from the global RNG (checkpointed)."""
    inputs = batch.encoder_inputs(model.encoder)
    text_ids, feats = inputs.get("text_ids"), inputs.get("region_feats")
    if text_ids is None or feats is None:
        raise ValueError("UNIMO's adversarial fine-tuning perturbs both modalities: the batch needs text and regions")
    check_no_fp16_autocast(feats.device)
    text_mask = inputs.get("text_mask")
    if text_mask is None:
        text_mask = torch.ones(text_ids.shape, dtype=torch.bool, device=text_ids.device)
    region_mask = inputs.get("region_mask")
    if region_mask is None:
        region_mask = torch.ones(feats.shape[:2], dtype=torch.bool, device=feats.device)
    vision_mask = torch.cat([torch.ones_like(region_mask[:, :1]), region_mask], 1)  # [IMG] + regions
    text_delta = init_delta(text_mask, model.config.dim, settings.init_mag)
    region_delta = init_delta(vision_mask, feats.shape[-1], settings.init_mag)
    k = settings.steps
    total: Tensor | None = None
    used: list[tuple[Tensor, Tensor]] = []
    parts: dict[str, float] = {}
    for step in range(k):
        used.append((text_delta, region_delta))
        text_delta, region_delta = text_delta.requires_grad_(), region_delta.requires_grad_()
        clean = model.head(model.encoder(**inputs), batch)
        z_text = model.head(model.encoder(**inputs, text_delta=text_delta), batch)
        z_image = model.head(model.encoder(**inputs, region_delta=region_delta), batch)
        ce_clean, ce_text, ce_image = ce(clean) / k, ce(z_text) / k, ce(z_image) / k
        kl_text, kl_image = symmetric_kl(clean, z_text), symmetric_kl(clean, z_image)
        term = ce_clean + ce_text + ce_image + kl_text + kl_image
        total = term if total is None else total + term
        if step + 1 < k:  # the official graph also steps after the last round, but nothing reads that delta
            g_text = torch.autograd.grad(ce_text, text_delta, retain_graph=True)[0]
            g_image = torch.autograd.grad(ce_image, region_delta, retain_graph=True)[0]
            text_delta = pgd_step(text_delta.detach(), g_text, settings.lr, settings.max_norm, settings.projection)
            region_delta = pgd_step(
                region_delta.detach(), g_image, settings.lr, settings.max_norm, settings.projection
            )
        parts = {"adv_text_ce": float(ce_text.detach()) * k, "adv_image_ce": float(ce_image.detach()) * k,
                 "adv_text_kl": float(kl_text.detach()), "adv_image_kl": float(kl_image.detach())}  # fmt: skip
    assert total is not None
    with torch.no_grad():
        acc = (clean.argmax(1) == batch.labels).float().mean()
    used = [(t.detach(), r.detach()) for t, r in used]
    metrics = {"ve_loss": float(ce_clean.detach()) * k, "ve_acc": float(acc), **parts,
               "adv_text_delta_norm": float(_norms(used[-1][0]).mean()),
               "adv_image_delta_norm": float(_norms(used[-1][1]).mean())}  # fmt: skip
    return AdversarialOutput(LossOutput(total, metrics), clean.detach(), used)
