"""The one harness every side-by-side benchmark uses (mmbert vs Hugging Face transformers).

What it guarantees, whichever script runs it:
  * parity is asserted before anything is timed: a side whose outputs differ from the other's by more
    than the stated tolerance stops the benchmark with an error (a broken model never prints a speed-up);
  * the sides alternate every round and swap who goes first each round (the machine is shared; a
    slow-down hits both), after one untimed warm-up call each; medians are reported;
  * peak memory is measured in a fresh process per side, which builds only that side's model (the mmbert
    worker never imports transformers: its ~145 MiB would otherwise count against mmbert);
  * the JSON says what each side computes (``computes``) and how many floating-point operations each
    side's step takes (``flops``, counted by ``torch.utils.flop_counter``): both sides run their matmuls
    at about the machine's peak, so the FLOP ratio is the speed-up that doing less arithmetic explains.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

import mmbert
from mmbert.data.batch import Batch
from mmbert.nn import set_gradient_checkpointing
from mmbert.objectives import Pretraining

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


def hf_model_class(name: str) -> type:
    """transformers' class ``name``, imported only when a side needs it (never in mmbert's worker)."""
    import transformers

    return getattr(transformers, name)


def count_flops(fn: Callable[[], object]) -> float:
    """Floating-point operations (matmuls, attention kernels) of one ``fn()`` call, in GFLOP."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 1e9


