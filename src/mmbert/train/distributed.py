"""Distributed setup from ``torchrun``'s environment variables; a plain single process otherwise.

    torchrun --nproc_per_node=8 -m mmbert pretrain ...          # one node, 8 GPUs (nccl)
    python -m torch.distributed.run --nproc_per_node=2 ...      # 2 CPU processes (gloo), e.g. in tests
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass
class DistEnv:
    """Where this process sits: rank among world_size processes, its device, whether it logs/saves."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str | None = None) -> DistEnv:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1): nccl on GPU, gloo on CPU.

    ``device``: "cpu", "cuda" or None (GPU when available). Each process takes GPU ``LOCAL_RANK``.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but no GPU is available")
    dev = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", rank=rank, world_size=world)
    return DistEnv(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def cleanup(env: DistEnv) -> None:
    """Wait for every process, then tear the group down. Without the barrier a rank that finishes first
    (rank 0 still writing its checkpoint) can destroy gloo under the other's feet: the process aborts
    ("terminate called without an active exception") after its work is done."""
    if env.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def all_reduce_mean(value: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Mean over processes (identity in a single process)."""
    if not env.distributed:
        return value
    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / env.world_size


def all_gather_objects(obj: Any, env: DistEnv) -> list[Any]:
    """Every process's ``obj`` (a one-element list in a single process)."""
    if not env.distributed:
        return [obj]
    out: list[Any] = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()
