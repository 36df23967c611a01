"""Training: one readable loop (``loop.train``), DDP from torchrun, AdamW + schedules, atomic checkpoints."""

from mmbert.train.checkpoint import load_checkpoint, load_latest, save_checkpoint
from mmbert.train.config import TrainConfig
from mmbert.train.distributed import DistEnv, init_distributed
from mmbert.train.loop import NonFiniteLossError, ResumeError, TrainResult, evaluate, train
from mmbert.train.optim import AdamWInBackward, build_optimizer, build_scheduler, param_groups
from mmbert.train.sampler import StepSampler

__all__ = [
    "AdamWInBackward",
    "DistEnv",
    "NonFiniteLossError",
    "ResumeError",
    "StepSampler",
    "TrainConfig",
    "TrainResult",
    "build_optimizer",
    "build_scheduler",
    "evaluate",
    "init_distributed",
    "load_checkpoint",
    "load_latest",
    "param_groups",
    "save_checkpoint",
    "train",
]