def flops_record(ours: float, ref: float) -> dict:
    """The JSON's ``flops``: each side's GFLOP and transformers' / mmbert's (the arithmetic's share of
    the speed-up: above it, mmbert's other passes are cheaper too; below it, they cost more)."""
    return {"gflop": {MMBERT: ours, HF: ref}, "ratio": ref / ours, "counted_by": "torch.utils.flop_counter"}


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
    p.add_argument(
        "--in-backward", action="store_true", help="internal: the worker's mmbert side steps AdamW in backward"
    )


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
    top of the weights, gradients-free optimizer state and everything else alive before it. With
    ``--in-backward`` mmbert's side uses the trainer's ``optimizer_in_backward`` set-up (each parameter
    updated as soon as its gradient is complete, the gradient freed at once; no global clipping)."""
    from mmbert.train.optim import build_optimizer

    model, loss_fn = build_side(args.worker)
    if args.worker == MMBERT and "transformers" in sys.modules:
        raise RuntimeError("the mmbert memory worker imported transformers; its memory would count against mmbert")
    opt = build_optimizer(model, lr=1e-5, in_backward=args.in_backward)
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
    resident peak is the live peak); plus mmbert with gradient checkpointing when asked, and mmbert with
    the optimizer stepped in backward. ``state_mib`` (peak minus what the step added: weights, optimizer
    state, the process) is the floor no saving in the step can go below."""
    import os

    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", "65536")
    base = worker_args(args, shape_names)
    mem = {side: run_worker(script, [*base, "--worker", side]) for side in (MMBERT, HF)}
    result = {
        "step_peak_mib": {k: v["peak_mib"] for k, v in mem.items()},
        "step_added_mib": {k: v["step_added_mib"] for k, v in mem.items()},
        "step_memory_ratio": mem[MMBERT]["peak_mib"] / mem[HF]["peak_mib"],
        "state_mib": {k: v["peak_mib"] - v["step_added_mib"] for k, v in mem.items()},
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
        in_bwd = run_worker(script, [*base, "--worker", MMBERT, "--in-backward"])
        result["optimizer_in_backward"] = {
            "what": "mmbert: build_optimizer(in_backward=True), TrainConfig optimizer_in_backward (no clipping)",
            "step_peak_mib": in_bwd["peak_mib"],
            "step_added_mib": in_bwd["step_added_mib"],
            "step_memory_ratio": in_bwd["peak_mib"] / mem[HF]["peak_mib"],
        }
    return result


def step_flops(model: torch.nn.Module, loss_fn: Callable[[], torch.Tensor], args) -> float:
    """GFLOP of one forward + backward (the optimizer's elementwise update is not counted); the
    gradients are dropped afterwards."""
    def forward_backward() -> None:
        with autocast(args.device, args.dtype):
            loss = loss_fn()
        loss.backward()

    gflop = count_flops(forward_backward)
    model.zero_grad(set_to_none=True)
    return gflop


def pretraining_rows(result: dict) -> list[tuple[str, float, float, str]]:
    step, flops = result["step_s_median"], result["flops"]
    rows = [
        ("pre-training step (s)", step[MMBERT], step[HF], f"{result['step_speedup']:.2f}x"),
        ("forward + backward (GFLOP)", flops["gflop"][MMBERT], flops["gflop"][HF], f"{flops['ratio']:.2f}x"),
    ]
    if "step_peak_mib" in result:
        peak = result["step_peak_mib"]
        rows.append(("step peak memory (MiB)", peak[MMBERT], peak[HF], f"{result['step_memory_ratio']:.2f}"))
        state = result["state_mib"]
        rows.append(("  before the step (weights, optimizer)", state[MMBERT], state[HF], ""))
        if "optimizer_in_backward" in result:
            ib = result["optimizer_in_backward"]
            ratio = f"{ib['step_memory_ratio']:.2f}"
            rows.append(("  peak, optimizer in backward", ib["step_peak_mib"], peak[HF], ratio))
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


# ---------------------------------------------------------------------------------------------------
# one model's pre-training step, mmbert vs transformers: each script states what differs, this runs it


@dataclass(frozen=True)
class PretrainingSpec:
    """What a pre-training step comparison needs from its script; ``pretraining_main`` does the rest
    (the same harness for BERT, VisualBERT and LXMERT: memory workers, parity, saved activations,
    alternating timing, the table and the JSON)."""

    preset: str  # the default preset; --preset offers every preset of its family ("<family>_<size>")
    sizes: dict[str, int]  # --batch / --seq (/ --regions) and their defaults
    hf_class_name: str  # transformers' *ForPreTraining (mmbert's converter for it: by its model_type)
    make_batch: Callable[[Any, argparse.Namespace, torch.Generator], Batch]  # (mmbert config, args, g) -> batch
    hf_loss: Callable[[Any, Batch], torch.Tensor]  # the reference's public training call
    hf_text: Callable[[Any, Mapping[str, Any]], torch.Tensor]  # reference text states (B, T, D), mmbert inputs
    layers: Callable[[Any], Sequence[torch.nn.Module]]  # mmbert's Transformer layers (saved activations)
    hf_layers: Callable[[Any], Sequence[torch.nn.Module]]  # the reference's
    parity_name: str  # the JSON's name of the text-state comparison
    computes: dict
    objective: dict = field(default_factory=dict)  # ``Pretraining`` options
    hf_settings: dict = field(default_factory=dict)  # set on transformers' config after conversion
    add_args: Callable[[argparse.ArgumentParser], None] | None = None  # script-only flags
    extra: Callable[[argparse.Namespace], dict] | None = None  # more JSON fields after the comparison

    @property
    def hf_class(self) -> type:
        return hf_model_class(self.hf_class_name)

    @property
    def benchmark(self) -> str:
        """The JSON's "benchmark": ``<family>_pretraining_step``."""
        return f"{self.preset.rsplit('_', 1)[0]}_pretraining_step"

    def hf_config(self, preset: str):
        """transformers' config for an mmbert preset, through mmbert's own converter for that model type."""
        from mmbert.convert.load import HF_CONVERTERS

        config_class = self.hf_class.config_class
        fields = HF_CONVERTERS[config_class.model_type].to_hf_config(mmbert.MODELS[preset](), True)
        cfg = config_class(**{k: v for k, v in fields.items() if k not in ("architectures", "model_type")})
        for key, value in self.hf_settings.items():
            setattr(cfg, key, value)
        return cfg


# what every pre-training step script's mmbert side does alike, and the optimizer both sides share
MMBERT_STEP = {
    "scored_positions": "MLM transform + vocabulary projection only at the labelled tokens (mlm_positions); "
    "the last layer's queries, output projection and FFN only at the rows a loss reads (scored rows)",
    "padding": "padded text tokens skipped in every projection and FFN (masked as keys)",
    "attention": "training: mmbert.nn.attention.dropout_attention (boolean dropout mask); eval: SDPA",
    "memory": "boolean dropout masks, GELU recomputed in backward, the tied word matrix's lookup rows added "
    "into the decoder's (V, D) gradient in place (mmbert.nn.tied)",
    "optimizer": "mmbert.train.optim.build_optimizer: AdamW fused, wd 0.01 (not biases/LayerNorm)",
}
HF_STEP = {
    "padding": "every padded position computed (additive key mask)",
    "optimizer": "the same build_optimizer (fused AdamW, same groups)",
}


def computes(ours: dict[str, str], ref: dict[str, str]) -> dict:
    """The JSON's ``computes``: what each side computes (the entries given over the shared ones)."""
    def over(given: dict[str, str], shared: dict[str, str]) -> dict[str, str]:
        return {**given, **{k: v for k, v in shared.items() if k not in given}}

    return {MMBERT: over(ours, MMBERT_STEP), HF: over(ref, HF_STEP)}


def hf_text_inputs(x: Mapping[str, Any]) -> dict:
    """mmbert's text inputs under the names of transformers' BERT family."""
    return {"input_ids": x["text_ids"], "attention_mask": x["text_mask"].long(), "token_type_ids": x["segment_ids"]}


def padded_captions(config, batch: int, seq: int, g: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Caption-like text: 7..``seq`` real tokens (the first row the longest), padded with 0, 15 % MLM
    targets at real tokens (position 1 always): (ids, mask, mlm_labels)."""
    ids = torch.randint(1000 if config.vocab_size > 2000 else 5, config.vocab_size, (batch, seq), generator=g)
    lengths = torch.randint(min(7, seq), seq + 1, (batch,), generator=g)
    lengths[0] = seq
    mask = torch.arange(seq)[None] < lengths[:, None]
    ids[~mask] = 0
    selected = (torch.rand(batch, seq, generator=g) < 0.15) & mask
    selected[:, 1] = True
    return ids, mask, torch.where(selected, ids, torch.full_like(ids, -100))


def make_batch(spec: PretrainingSpec, config, args, seed: int = 1) -> Batch:
    """The script's batch, drawn from a generator seeded alike for both sides and every process."""
    return spec.make_batch(config, args, torch.Generator().manual_seed(seed)).to(args.device)


def build_side(spec: PretrainingSpec, args, side: str, weights_dir: str | None = None):
    """(model, zero-argument loss function) for one side; weights from ``weights_dir`` or random."""
    batch = make_batch(spec, mmbert.MODELS[args.preset](), args)
    torch.manual_seed(0)
    if side == MMBERT:
        model = (
            mmbert.load_pretraining(weights_dir)
            if weights_dir
            else mmbert.PretrainingModel(mmbert.build_model(args.preset))
        )
        if args.checkpointing:
            set_gradient_checkpointing(model)
        objective = Pretraining(model.to(args.device).train(), **spec.objective)
        return model, lambda: objective(batch).loss
    ref = (
        spec.hf_class.from_pretrained(weights_dir) if weights_dir else spec.hf_class(spec.hf_config(args.preset))
    )
    ref.to(args.device).train()
    return ref, lambda: spec.hf_loss(ref, batch)


def shape_fields(args, b: Batch) -> dict:
    """The batch's shape in the JSON: full-length text (``seq``), or padded captions with regions."""
    if "regions" not in vars(args):
        return {"batch": args.batch, "seq": args.seq}
    return {
        "batch": args.batch,
        "text_tokens_max": args.seq,
        "text_tokens_real_fraction": float(b.text_mask.float().mean()),
        "regions": args.regions,
    }


def compare_pretraining(spec: PretrainingSpec, args, memory: dict | None) -> dict:
    """Same weights on both sides (transformers saves, ``mmbert.load_pretraining`` loads), parity
    asserted in eval mode, saved activations and FLOPs in training mode, then the alternating timed steps."""
    from mmbert.train.optim import build_optimizer

    with tempfile.TemporaryDirectory() as d:
        torch.manual_seed(0)
        spec.hf_class(spec.hf_config(args.preset)).save_pretrained(d)
        ours, ours_loss = build_side(spec, args, MMBERT, d)
        ref, ref_loss = build_side(spec, args, HF, d)
    b = make_batch(spec, ours.config, args)

    ours.eval()
    ref.eval()
    with torch.no_grad():
        text = ours.encoder(**b.model_inputs()).text
        text_ref = spec.hf_text(ref, b.model_inputs())
        real = b.text_mask  # mmbert leaves zeros at padded tokens; their values are meaningless either way
        parity = assert_parity(
            {
                spec.parity_name: (max_abs_diff(text[real], text_ref[real]), 1e-4),
                "loss_abs_diff": (abs(float(ours_loss()) - float(ref_loss())), 1e-4),
            }
        )
    saved, gflop = {}, {}
    for side, model, loss_fn, layers in (
        (MMBERT, ours, ours_loss, spec.layers(ours)),
        (HF, ref, ref_loss, spec.hf_layers(ref)),
    ):
        model.train()
        meter = SavedActivations(layers, model)
        meter.run(loss_fn)
        saved[side] = meter.summary()
        gflop[side] = step_flops(model, loss_fn, args)

    opt_o, opt_r = build_optimizer(ours, lr=1e-5), build_optimizer(ref, lr=1e-5)
    times = alternate(
        {
            MMBERT: lambda: train_step(ours_loss, opt_o, args.device, args.dtype),
            HF: lambda: train_step(ref_loss, opt_r, args.device, args.dtype),
        },
        args.repeats,
    )
    return {
        "benchmark": spec.benchmark,
        "preset": args.preset,
        **shape_fields(args, b),
        **environment(args.threads, args.device, args.dtype),
        "repeats": args.repeats,
        "parity": parity,
        "computes": spec.computes,
        "step_s": times,
        "step_s_median": medians(times),
        "step_speedup": speedup(times),
        "saved_for_backward": saved,
        "flops": flops_record(gflop[MMBERT], gflop[HF]),
        **(memory or {}),
        **(spec.extra(args) if spec.extra else {}),
    }


def pretraining_main(spec: PretrainingSpec, script: str, description: str) -> None:
    """The command line of a pre-training step script: the comparison, or one side's memory worker."""
    p = argparse.ArgumentParser(description=description)
    family = spec.preset.rsplit("_", 1)[0]
    p.add_argument("--preset", default=spec.preset, choices=[m for m in mmbert.MODELS if m.startswith(family + "_")])
    for name, default in spec.sizes.items():
        p.add_argument(f"--{name}", type=int, default=default)
    if spec.add_args:
        spec.add_args(p)
    add_common_args(p, repeats=5)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.worker:
        memory_worker(args, lambda side: build_side(spec, args, side))
        return
    shape_args = ("preset", *spec.sizes)
    memory = None if args.no_memory else measure_memory(script, args, shape_args, checkpointing=True)
    if args.memory_only:
        print(json.dumps({"benchmark": "pretraining_step_memory", **worker_shape(args, shape_args), **memory}))
        return
    result = compare_pretraining(spec, args, memory)
    print_rows(pretraining_rows(result))
    print(json.dumps(result))
