"""The one harness every side-by-side benchmark uses (mmbert vs Hugging Face transformers).

What it guarantees, whichever script runs it:
  * parity is asserted before anything is timed: a side whose outputs differ from the other's by more
    than the stated tolerance stops the benchmark with an error (a broken model never prints a speed-up);
  * the sides alternate every round and swap who goes first each round (the machine is shared; a
    slow-down hits both), after one untimed warm-up call each; medians are reported;
  * peak memory is measured in a fresh process per side, which builds only that side's model;
  * the JSON says what each side computes (``computes``), next to the figures.
"""

from __future__ import annotations

import json
import math
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence

import torch

MMBERT, HF = "mmbert", "transformers"


class ParityError(AssertionError):
    """The two sides disagree: nothing is timed."""


def timed(fn: Callable[[], object]) -> float:
    """Seconds one call of ``fn()`` takes."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def alternate(calls: Mapping[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """Time every call ``rounds`` times, one round after the other: each round runs every side once,
    in reversed order every other round. One untimed warm-up call per side first."""
    names = list(calls)
    for name in names:
        calls[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(rounds):
        for name in names if i % 2 == 0 else reversed(names):
            times[name].append(timed(calls[name]))
    return times


def medians(times: Mapping[str, Sequence[float]]) -> dict[str, float]:
    return {name: statistics.median(t) for name, t in times.items()}


def speedup(times: Mapping[str, Sequence[float]]) -> float:
    """transformers' median / mmbert's median (> 1: mmbert is faster)."""
    m = medians(times)
    return m[HF] / m[MMBERT]


def assert_parity(checks: Mapping[str, tuple[float, float]]) -> dict[str, float]:
    """``{what: (max abs difference, tolerance)}`` -> the differences; raises ``ParityError`` when one
    is above its tolerance or not finite."""
    failed = {k: v for k, v in checks.items() if not (math.isfinite(v[0]) and v[0] <= v[1])}
    if failed:
        detail = ", ".join(f"{k}: {d:.3g} > {tol:.1g}" for k, (d, tol) in failed.items())
        raise ParityError(f"mmbert and transformers disagree ({detail}); not timing a broken model")
    return {k: v[0] for k, v in checks.items()}


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.shape != b.shape:
        raise ParityError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    return float((a.detach().float() - b.detach().float()).abs().max())


def peak_rss_mib() -> float:
    """This process's peak resident memory in MiB. VmHWM belongs to the address space exec created;
    getrusage's ru_maxrss does not: Linux carries a parent's peak over into the child it spawns."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_memory_mib() -> float:
    """The peak memory of this process's device: CUDA's allocator peak on a GPU, else the peak RSS."""
    if torch.cuda.is_available() and torch.cuda.max_memory_allocated() > 0:
        return torch.cuda.max_memory_allocated() / 2**20
    return peak_rss_mib()


