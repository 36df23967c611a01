"""Every row of the command-fault tables, and the training-run guarantees of issue 12: the run-directory
lock (3), DDP timeouts (8), Ctrl-C (9), --resume below the checkpoint (11), stale temp files (12)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from faults.commands import COMMAND_FAULTS
from faults.injection import REPO, assert_one_line_error, run_cli

from mmbert.cli import main
from mmbert.lock import LockedError, PathLock

ROWS = [(cmd, fault) for cmd, (_, table) in COMMAND_FAULTS.items() for fault in table]


def _read_only(monkeypatch, root: Path) -> None:
    """Writes under ``root`` fail with EROFS (a read-only mount; chmod does not stop root, who runs CI here)."""
    import mmbert.atomic as atomic

    real_mkstemp, real_mkdir, real_open = atomic.tempfile.mkstemp, Path.mkdir, os.open

    def refuse(path) -> None:
        if str(Path(path).resolve()).startswith(str(root.resolve())):
            raise OSError(errno.EROFS, "Read-only file system", str(path))

    def mkstemp(*a, dir=None, **kw):
        refuse(dir)
        return real_mkstemp(*a, dir=dir, **kw)

    def mkdir(self, *a, **kw):
        refuse(self)
        return real_mkdir(self, *a, **kw)

    def os_open(path, flags, *a, **kw):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            refuse(path)
        return real_open(path, flags, *a, **kw)

    monkeypatch.setattr(atomic.tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(Path, "mkdir", mkdir)
    monkeypatch.setattr(os, "open", os_open)


@pytest.mark.parametrize(("command", "fault"), ROWS, ids=[f"{c}-{f.name}" for c, f in ROWS])
def test_command_fault_table(command, fault, tmp_path, capsys, monkeypatch):
    setup, _ = COMMAND_FAULTS[command]
    argv = fault.damage(tmp_path, setup(tmp_path))
    if fault.subprocess:
        done = run_cli(argv, timeout=120, limit_file_bytes=fault.limit_file_bytes)
        assert done.returncode >= 0, f"killed by signal {-done.returncode}"
        rc, err = done.returncode, done.stderr
    else:
        if fault.read_only:
            _read_only(monkeypatch, tmp_path / fault.read_only)
        rc = main(argv)
        err = capsys.readouterr().err
    assert_one_line_error(rc, err, fault.expect)
    if "pwned" in fault.name:
        raise AssertionError("unreachable")


def test_the_malicious_pickle_runs_no_code(tmp_path, capfd):
    setup, table = COMMAND_FAULTS["convert"]
    fault = next(f for f in table if "malicious" in f.name)
    assert main(fault.damage(tmp_path, setup(tmp_path))) == 1
    assert "pwned" not in capfd.readouterr().out


def test_convert_may_rerun_into_its_own_output_and_force_overrides(tmp_path, capsys):
    setup, _ = COMMAND_FAULTS["convert"]
    argv = setup(tmp_path)
    assert main(argv) == 0
    assert main(argv) == 0  # the same conversion again: its own output of the same kind
    assert main([*argv[:-1], "mmbert"]) == 1  # an hf output is not overwritten by mmbert files
    assert "not empty" in capsys.readouterr().err
    assert main([*argv[:-1], "mmbert", "--force"]) == 0


# --- the run-directory lock ------------------------------------------------------------------------------
HOLD = "import sys, time; from mmbert.lock import PathLock; l = PathLock(sys.argv[1], 'run directory').acquire(); " \
       "print('HELD', flush=True); time.sleep(60)"  # fmt: skip


def _holder(path: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "HELD"
    return proc


def test_a_second_run_into_a_locked_directory_is_refused_naming_the_pid(tmp_path, capsys):
    """Item 3: the refusal comes before anything is written, and names the holder's pid."""
    out = tmp_path / "run"
    holder = _holder(out)
    try:
        argv = ["pretrain", "--model", "uniter_tiny", "--captions", "c.json", "--features", "f.h5", "--out", str(out)]
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert f"in use by process {holder.pid}" in err and "Traceback" not in err
        assert sorted(p.name for p in out.iterdir()) == [".lock"]
    finally:
        holder.kill()
        holder.wait()
    # the holder died without releasing: the lock is free, and the stale record is reported
    with pytest.warns(UserWarning, match=f"stale lock left by process {holder.pid}"):
        lock = PathLock(out, "run directory").acquire()
    assert lock.stale_holder["pid"] == holder.pid
    lock.release()
    with PathLock(out, "run directory"):  # released cleanly: no warning, re-entrant in one process
        with PathLock(out, "run directory"):
            pass


