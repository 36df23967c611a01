"""The training loop: one function, read top to bottom.

    python -m mmbert pretrain --model lxmert_tiny ...                          # one process
    torchrun --nproc_per_node=4 -m mmbert pretrain --model lxmert_base ...    # DDP, one GPU each

``train(task, dataset, collate_fn, config, run_dir)`` where ``task(batch) -> LossOutput`` (e.g.
``objectives.Pretraining``). Order of a step: ``grad_accum`` micro-batches (forward under autocast,
backward; DDP gradient sync on the last only), a finite-loss check, unscale + clip, optimizer and
scheduler step. Then logging, evaluation and checkpointing on their schedules. With
``optimizer_in_backward`` the loss is checked before the backward pass, which applies the update.

Exact resume: the data order is a function of (seed, step) (``StepSampler``), per-example masking is
seeded by (seed, epoch, index) (datasets with ``set_epoch``), and a checkpoint holds the model,
optimizer, scheduler, grad scaler and every process's RNG states. A run killed at any point and
resumed from its last checkpoint ends with bit-identical weights to an unbroken run.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from mmbert.atomic import atomic_write_text
from mmbert.data.batch import Batch
from mmbert.lock import PathLock
from mmbert.nn.block import set_gradient_checkpointing
from mmbert.objectives.base import LossOutput
from mmbert.train import checkpoint as ckpt
from mmbert.train.config import TrainConfig
from mmbert.train.distributed import (
    DistEnv,
    all_gather_objects,
    all_reduce_mean,
    barrier,
    init_distributed,
    is_communication_failure,
    lost_peer_error,
)
from mmbert.train.optim import AdamWInBackward, build_optimizer, build_scheduler
from mmbert.train.sampler import StepSampler

# Keys of the train config that fix which examples a step sees; a resume must not change them.
DATA_ORDER_KEYS = ("batch_size", "grad_accum", "seed", "shuffle")


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or inf; nothing was written for the failing step."""


class ResumeError(ValueError):
    """The run directory cannot be resumed by this run (different model, objectives or data order)."""


@dataclass
class TrainResult:
    step: int
    metrics: dict[str, float]
    eval_metrics: dict[str, float] | None
    last_checkpoint: Path | None


def train(
    task: nn.Module,
    dataset: Dataset,
    collate_fn: Callable[[list[Any]], Batch],
    config: TrainConfig,
    run_dir: str | os.PathLike,
    *,
    eval_dataset: Dataset | None = None,
    resume: bool = False,
    run_info: dict[str, Any] | None = None,
    env: DistEnv | None = None,
) -> TrainResult:
    """Train ``task`` (a module mapping a Batch to a LossOutput) on ``dataset``.

    ``run_info`` (model name, model config, objectives ...) is stored in every checkpoint; ``resume``
    refuses a run directory whose checkpoints carry a different one.
    """
    env = env or init_distributed(None if config.device == "auto" else config.device, config.dist_timeout_minutes)
    run_dir = Path(run_dir)
    lock = contextlib.nullcontext()
    if env.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = PathLock(run_dir, "run directory")  # re-entrant: the command may hold it already
    with lock, contextlib.ExitStack() as on_exit:  # on_exit: the optimizer's hooks leave the model with us
        try:
            return _train(task, dataset, collate_fn, config, run_dir, eval_dataset, resume, run_info or {}, env,
                          on_exit)  # fmt: skip
        except Exception as e:
            if env.distributed and is_communication_failure(e):
                raise lost_peer_error(env, e, "during training") from e
            raise


