"""AdamW without weight decay on biases and normalisation weights (optionally applied inside the backward
pass), and warm-up + decay schedules."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR

SCHEDULES = ("linear", "cosine", "constant")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: decayed weights, and the exempt ones (every bias, every LayerNorm parameter), as BERT.

    Tied parameters appear once (``named_parameters`` de-duplicates)."""
    no_decay: set[int] = set()
    for module in model.modules():
        if isinstance(module, (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d)):
            no_decay.update(id(p) for p in module.parameters(recurse=False))
    decay, exempt = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if id(p) in no_decay or name.endswith("bias"):
            exempt.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": exempt, "weight_decay": 0.0}]


def build_optimizer(
    model: nn.Module,
    lr: float,
    weight_decay: float = 0.01,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-6,
    in_backward: bool = False,
) -> torch.optim.AdamW:
    """AdamW; the fused kernel where every parameter allows it (CPU or CUDA floats): one pass over each
    tensor instead of a dozen, the same update. ``in_backward``: an ``AdamWInBackward`` (no gradient
    memory; no global clipping, no accumulation)."""
    groups = param_groups(model, weight_decay)
    params = [p for g in groups for p in g["params"]]
    fused = bool(params) and all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    if in_backward:
        names = {id(p): name for name, p in model.named_parameters()}
        return AdamWInBackward(groups, names, lr=lr, betas=betas, eps=eps, fused=fused)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=fused)


class AdamWInBackward(torch.optim.AdamW):
    """AdamW that updates each parameter inside the backward pass, as soon as its gradient is complete
    (``register_post_accumulate_grad_hook``), and drops that gradient at once: only the gradients of the
    layers in flight are alive instead of a whole model's worth.

    AdamW is per parameter, so this is the update ``step()`` would make after backward, at the learning
    rate the scheduler set for the step; what needs every gradient at once (global-norm clipping,
    accumulation over several backward passes, a gradient all-reduce) cannot be combined with it. A tied
    parameter has one gradient accumulator, so it is updated once, with the sum of its uses' gradients.
    ``step()`` only closes the step (a second gradient for a parameter before it is refused: it would be
    a second update); ``state_dict()`` is AdamW's. ``close()`` removes the hooks: a plain AdamW again."""

    def __init__(self, params: list[dict], names: dict[int, str], **defaults) -> None:
        super().__init__(params, **defaults)
        self._names = names
        self._group_of = {id(p): i for i, g in enumerate(self.param_groups) for p in g["params"]}
        self._updated: set[int] = set()
        self._handles = [
            p.register_post_accumulate_grad_hook(self._update) for g in self.param_groups for p in g["params"]
        ]

    def _update(self, p: Tensor) -> None:
        """AdamW's own step on this one parameter (its group's current hyper-parameters), then no gradient."""
        if id(p) in self._updated:
            raise RuntimeError(
                f"optimizer_in_backward: parameter {self._names.get(id(p), tuple(p.shape))} received a second "
                "gradient before optimizer.step() closed the step; it would be updated twice (gradient "
                "accumulation over several backward passes needs the normal optimizer)"
            )
        self._updated.add(id(p))
        groups = self.param_groups  # looked up now: load_state_dict replaces the group dicts
        self.param_groups = [{**groups[self._group_of[id(p)]], "params": [p]}]
        try:
            super().step()
        finally:
            self.param_groups = groups
        p.grad = None

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """The updates were made in backward: close the step (the normal step once ``close()`` was called)."""
        if not self._handles:
            return super().step(closure)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._updated.clear()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        super().zero_grad(set_to_none)
        self._updated.clear()

    def close(self) -> None:
        """Remove the hooks: gradients accumulate in ``.grad`` again and ``step()`` applies them."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._updated.clear()

    def __enter__(self) -> AdamWInBackward:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def lr_factor(step: int, warmup_steps: int, total_steps: int, schedule: str) -> float:
    """Multiplier of the peak learning rate after ``step`` optimizer steps: linear warm-up from 0, then
    linear decay to 0, half-cosine decay to 0, or constant."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose from {SCHEDULES}")
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    if schedule == "linear":
        return max(0.0, 1.0 - progress)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, schedule: str = "linear"
) -> LambdaLR:
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose from {SCHEDULES}")
    return LambdaLR(optimizer, lambda step: lr_factor(step, warmup_steps, total_steps, schedule))