def test_a_reentered_run_directory_lock_is_freed_when_every_holder_releases(tmp_path):
    """Each PathLock object that re-entered holds one share, released through itself; the flock goes last."""
    import fcntl

    from mmbert.lock import _HELD

    def flocked(path) -> bool:
        fd = os.open(path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)

    outer, inner = PathLock(tmp_path, "run directory"), PathLock(tmp_path, "run directory")
    outer.acquire()
    inner.acquire()  # the command holds it, the trainer inside asks again
    inner.release()
    assert flocked(outer.file)  # the outer holder still has it
    inner.release()  # a second release of one share does nothing
    assert flocked(outer.file)
    outer.release()
    assert not flocked(outer.file) and not _HELD


def test_trainer_takes_the_lock_too(tmp_path):
    """A library user calling `train` directly gets the same protection."""
    from train.toy import run as toy_run

    holder = _holder(tmp_path / "run")
    try:
        with pytest.raises(LockedError, match=str(holder.pid)):
            toy_run(tmp_path / "run", max_steps=1)
    finally:
        holder.kill()
        holder.wait()


# --- training-run faults ---------------------------------------------------------------------------------
def test_resume_below_the_checkpoint_step_is_refused_and_stale_temps_go_on_a_fresh_start(tmp_path):
    """Items 11 and 12: `--resume` with max_steps below the checkpoint's step trains nothing: refused;
    a `.step-*.tmp` of a killed write is removed by a fresh start as well as by a resume."""
    from train.toy import run as toy_run

    from mmbert.train.loop import ResumeError

    toy_run(tmp_path / "a", max_steps=3, save_every=3)
    with pytest.raises(ResumeError, match="is at step 3, beyond max_steps=2"):
        toy_run(tmp_path / "a", max_steps=2, resume=True)
    stale = tmp_path / "b" / "checkpoints" / ".step-00000003.pt.x1y2.tmp"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half a checkpoint")
    toy_run(tmp_path / "b", max_steps=1, save_every=1)
    assert not stale.exists()


def test_ctrl_c_prints_one_line_exits_130_and_keeps_checkpoints(tmp_path, capsys, monkeypatch):
    """Item 9: KeyboardInterrupt mid-run (after a checkpoint) -> one line, exit 130, the checkpoint kept."""
    from commands.test_pretrain import pretrain

    import mmbert.train.checkpoint as ckpt

    real = ckpt.save_checkpoint

    def save_then_interrupt(*a, **kw):
        real(*a, **kw)
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt, "save_checkpoint", save_then_interrupt)
    root = tmp_path / "world"
    from mmbert.data.synthetic.generate import generate
    from mmbert.data.synthetic.scenes import WorldConfig

    generate(root, num_images=6, seed=0, config=WorldConfig(feat_dim=16, max_objects=3), render_images=False,
             nlvr2_pairs=0)  # fmt: skip
    out = tmp_path / "run"
    assert main(pretrain(root, out, "--max-steps", "4", "save_every=1")) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "interrupted" in err[0]
    assert [p.name for p in (out / "checkpoints").iterdir() if p.name.startswith("step-")] == ["step-00000001.pt"]
    assert not (out / ".lock").read_text()  # the lock was released


@pytest.mark.parametrize("device", ["cuda:7", "tpu", "cuda:x"])
def test_unknown_or_absent_devices_are_one_line_errors(device, capsys):
    import torch

    from mmbert.train.distributed import DeviceError, resolve_device

    if device == "cuda:7" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    with pytest.raises(DeviceError, match="device"):
        resolve_device(device)
    argv = ["evaluate", "--task", "vqa", "--checkpoint", "x", "--split", "val", "--data", "a=b", "--device", device]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and device in err


def test_a_stopped_rank_ends_the_job_within_the_timeout_naming_the_rank(tmp_path):
    """Item 8: rank 1 SIGSTOPs itself at step 2; rank 0 gives up after dist_timeout_minutes (here 3 s), not
    gloo's 30 minutes, saying which rank stopped. (The test then kills the stopped rank itself, as a user
    would: torchrun would otherwise wait its 30 s grace period for it.)"""
    toy = REPO / "tests" / "train" / "toy.py"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(toy),
           "--out", str(tmp_path / "run"), "--batch-size", "2", "--max-steps", "50", "--objectives", "nsp",
           "--stop-rank-at", "2", "--dist-timeout", "0.05"]  # fmt: skip
    start = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines, stopped_pid = [], None
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("STOPPING"):
                stopped_pid = int(line.split()[1])
            if "stopped responding" in line:
                break
            assert time.monotonic() - start < 120, "".join(lines)
        text = "".join(lines)
        assert "rank 1 stopped responding" in text, text
        assert time.monotonic() - start < 90
    finally:
        if stopped_pid:
            try:
                os.kill(stopped_pid, 9)
            except ProcessLookupError:
                pass
        proc.wait(timeout=60)
    assert proc.returncode != 0
