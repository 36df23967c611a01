"""The trainer's settings: one flat, typed dataclass, validated from dicts (unknown keys and wrong types
are refused with the key's name) and saved in the run directory."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any

from mmbert.train.optim import SCHEDULES

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass
class TrainConfig:
    max_steps: int = 1000  # optimizer steps
    batch_size: int = 32  # examples per process per micro-step; global batch = batch_size x grad_accum x processes
    grad_accum: int = 1  # micro-steps per optimizer step (gradients synchronised on the last only)
    lr: float = 1e-4  # peak learning rate
    weight_decay: float = 0.01  # AdamW decay; never on biases and LayerNorm parameters
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-6
    warmup_steps: int = 0  # linear warm-up from 0
    schedule: str = "linear"  # then "linear" / "cosine" decay to 0, or "constant"
    max_grad_norm: float = 1.0  # gradient clipping; 0 = off
    precision: str = "auto"  # auto: bf16 (fp16 without bf16 support) on GPU, fp32 on CPU
    device: str = "auto"  # auto | cpu | cuda
    seed: int = 0  # model init, data order, masking and dropout all derive from it
    shuffle: bool = True
    num_workers: int = 0  # DataLoader worker processes
    log_every: int = 10  # steps between metric records (JSONL, TensorBoard, progress bar)
    eval_every: int = 0  # steps between evaluations; 0 = only at the end (when there is eval data)
    eval_batches: int = 0  # batches per evaluation; 0 = the whole eval set
    save_every: int = 500  # steps between checkpoints (one is always written at the end)
    keep_last: int = 3  # step checkpoints kept, besides best.pt
    progress: bool = True  # tqdm progress bar on the main process
    find_unused_parameters: bool | None = None  # DDP: None = decide from the objectives' use of the heads
    gradient_checkpointing: bool = False  # recompute each Transformer layer in backward: less memory, ~1/3 more compute
    dist_timeout_minutes: float = 5.0  # DDP: a collective waiting longer than this ends the job (names the rank)
    # AdamW applied to each parameter in backward, its gradient freed at once: no model-sized gradient memory.
    # Needs what reads no gradient after backward: max_grad_norm=0, grad_accum=1, one process, no fp16.
    optimizer_in_backward: bool = False

    def __post_init__(self) -> None:
        for name in ("max_steps", "batch_size", "grad_accum", "keep_last", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"train config: {name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "eval_every", "eval_batches", "save_every", "num_workers", "max_grad_norm",
                     "weight_decay"):
            if getattr(self, name) < 0:
                raise ValueError(f"train config: {name} must be >= 0, got {getattr(self, name)}")
        if self.dist_timeout_minutes <= 0:
            raise ValueError(f"train config: dist_timeout_minutes must be positive, got {self.dist_timeout_minutes}")
        if self.lr <= 0:
            raise ValueError(f"train config: lr must be positive, got {self.lr}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"train config: schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"train config: precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"train config: device must be auto, cpu or cuda, got {self.device!r}")
        if self.optimizer_in_backward:
            self._check_in_backward()

    def _check_in_backward(self) -> None:
        """Each gradient is applied and freed during backward: refuse what needs the gradients after it."""
        conflicts = {
            "max_grad_norm": (self.max_grad_norm > 0, "global-norm clipping needs every gradient at once; set 0"),
            "grad_accum": (self.grad_accum > 1, "accumulating would update once per micro-batch; set 1"),
            "precision": (self.precision == "fp16", "fp16 gradient scaling unscales and checks the gradients "
                          "after backward; use bf16 or fp32"),  # fmt: skip
        }
        for key, (bad, why) in conflicts.items():
            if bad:
                raise ValueError(
                    f"train config: optimizer_in_backward=true cannot be combined with {key}={getattr(self, key)!r}: "
                    f"{why}"
                )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "train config") -> TrainConfig:
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"{source}: unknown keys {unknown}; valid keys: {sorted(known)}")
        for key, value in data.items():
            if not _matches(value, str(known[key].type)):
                raise TypeError(
                    f"{source}: key {key!r} expects {known[key].type}, got {value!r} ({type(value).__name__})"
                )
        return cls(**data)


def _matches(value: Any, annotation: str) -> bool:
    for option in (a.strip() for a in annotation.split("|")):
        if option == "None" and value is None:
            return True
        if option == "bool" and isinstance(value, bool):
            return True
        if option == "int" and isinstance(value, int) and not isinstance(value, bool):
            return True
        if option == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
            return True
        if option == "str" and isinstance(value, str):
            return True
    return False