def run_worker(script: str, args: Sequence[str]) -> dict:
    """Run ``script`` with ``args`` in a fresh interpreter; its last stdout line is one JSON object."""
    proc = subprocess.run([sys.executable, script, *args], capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"memory worker {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def environment(threads: int, device: str, dtype: str) -> dict:
    import transformers

    return {
        "device": device,
        "dtype": dtype,
        "threads": threads,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def autocast(device: str, dtype: str):
    """bf16 autocast when asked (the GPU script's second pass), else a no-op context."""
    if dtype == "bf16":
        return torch.autocast(device_type=device, dtype=torch.bfloat16)
    return torch.autocast(device_type=device, enabled=False)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def print_rows(rows: Sequence[tuple[str, float, float, str]]) -> None:
    """A table of (what, mmbert, transformers, ratio text), printed before the JSON line."""
    print(f"{'':<34}{MMBERT:>12}{HF:>14}{'ratio':>9}")
    for what, ours, ref, ratio in rows:
        print(f"{what:<34}{ours:>12.3f}{ref:>14.3f}{ratio:>9}")


# ---------------------------------------------------------------------------------------------------
# the pre-training step comparison every model script runs


class SavedActivations:
    """Bytes of activations the autograd graph keeps for the backward pass (each storage counted once;
    the model's own parameters, which linear layers also save, not counted), in total and per layer:
    ``layers`` are modules whose forward is attributed its own new saved tensors."""

    def __init__(self, layers: Sequence[torch.nn.Module], model: torch.nn.Module) -> None:
        self.layers = list(layers)
        self.seen: set[int] = {p.untyped_storage().data_ptr() for p in model.parameters()}
        self.total = 0
        self.per_layer: list[int] = []

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in self.seen:
            self.seen.add(storage.data_ptr())
            self.total += storage.nbytes()
        return t

    def run(self, fn: Callable[[], torch.Tensor]) -> torch.Tensor:
        starts: list[int] = []
        hooks = [
            *(m.register_forward_pre_hook(lambda *_: starts.append(self.total)) for m in self.layers),
            *(
                m.register_forward_hook(lambda *_: self.per_layer.append(self.total - starts.pop()))
                for m in self.layers
            ),
        ]
        try:
            with torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t):
                return fn()
        finally:
            for h in hooks:
                h.remove()

    def summary(self) -> dict[str, float]:
        return {
            "total_mib": self.total / 2**20,
            "per_layer_mib_median": statistics.median(self.per_layer) / 2**20 if self.per_layer else 0.0,
        }


def add_common_args(p, repeats: int) -> None:
    p.add_argument("--repeats", type=int, default=repeats, help="timed rounds per side (alternating)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="bf16 = autocast")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory workers")
    p.add_argument("--memory-only", action="store_true", help="only the peak-memory workers (no timing)")
    p.add_argument("--worker", choices=[MMBERT, HF], help="internal: one side's memory measurement")
    p.add_argument("--checkpointing", action="store_true", help="internal: the worker's mmbert side checkpoints")


def train_step(loss_fn: Callable[[], torch.Tensor], opt: torch.optim.Optimizer, device: str, dtype: str) -> float:
    """forward + loss (under autocast when asked), backward, optimizer step, gradients released."""
    with autocast(device, dtype):
        loss = loss_fn()
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    sync(device)
    return float(loss.detach())


def memory_worker(args, build_side: Callable[[str], tuple[torch.nn.Module, Callable[[], torch.Tensor]]]) -> None:
    """Build one side alone, run two steps, print its peak memory and what the second step added on
    top of the weights, gradients-free optimizer state and everything else alive before it."""
    from mmbert.train.optim import build_optimizer

    model, loss_fn = build_side(args.worker)
    opt = build_optimizer(model, lr=1e-5)
    train_step(loss_fn, opt, args.device, args.dtype)
    before = current_memory_mib(args.device)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    train_step(loss_fn, opt, args.device, args.dtype)
    peak = peak_memory_mib()
    print(json.dumps({"peak_mib": peak, "step_added_mib": peak - before}))


def current_memory_mib(device: str) -> float:
    if device == "cuda":
        return torch.cuda.memory_allocated() / 2**20
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def worker_args(args, names: Sequence[str]) -> list[str]:
    """The shape arguments ``names`` of this run, as command-line flags for a memory worker."""
    out = []
    for name in names:
        out += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    return out + ["--threads", str(args.threads), "--device", args.device, "--dtype", args.dtype]


def worker_shape(args, names: Sequence[str]) -> dict:
    return {name: getattr(args, name) for name in names} | {"device": args.device, "dtype": args.dtype}


def measure_memory(script: str, args, shape_names: Sequence[str], checkpointing: bool) -> dict:
    """Each side's step memory in its own process (glibc returns freed blocks at once there, so the
    resident peak is the live peak); plus mmbert with gradient checkpointing when asked."""
    import os

    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", "65536")
    base = worker_args(args, shape_names)
    mem = {side: run_worker(script, [*base, "--worker", side]) for side in (MMBERT, HF)}
    result = {
        "step_peak_mib": {k: v["peak_mib"] for k, v in mem.items()},
        "step_added_mib": {k: v["step_added_mib"] for k, v in mem.items()},
        "step_memory_ratio": mem[MMBERT]["peak_mib"] / mem[HF]["peak_mib"],
        "memory_measure": "CUDA allocator peak" if args.device == "cuda" else "peak RSS (VmHWM), own process",
    }
    if checkpointing:
        ckpt = run_worker(script, [*base, "--worker", MMBERT, "--checkpointing"])
        result["checkpointing"] = {
            "step_peak_mib": ckpt["peak_mib"],
            "step_added_mib": ckpt["step_added_mib"],
            "peak_vs_without": ckpt["peak_mib"] / mem[MMBERT]["peak_mib"],
            "step_added_vs_without": ckpt["step_added_mib"] / mem[MMBERT]["step_added_mib"],
        }
    return result


def pretraining_rows(result: dict) -> list[tuple[str, float, float, str]]:
    step = result["step_s_median"]
    rows = [("pre-training step (s)", step[MMBERT], step[HF], f"{result['step_speedup']:.2f}x")]
    if "step_peak_mib" in result:
        peak = result["step_peak_mib"]
        rows.append(("step peak memory (MiB)", peak[MMBERT], peak[HF], f"{result['step_memory_ratio']:.2f}"))
    saved = result["saved_for_backward"]
    rows.append(
        (
            "saved activations / layer (MiB)",
            saved[MMBERT]["per_layer_mib_median"],
            saved[HF]["per_layer_mib_median"],
            f"{saved[MMBERT]['per_layer_mib_median'] / saved[HF]['per_layer_mib_median']:.2f}",
        )
    )
    return rows
