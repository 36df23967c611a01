"""Distributed setup from ``torchrun``'s environment variables; a plain single process otherwise.

    torchrun --nproc_per_node=8 -m mmbert pretrain ...          # one node, 8 GPUs (nccl)
    python -m torch.distributed.run --nproc_per_node=2 ...      # 2 CPU processes (gloo), e.g. in tests
"""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

# gloo's and nccl's default is 30 minutes: a stopped rank froze the others that long. Ours is short and
# configurable (TrainConfig.dist_timeout_minutes).
DEFAULT_TIMEOUT_MINUTES = 5.0
_HEARTBEAT_KEY = "mmbert/heartbeat/{rank}"


class DeviceError(RuntimeError):
    """A device that does not exist here (``cuda`` without a GPU, ``cuda:3`` on a 1-GPU machine, ``tpu``)."""


class PeerLostError(RuntimeError):
    """A collective failed because another process stopped or died; the message names it when it can."""


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


def resolve_device(name: str | None, local_rank: int = 0) -> torch.device:
    """``None``/"auto": GPU ``local_rank`` when there is one, else CPU; "cpu"; "cuda"; "cuda:N". A device
    that is not there is refused with a :class:`DeviceError` saying what is."""
    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if name in (None, "auto"):
        return torch.device("cuda", local_rank) if available else torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", name)
    if match is None:
        raise DeviceError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N")
    if not available:
        raise DeviceError(f"device {name!r} requested but no GPU is available here; use cpu")
    index = local_rank if match.group(1) is None else int(match.group(1))
    if index >= available:
        raise DeviceError(f"device cuda:{index} requested but this machine has {available} GPU(s) (cuda:0.."
                          f"cuda:{available - 1})")  # fmt: skip
    return torch.device("cuda", index)


def init_distributed(device: str | None = None, timeout_minutes: float = DEFAULT_TIMEOUT_MINUTES) -> DistEnv:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1): nccl on GPU, gloo on CPU.

    ``device``: "cpu", "cuda" or None (GPU when available). Each process takes GPU ``LOCAL_RANK``.
    ``timeout_minutes`` bounds every collective: a rank that stops answering makes the others fail after
    that long (with :class:`PeerLostError` naming it, see :func:`lost_peer_error`) instead of hanging.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        if timeout_minutes <= 0:
            raise ValueError(f"the distributed timeout must be positive, got {timeout_minutes} minutes")
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=world,
                                timeout=timedelta(minutes=timeout_minutes))  # fmt: skip
        _Heartbeat.start(rank, timeout_minutes)
    return DistEnv(rank=rank, world_size=world, local_rank=local_rank, device=dev)


class _Heartbeat:
    """Each process stamps the time into the job's key-value store every few seconds from a thread, so
    that when a collective fails the survivors can tell which rank went silent (a stopped or killed
    process stops stamping; one that merely waits in the collective keeps stamping)."""

    interval = 2.0
    _thread: threading.Thread | None = None
    _stop = threading.Event()

    @classmethod
    def start(cls, rank: int, timeout_minutes: float) -> None:
        store = _store()
        if store is None or cls._thread is not None:
            return
        cls.interval = max(0.2, min(2.0, timeout_minutes * 60 / 10))
        cls._stop.clear()

        def beat() -> None:
            while not cls._stop.is_set():
                try:
                    store.set(_HEARTBEAT_KEY.format(rank=rank), repr(time.time()))
                except Exception:  # noqa: BLE001 - the store went away: the job is ending
                    return
                cls._stop.wait(cls.interval)

        cls._thread = threading.Thread(target=beat, name="mmbert-heartbeat", daemon=True)
        cls._thread.start()

    @classmethod
    def stop(cls) -> None:
        cls._stop.set()
        cls._thread = None


def _store() -> Any:
    try:
        return dist.distributed_c10d._get_default_store()
    except Exception:  # noqa: BLE001 - private API: without it, the lost rank is just not named
        return None


def silent_ranks(env: DistEnv) -> list[int]:
    """Ranks whose heartbeat is older than three intervals (stopped, killed, or never started)."""
    store = _store()
    if store is None:
        return []
    now, lost = time.time(), []
    for r in range(env.world_size):
        if r == env.rank:
            continue
        key = _HEARTBEAT_KEY.format(rank=r)
        try:
            stamp = float(store.get(key)) if store.check([key]) else 0.0
        except Exception:  # noqa: BLE001
            continue
        if now - stamp > 3 * _Heartbeat.interval + 1:
            lost.append(r)
    return lost


def is_communication_failure(e: BaseException) -> bool:
    """A collective that failed because a peer is gone (timeout, closed connection), not a bug."""
    if isinstance(e, getattr(dist, "DistError", ())):
        return True
    text = str(e).lower()
    return isinstance(e, RuntimeError) and any(
        s in text for s in ("timed out", "timeout", "connection", "pair closure", "peer", "gloo", "nccl")
    )


def lost_peer_error(env: DistEnv, e: BaseException, where: str) -> PeerLostError:
    """The one-line error for a failed collective: which rank went silent, and what to do."""
    lost = silent_ranks(env)
    who = (f"rank {lost[0]}" if len(lost) == 1 else f"ranks {lost}") + " stopped responding (stopped or killed)"
    if not lost:
        who = "another process stopped responding"
    first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
    return PeerLostError(f"rank {env.rank}: {who} {where}; ending the job ({first}). Checkpoints written so far "
                         "are kept: restart with --resume")  # fmt: skip


def cleanup(env: DistEnv) -> None:
    """Wait for every process, then tear the group down. Without the barrier a rank that finishes first
    (rank 0 still writing its checkpoint) can destroy gloo under the other's feet: the process aborts
    ("terminate called without an active exception") after its work is done."""
    if env.distributed and dist.is_initialized():
        try:
            dist.barrier()
        except Exception as e:
            if is_communication_failure(e):
                raise lost_peer_error(env, e, "at the end of the run") from e
            raise
        finally:
            _Heartbeat.stop()
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
