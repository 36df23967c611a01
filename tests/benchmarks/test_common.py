"""The benchmark harness (benchmarks/common.py): a broken model stops the comparison before anything is
timed, the JSON says what each side computes and counts, and mmbert's memory worker never carries
transformers' import. Tiny presets, one timed round: nothing here checks a speed."""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import bench_models  # noqa: E402
import common  # noqa: E402


def tiny_args(**over) -> argparse.Namespace:
    return argparse.Namespace(
        preset="bert_tiny", batch=2, seq=16, device="cpu", dtype="fp32", threads=1, repeats=1,
        checkpointing=False, **over,
    )  # fmt: skip


def test_assert_parity_refuses_a_difference_above_tolerance_or_not_finite():
    assert common.assert_parity({"a": (1e-6, 1e-4)}) == {"a": 1e-6}
    with pytest.raises(common.ParityError, match="a: 0.001 > 0.0001"):
        common.assert_parity({"a": (1e-3, 1e-4)})
    with pytest.raises(common.ParityError, match="nan"):
        common.assert_parity({"a": (math.nan, 1e-4)})


def test_comparison_reports_parity_flops_and_what_each_side_computes(one_thread):
    result = common.compare_pretraining(bench_models.SPEC, tiny_args(), memory=None)
    assert result["parity"]["hidden_max_abs_diff"] < 1e-5
    flops = result["flops"]["gflop"]
    # mmbert scores only the labelled tokens against the vocabulary: strictly less arithmetic than the
    # reference's logits at every position, and the ratio is what the JSON says it is
    assert 0 < flops[common.MMBERT] < flops[common.HF]
    assert result["flops"]["ratio"] == pytest.approx(flops[common.HF] / flops[common.MMBERT])
    assert set(result["computes"]) == {common.MMBERT, common.HF}
    assert "optimizer" in result["computes"][common.MMBERT] and "padding" in result["computes"][common.HF]
    assert len(result["step_s"][common.MMBERT]) == len(result["step_s"][common.HF]) == 1


def test_a_broken_model_fails_the_benchmark_instead_of_timing_it(one_thread, monkeypatch):
    build = common.build_side

    def broken(spec, args, side, weights_dir=None):
        model, loss_fn = build(spec, args, side, weights_dir)
        if side == common.MMBERT:
            with torch.no_grad():  # one output unit of one layer off by a little: a real defect's size
                model.encoder.layers[-1].attn.out.bias[0] += 1e-2
        return model, loss_fn

    monkeypatch.setattr(common, "build_side", broken)
    timed = []
    monkeypatch.setattr(common, "alternate", lambda *a, **k: timed.append(1))
    with pytest.raises(common.ParityError, match="disagree"):
        common.compare_pretraining(bench_models.SPEC, tiny_args(), memory=None)
    assert not timed


def test_alternate_swaps_who_goes_first_every_round():
    order: list[str] = []
    common.alternate({"x": lambda: order.append("x"), "y": lambda: order.append("y")}, rounds=3)
    assert order == ["x", "y", "x", "y", "y", "x", "x", "y"]  # warm-up, then x y / y x / x y


@pytest.mark.parametrize("mode", [[], ["--in-backward"], ["--checkpointing"]])
def test_mmbert_memory_worker_runs_without_importing_transformers(tmp_path, mode):
    """The worker process is the benchmark's own: its JSON line comes back, and the check that
    transformers stayed out is the worker's (it raises when the import happened)."""
    out = subprocess.run(
        [sys.executable, str(BENCHMARKS / "bench_models.py"), "--preset", "bert_tiny", "--batch", "2",
         "--seq", "16", "--threads", "1", "--worker", common.MMBERT, *mode],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert common.json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"] > 0


def test_mmbert_memory_worker_refuses_to_measure_with_transformers_imported(monkeypatch):
    import transformers  # noqa: F401  (the reason for the refusal)

    args = tiny_args(worker=common.MMBERT, in_backward=False)
    with pytest.raises(RuntimeError, match="imported transformers"):
        common.memory_worker(args, lambda side: common.build_side(bench_models.SPEC, args, side))
