"""What every side-by-side benchmark script shares: timing one call, a process's own peak memory, and
the table printed before the JSON line."""

from __future__ import annotations

import resource
import time


def timed(fn, *args) -> float:
    """Seconds one call of ``fn(*args)`` takes."""
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def peak_rss_mib() -> float:
    """This process's peak resident memory in MiB. VmHWM belongs to the address space exec created;
    getrusage's ru_maxrss does not: Linux carries a parent's peak over into the child it spawns."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def print_table(result: dict, mem_ours: float, mem_ref: float) -> None:
    """mmbert vs transformers: step and inference medians, step peak memory, with the ratios."""
    step, infer = result["step_s_median"], result["inference_s_median"]
    print(f"{'':<26}{'mmbert':>12}{'transformers':>14}{'ratio':>8}")
    print(
        f"{'pre-training step (s)':<26}{step['mmbert']:>12.3f}{step['hf']:>14.3f}{result['step_speedup']:>7.2f}x"
    )
    print(
        f"{'inference (s)':<26}{infer['mmbert']:>12.3f}{infer['hf']:>14.3f}{result['inference_speedup']:>7.2f}x"
    )
    print(f"{'step peak RSS (MiB)':<26}{mem_ours:>12.0f}{mem_ref:>14.0f}{mem_ours / mem_ref:>7.2f}")
