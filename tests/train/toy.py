"""A tiny BERT pre-training run on an in-memory corpus, as a library function and as a script (the
trainer tests run it in subprocesses: SIGKILL + resume, torchrun with 2 processes).

    python tests/train/toy.py --out DIR --max-steps 12 [--resume] [--batch-size 8] [--objectives nsp]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import Dataset

from mmbert.data.batch import Batch
from mmbert.data.masking import example_generator, mask_tokens
from mmbert.models import PretrainingModel, build_model
from mmbert.objectives import Pretraining
from mmbert.objectives.base import LossOutput
from mmbert.train import TrainConfig, load_latest, train

VOCAB, MASK, CLS, SEP = 100, 4, 2, 3


class ToyPairs(Dataset):
    """Sentence pairs over a 100-token vocabulary: label 1 when the second half repeats the first
    (shifted by one), else random. Masked per example from (seed, epoch, index)."""

    def __init__(self, n: int = 64, length: int = 6, seed: int = 0, delay: float = 0.0,
                 stop_after: int = 0) -> None:  # fmt: skip
        g = torch.Generator().manual_seed(1234)
        self.a = torch.randint(10, VOCAB - 1, (n, length), generator=g)
        self.labels = torch.randint(0, 2, (n,), generator=g)
        self.b = torch.where(self.labels[:, None] == 1, self.a + 1, torch.randint(10, VOCAB, (n, length), generator=g))
        self.seed, self.epoch, self.delay = seed, 0, delay
        self.stop_after, self.served = stop_after, 0  # > 0: SIGSTOP this process after serving that many

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        if self.delay:
            time.sleep(self.delay)
        self.served += 1
        if self.stop_after and self.served > self.stop_after:
            import signal

            print(f"STOPPING {os.getpid()}", flush=True)
            os.kill(os.getpid(), signal.SIGSTOP)  # a frozen rank: alive, holding its sockets, silent
        ids = torch.cat([torch.tensor([CLS]), self.a[i], torch.tensor([SEP]), self.b[i], torch.tensor([SEP])])
        segments = torch.cat([torch.zeros(self.a.shape[1] + 2), torch.ones(self.b.shape[1] + 1)]).long()
        maskable = (ids != CLS) & (ids != SEP)
        ids, labels = mask_tokens(ids, maskable, MASK, VOCAB, example_generator(self.seed, self.epoch, i))
        return {"ids": ids, "segments": segments, "mlm": labels, "label": int(self.labels[i])}


def collate(items: list[dict]) -> Batch:
    ids = torch.stack([x["ids"] for x in items])
    return Batch(
        text_ids=ids,
        text_mask=torch.ones_like(ids, dtype=torch.bool),
        segment_ids=torch.stack([x["segments"] for x in items]),
        mlm_labels=torch.stack([x["mlm"] for x in items]),
        pair_labels=torch.tensor([x["label"] for x in items]),
    )


def make_task(objectives: list[str] | None = None, dropout: float = 0.1) -> Pretraining:
    """bert_tiny pre-training (MLM + NSP unless ``objectives``), initialised from seed 0."""
    torch.manual_seed(0)
    return Pretraining(PretrainingModel(build_model("bert_tiny", dropout=dropout, attn_dropout=dropout)), objectives)


def run(out: str | Path, max_steps: int = 12, resume: bool = False, batch_size: int = 8, grad_accum: int = 1,
        objectives: list[str] | None = None, save_every: int = 3, dropout: float = 0.1, delay: float = 0.0,
        lr: float = 1e-3, precision: str = "fp32", stop_rank_at: int = 0, dist_timeout: float = 5.0,
        gradient_checkpointing: bool = False, optimizer_in_backward: bool = False,
        max_grad_norm: float = 1.0):  # fmt: skip
    task = make_task(objectives, dropout)
    config = TrainConfig(
        max_steps=max_steps, batch_size=batch_size, grad_accum=grad_accum, lr=lr, warmup_steps=2,
        save_every=save_every, log_every=1, progress=False, keep_last=2, seed=0, device="cpu", precision=precision,
        dist_timeout_minutes=dist_timeout, gradient_checkpointing=gradient_checkpointing,
        optimizer_in_backward=optimizer_in_backward, max_grad_norm=max_grad_norm,
    )  # fmt: skip
    info = {"model": "bert_tiny", "objectives": list(task.objective_names)}
    stop_after = stop_rank_at * batch_size * grad_accum if os.environ.get("RANK") == "1" else 0
    data = ToyPairs(delay=delay, stop_after=stop_after)
    return train(task, data, collate, config, out, resume=resume, run_info=info)


def patch_forward(patch, at_call: int, effect: Callable[[LossOutput], LossOutput]) -> None:
    """Through ``patch`` (pytest's monkeypatch), pass the ``at_call``-th output of Pretraining.forward
    through ``effect``: a NaN loss, or a crash standing for a killed run."""
    calls = {"n": 0}
    real = Pretraining.forward

    def patched(self, batch):
        calls["n"] += 1
        out = real(self, batch)
        return effect(out) if calls["n"] == at_call else out

    patch.setattr(Pretraining, "forward", patched)


def nan_loss(out: LossOutput) -> LossOutput:
    return LossOutput(out.loss * float("nan"), {**out.metrics, "loss": float("nan")})


def last_state(run_dir: str | Path) -> dict:
    """The newest checkpoint of a run directory (the tests compare runs by it)."""
    loaded = load_latest(run_dir)
    assert loaded is not None, f"no checkpoint in {run_dir}"
    return loaded[0]


def assert_bit_identical(a: dict, b: dict) -> None:
    """Two checkpoints at the same step with equal weights and AdamW moments, bit for bit."""
    assert a["step"] == b["step"]
    assert a["task"].keys() == b["task"].keys()
    for k in a["task"]:
        assert torch.equal(a["task"][k], b["task"][k]), k
    for pa, pb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(pa["exp_avg"], pb["exp_avg"]) and torch.equal(pa["exp_avg_sq"], pb["exp_avg_sq"])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--max-steps", type=int, default=12)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--objectives", nargs="*")
    p.add_argument("--save-every", type=int, default=3)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--delay", type=float, default=0.0)
    p.add_argument("--stop-rank-at", type=int, default=0, help="rank 1 SIGSTOPs itself at this step")
    p.add_argument("--dist-timeout", type=float, default=5.0, help="minutes a collective may wait")
    p.add_argument("--hang-on-save", type=int, default=0, help="freeze half-way through writing this step's checkpoint")
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.hang_on_save:
        real_save = torch.save

        def half_then_hang(obj, f, *a, **kw):
            real_save(obj, f, *a, **kw)
            name = getattr(f, "name", str(f))
            if f"step-{args.hang_on_save:08d}" in str(name):
                f.flush()
                f.truncate(f.tell() // 2)  # half a file on disk, then the process is killed
                f.flush()
                print("HANGING", flush=True)
                time.sleep(120)

        torch.save = half_then_hang
    run(args.out, args.max_steps, args.resume, args.batch_size, args.grad_accum, args.objectives or None,
        args.save_every, args.dropout, args.delay, stop_rank_at=args.stop_rank_at,
        dist_timeout=args.dist_timeout)  # fmt: skip
    if torch.distributed.is_initialized():
        torch.distributed.barrier()  # as train.distributed.cleanup: no rank tears gloo down under another
        torch.distributed.destroy_process_group()
    if int(os.environ.get("RANK", "0")) == 0:
        print("DONE", flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
