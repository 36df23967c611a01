"""Exact resume after SIGKILL, atomic checkpoints, NaN stop, DDP (torchrun, gloo) = one process."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mmbert.train import NonFiniteLossError, ResumeError, load_checkpoint, load_latest
from mmbert.train.checkpoint import list_checkpoints

sys.path.insert(0, str(Path(__file__).parent))
import toy  # noqa: E402
from toy import assert_bit_identical, last_state  # noqa: E402

TOY = Path(__file__).with_name("toy.py")
REPO = Path(__file__).resolve().parents[2]


def launch(*args: str, env_extra: dict | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.Popen([sys.executable, str(TOY), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env, text=True)  # fmt: skip


def finish(proc: subprocess.Popen, timeout: float = 120) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out}\n{err}"
    return out


def logged_step(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return 0
    lines = [line for line in path.read_text().splitlines() if line.endswith("}")]
    return int(lines[-1].split('"step": ')[1].split(",")[0]) if lines else 0


def test_sigkill_at_a_random_step_then_resume_is_bit_identical(tmp_path):
    steps = 14
    finish(launch("--out", str(tmp_path / "unbroken"), "--max-steps", str(steps)))
    kill_at = random.Random().randint(4, steps - 3)
    broken = tmp_path / "broken"
    proc = launch("--out", str(broken), "--max-steps", str(steps), "--delay", "0.004")
    deadline = time.time() + 120
    while logged_step(broken) < kill_at and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    assert proc.poll() is None, "the run finished before it could be killed; raise --delay"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_after = logged_step(broken)
    print(f"aimed at step {kill_at}, killed after step {killed_after}")  # shown if the test fails
    assert killed_after < steps
    finish(launch("--out", str(broken), "--max-steps", str(steps), "--resume"))
    assert_bit_identical(last_state(tmp_path / "unbroken"), last_state(broken))
    # the metrics log was rewound to the checkpoint and continued: one record per step
    lines = (broken / "metrics.jsonl").read_text().splitlines()
    logged = [int(line.split('"step": ')[1].split(",")[0]) for line in lines]
    assert logged == list(range(1, steps + 1))


def test_a_kill_during_a_checkpoint_write_leaves_the_previous_one_loadable(tmp_path):
    proc = launch("--out", str(tmp_path), "--max-steps", "12", "--save-every", "3", "--hang-on-save", "6")
    deadline = time.time() + 120
    line = ""
    while "HANGING" not in line and time.time() < deadline:
        line = proc.stdout.readline()
        assert line or proc.poll() is None, proc.stderr.read()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    folder = tmp_path / "checkpoints"
    partial = [p for p in folder.iterdir() if p.name.endswith(".tmp")]
    assert partial, "the interrupted write should have left its temporary file"
    assert [step for step, _ in list_checkpoints(tmp_path)] == [3]
    state, path = load_latest(tmp_path)
    assert state["step"] == 3 and path.name == "step-00000003.pt"
    # and the run resumes from it to the end, clearing the torn temporary file
    finish(launch("--out", str(tmp_path), "--max-steps", "12", "--save-every", "3", "--resume"))
    assert last_state(tmp_path)["step"] == 12
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    toy.run(tmp_path, max_steps=6, save_every=3)
    newest = tmp_path / "checkpoints" / "step-00000006.pt"
    newest.write_bytes(newest.read_bytes()[:1000])
    with pytest.warns(UserWarning, match="unreadable"):
        state, path = load_latest(tmp_path)
    assert state["step"] == 3


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    toy.patch_forward(monkeypatch, 5, toy.nan_loss)
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 5.*step-00000004\.pt"):
        toy.run(tmp_path, max_steps=12, save_every=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [2, 4]
    assert load_checkpoint(tmp_path / "checkpoints" / "step-00000004.pt")["step"] == 4


def test_resume_refuses_a_run_of_another_model_or_data_order(tmp_path):
    toy.run(tmp_path, max_steps=3, save_every=3)
    with pytest.raises(ResumeError, match="objectives"):
        toy.run(tmp_path, max_steps=6, resume=True, objectives=["nsp"])
    with pytest.raises(ResumeError, match="batch_size"):
        toy.run(tmp_path, max_steps=6, resume=True, batch_size=4)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        toy.run(tmp_path / "empty", max_steps=3, resume=True)


def test_gradient_accumulation_matches_the_large_batch():
    # NSP only (a per-example mean) and no dropout: 2 micro-batches of 4 == one batch of 8, to float precision.
    import tempfile

    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        toy.run(a, max_steps=4, batch_size=8, objectives=["nsp"], dropout=0.0, save_every=4)
        toy.run(b, max_steps=4, batch_size=4, grad_accum=2, objectives=["nsp"], dropout=0.0, save_every=4)
        sa, sb = last_state(Path(a)), last_state(Path(b))
        for k in sa["task"]:
            assert torch.allclose(sa["task"][k], sb["task"][k], atol=1e-6), k


def test_torchrun_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    # 2 processes x 2 accumulated micro-batches of 2 (no gradient sync on the first) == 1 process x 8
    common = ["--max-steps", "4", "--objectives", "nsp", "--dropout", "0", "--save-every", "4"]
    finish(launch("--out", str(tmp_path / "one"), "--batch-size", "8", *common))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(TOY), "--out", str(tmp_path / "two"), "--batch-size", "2", "--grad-accum", "2", *common]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    one, two = last_state(tmp_path / "one"), last_state(tmp_path / "two")
    assert two["world_size"] == 2 and len(two["rng"]) == 2
    for k in one["task"]:
        assert torch.allclose(one["task"][k], two["task"][k], atol=1e-6, rtol=0), k


def test_gradient_checkpointing_trains_to_the_same_weights(tmp_path):
    toy.run(tmp_path / "plain", max_steps=3, save_every=3)
    toy.run(tmp_path / "ckpt", max_steps=3, save_every=3, gradient_checkpointing=True)
    a, b = last_state(tmp_path / "plain"), last_state(tmp_path / "ckpt")
    for k in a["task"]:  # the same dropout masks replayed: equal up to float reassociation
        torch.testing.assert_close(b["task"][k], a["task"][k], rtol=1e-5, atol=1e-6, msg=k)