def _train(task, dataset, collate_fn, config: TrainConfig, run_dir: Path, eval_dataset, resume: bool,
           run_info: dict[str, Any], env: DistEnv, on_exit: contextlib.ExitStack) -> TrainResult:  # fmt: skip
    amp_dtype = _amp_dtype(config.precision, env.device)
    if config.optimizer_in_backward:
        _check_in_backward(env, amp_dtype)
    _seed_everything(config.seed + env.rank)

    task.to(env.device)
    if config.gradient_checkpointing:
        set_gradient_checkpointing(task, True)
    optimizer = build_optimizer(task, config.lr, config.weight_decay, (config.adam_beta1, config.adam_beta2),
                                config.adam_eps, in_backward=config.optimizer_in_backward)  # fmt: skip
    if isinstance(optimizer, AdamWInBackward):
        on_exit.enter_context(optimizer)
    scheduler = build_scheduler(optimizer, config.warmup_steps, config.max_steps, config.schedule)
    scaler = torch.amp.GradScaler(env.device.type, enabled=amp_dtype == torch.float16)

    # ---- resume ------------------------------------------------------------------------------------
    step, best, last_path = 0, math.inf, None
    if resume:
        loaded = ckpt.load_latest(run_dir)
        if loaded is None:
            raise FileNotFoundError(f"--resume: no checkpoint in {ckpt.checkpoint_dir(run_dir)}")
        state, last_path = loaded
        check_resumable(state, run_info, config, env, source=str(last_path))
        if int(state["step"]) > config.max_steps:
            raise ResumeError(
                f"--resume: {last_path} is at step {state['step']}, beyond max_steps={config.max_steps}: there is "
                f"nothing left to train; pass --max-steps above {state['step']} to continue"
            )
    if env.is_main:  # a fresh start too: temporary files of a killed earlier write are never read
        ckpt.remove_stale_temp_files(run_dir)
    if resume:
        task.load_state_dict(state["task"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        step, best = int(state["step"]), float(state["best"])
        ckpt.set_rng_state(state["rng"][env.rank])
        del state

    model: nn.Module = task
    if env.distributed:
        find_unused = config.find_unused_parameters
        if find_unused is None:
            find_unused = not getattr(task, "uses_every_head", False)
        model = DistributedDataParallel(task, find_unused_parameters=find_unused)

    sampler = StepSampler(
        len(dataset), config.batch_size, config.grad_accum, env.world_size, env.rank, config.seed, config.shuffle
    )
    log = _MetricLog(run_dir, step) if env.is_main else None
    bar = _progress(config, env, step)
    last_metrics: dict[str, float] = {}
    eval_metrics: dict[str, float] | None = None
    window_start, window_examples = time.perf_counter(), 0

    # ---- the loop ----------------------------------------------------------------------------------
    while step < config.max_steps:
        epoch, offset = sampler.position(step)
        micro = _epoch_batches(dataset, collate_fn, sampler, epoch, offset, config)
        for _ in range(offset, sampler.steps_per_epoch):
            metrics = _train_step(model, task, micro, optimizer, scheduler, scaler, amp_dtype, config, env)
            step += 1
            if not math.isfinite(metrics["loss"]):
                where = f"the last good checkpoint is {last_path}" if last_path else "no checkpoint was written yet"
                detail = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if k.endswith("_loss"))
                raise NonFiniteLossError(
                    f"loss is {metrics['loss']} at step {step} ({detail or 'no per-objective losses'}); "
                    f"stopping without saving this step; {where}"
                )
            window_examples += sampler.global_batch
            last_metrics = metrics
            done = step >= config.max_steps
            if step % config.log_every == 0 or done:
                elapsed = time.perf_counter() - window_start
                record = {"step": step, "epoch": epoch, "lr": scheduler.get_last_lr()[0], **metrics,
                          "examples_per_s": window_examples / max(elapsed, 1e-9)}
                if log is not None:
                    log.write(record)
                if bar is not None:
                    bar.set_postfix(loss=f"{metrics['loss']:.4f}", ex_s=f"{record['examples_per_s']:.1f}")
                window_start, window_examples = time.perf_counter(), 0
            if bar is not None:
                bar.update(1)
            evaluated = False
            if eval_dataset is not None and ((config.eval_every and step % config.eval_every == 0) or done):
                eval_metrics = evaluate(task, eval_dataset, collate_fn, config, env, amp_dtype)
                evaluated = True
                if log is not None:
                    log.write({"step": step, **{f"eval_{k}": v for k, v in eval_metrics.items()}})
            improved = evaluated and eval_metrics["loss"] < best
            if improved:
                best = eval_metrics["loss"]
            save_now = bool(config.save_every and step % config.save_every == 0) or done
            if save_now or improved:
                state = {
                    "step": step,
                    "epoch": epoch,
                    "data_position": dict(zip(("epoch", "offset"), sampler.position(step))),
                    "task": task.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "rng": all_gather_objects(ckpt.rng_state(), env),
                    "best": best,
                    "run": run_info,
                    "train_config": config.to_dict(),
                    "world_size": env.world_size,
                }
                if env.is_main:
                    if save_now:
                        last_path = ckpt.save_checkpoint(run_dir, step, state, config.keep_last)
                    if improved:
                        ckpt.save_best(run_dir, state)
                barrier(env)
            if done:
                break
    if bar is not None:
        bar.close()
    if log is not None:
        log.close()
    return TrainResult(step, last_metrics, eval_metrics, last_path)


def _train_step(
    model: nn.Module,
    task: nn.Module,
    micro: Iterator[Batch],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    amp_dtype: torch.dtype | None,
    config: TrainConfig,
    env: DistEnv,
) -> dict[str, float]:
    """One optimizer step over ``grad_accum`` micro-batches; returns metrics averaged over micro-batches
    and processes (``loss`` is the summed weighted loss)."""
    model.train()
    sums: dict[str, float] = {}
    for j in range(config.grad_accum):
        batch = next(micro).to(env.device)
        last = j == config.grad_accum - 1
        sync = contextlib.nullcontext() if last or not isinstance(model, DistributedDataParallel) else model.no_sync()
        with sync:
            with _autocast(env.device, amp_dtype):
                out: LossOutput = model(batch)
            # in-backward mode: the backward pass applies the update, so a non-finite loss stops before it
            applies_nan = config.optimizer_in_backward and not bool(torch.isfinite(out.loss.detach()))
            if not applies_nan:
                scaler.scale(out.loss / config.grad_accum).backward()
        for k, v in {**out.metrics, "loss": out.loss.detach()}.items():  # "loss" is always the optimised one
            sums[k] = sums.get(k, 0.0) + float(v) / config.grad_accum
    metrics = _mean_over_processes(sums, env)
    if math.isfinite(metrics["loss"]):
        if config.max_grad_norm > 0:
            scaler.unscale_(optimizer)
            norm = torch.nn.utils.clip_grad_norm_(task.parameters(), config.max_grad_norm)
            metrics["grad_norm"] = float(norm)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return metrics


@torch.no_grad()
def evaluate(
    task: nn.Module,
    dataset: Dataset,
    collate_fn: Callable[[list[Any]], Batch],
    config: TrainConfig,
    env: DistEnv,
    amp_dtype: torch.dtype | None = None,
) -> dict[str, float]:
    """Metrics averaged over the eval set (each process takes every world_size-th batch); each metric over
    the examples of the batches that report it (a task schedule gives each batch one task's metrics)."""
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(0)
    indices = list(range(len(dataset)))
    batches = [indices[i : i + config.batch_size] for i in range(0, len(indices), config.batch_size)]
    if config.eval_batches:
        batches = batches[: config.eval_batches]
    eval_keys = getattr(dataset, "eval_keys", None)
    if eval_keys is not None:  # one task per round of world_size batches: every process reports the same keys
        slot = _slot_keywords(eval_keys, 0, env.world_size)
        batches = [eval_keys(j // env.world_size, b, **slot(j % env.world_size)) for j, b in enumerate(batches)]
    mine = batches[env.rank :: env.world_size]
    was_training = task.training
    task.eval()
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for idx in mine:
        batch = collate_fn([dataset[i] for i in idx]).to(env.device)
        with _autocast(env.device, amp_dtype):
            out = task(batch)
        for k, v in {**out.metrics, "loss": out.loss.detach()}.items():
            sums[k] = sums.get(k, 0.0) + float(v) * len(idx)
            counts[k] = counts.get(k, 0.0) + len(idx)
    task.train(was_training)
    names = sorted(sums)
    totals = _sum_over_processes({**{k: sums.get(k, 0.0) for k in names},
                                  **{f"__count_{k}": counts.get(k, 0.0) for k in names}}, env)  # fmt: skip
    return {k: totals[k] / totals[f"__count_{k}"] for k in names if totals[f"__count_{k}"] > 0}


def check_resumable(state: dict[str, Any], run_info: dict[str, Any], config: TrainConfig, env: DistEnv,
                    source: str) -> None:
    """Refuse a checkpoint of another model / objective set, or one whose data order this run would change."""
    saved = state.get("run", {})
    for key in sorted(set(saved) | set(run_info)):
        if key in ("captions", "features", "command"):
            continue  # paths may legitimately move
        if saved.get(key) != run_info.get(key):
            raise ResumeError(
                f"--resume: {source} was written by a different run: {key} is {saved.get(key)!r} there but "
                f"{run_info.get(key)!r} here"
            )
    old = state.get("train_config", {})
    for key in DATA_ORDER_KEYS:
        if key in old and old[key] != getattr(config, key):
            raise ResumeError(
                f"--resume: {key} was {old[key]!r} in {source} but is {getattr(config, key)!r} now; "
                "resuming with it changed would not continue the same data order"
            )
    if state.get("world_size", 1) != env.world_size:
        raise ResumeError(
            f"--resume: {source} was written by {state.get('world_size')} processes, this run has {env.world_size}"
        )


# -------------------------------------------------------------------------------------- helpers ---
def _epoch_batches(dataset, collate_fn, sampler: StepSampler, epoch: int, offset: int,
                   config: TrainConfig) -> Iterator[Batch]:
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)  # seeds per-example masking; workers are created after this
    batches = sampler.micro_batches(epoch, offset)
    step_keys = getattr(dataset, "step_keys", None)
    if step_keys is not None:  # a task schedule (UNITER): each micro-batch's keys carry its step's task
        first, ga = epoch * sampler.steps_per_epoch + offset, config.grad_accum
        slot = _slot_keywords(step_keys, sampler.rank * ga, sampler.world_size * ga)
        batches = [step_keys(first + j // ga, b, **slot(j % ga)) for j, b in enumerate(batches)]
    loader = DataLoader(
        dataset,
        batch_sampler=batches,
        collate_fn=collate_fn,
        num_workers=config.num_workers,
        # A private generator: creating a loader must not draw from the global RNG (exact resume).
        generator=torch.Generator().manual_seed(config.seed * 1_000_003 + epoch),
    )
    return iter(loader)


def _slot_keywords(hook: Callable, first: int, parts: int) -> Callable[[int], dict[str, int]]:
    """``part`` / ``parts`` for a keys hook that takes them (a text-stream mixer draws each micro-batch's
    own text examples by its slot among the step's micro-batches); nothing for one that does not."""
    if "part" not in inspect.signature(hook).parameters:
        return lambda j: {}
    return lambda j: {"part": first + j, "parts": parts}


def _check_in_backward(env: DistEnv, amp_dtype: torch.dtype | None) -> None:
    """What TrainConfig cannot see: the process count and the precision ``auto`` resolves to."""
    if env.distributed:
        raise ValueError(
            f"optimizer_in_backward=true cannot run with {env.world_size} processes: DDP averages the gradients "
            "across processes after they are complete, the update in backward would use this process's own; "
            "run one process"
        )
    if amp_dtype == torch.float16:
        raise ValueError(
            "optimizer_in_backward=true cannot run with fp16 (precision=auto on this GPU): gradient scaling "
            "unscales and checks the gradients after backward; set precision=bf16 or fp32"
        )


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _amp_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("precision fp16 needs a GPU; use fp32 (or bf16) on CPU")
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if precision == "bf16" else torch.float16


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _mean_over_processes(values: dict[str, float], env: DistEnv) -> dict[str, float]:
    if not env.distributed:
        return values
    keys = sorted(values)
    t = all_reduce_mean(torch.tensor([values[k] for k in keys], dtype=torch.float64, device=env.device), env)
    return dict(zip(keys, t.tolist()))


def _sum_over_processes(values: dict[str, float], env: DistEnv) -> dict[str, float]:
    if not env.distributed:
        return values
    keys = sorted(values)
    t = all_reduce_mean(torch.tensor([values[k] for k in keys], dtype=torch.float64, device=env.device), env)
    return {k: v * env.world_size for k, v in zip(keys, t.tolist())}


def _progress(config: TrainConfig, env: DistEnv, start: int):
    if not (config.progress and env.is_main):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=config.max_steps, initial=start, desc="train", dynamic_ncols=True)


class _MetricLog:
    """metrics.jsonl (one JSON object per record, flushed as written) and TensorBoard when installed.
    On resume, records after the checkpoint's step are dropped: they will be written again."""

    def __init__(self, run_dir: Path, start_step: int) -> None:
        self.path = run_dir / "metrics.jsonl"
        if self.path.exists():
            kept = [line for line in self.path.read_text().splitlines() if _record_step(line) <= start_step]
            atomic_write_text(self.path, "".join(line + "\n" for line in kept))
        self.file = self.path.open("a")
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter  # needs the optional tensorboard package

            self.tb = SummaryWriter(str(run_dir / "tensorboard"))
        except ImportError:
            pass

    def write(self, record: dict[str, Any]) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, record["step"])

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()


def _record_step(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except (ValueError, AttributeError):
        return 1 << 62  # a torn last line from a killed run: drop it
