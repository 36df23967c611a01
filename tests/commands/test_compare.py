"""``mmbert compare --quick``: every output of a grid; a killed comparison resumes, skipping (not
recomputing) its finished cells, to the results of an uninterrupted run; two processes on one grid
compute each cell and each pre-training once."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from mmbert.cli import main
from mmbert.commands.compare.grid import build_grid

GRID = ["--quick", "--models", "visualbert,bert", "--tasks", "vqa,refexp", "--seeds", "2"]
# visualbert: (paper, controlled, none) x 2 tasks x 2 seeds; bert: (text, none) x vqa x 2 seeds
CELLS = build_grid(["visualbert", "bert"], ["paper", "controlled"], ["vqa", "refexp"], [0, 1], text_tasks=["vqa"])
PRETRAININGS = {f"{c.model}--{c.setting}--s{c.seed}.pt" for c in CELLS if c.pretraining}


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("compare-cache")


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, cache) -> Path:
    out = tmp_path_factory.mktemp("compare") / "out"
    assert main(["compare", *GRID, "--out", str(out), "--cache", str(cache)]) == 0
    return out


def command(out: Path, cache: Path) -> list[str]:
    return [sys.executable, "-m", "mmbert", "compare", *GRID, "--out", str(out), "--cache", str(cache)]


def values(out: Path) -> dict[str, float]:
    with open(out / "results.csv") as f:
        return {row["cell"]: float(row["value"]) for row in csv.DictReader(f)}


def finished(out: Path) -> dict[str, tuple[int, bytes]]:
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (out / "cells").glob("*.json")}


def test_quick_grid_writes_every_output(full_run):
    assert len(CELLS) == 16
    assert {p.stem for p in (full_run / "cells").glob("*.json")} == {c.id for c in CELLS}
    assert {p.name for p in (full_run / "pretrained").glob("*.pt")} == PRETRAININGS
    with open(full_run / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(CELLS)
    assert set(rows[0]) >= {"model", "setting", "task", "seed", "metric", "value", "wall_s", "parameters"}
    assert all(0.0 <= float(r["value"]) <= 100.0 and float(r["wall_s"]) > 0 and int(r["parameters"]) > 0
               for r in rows)  # fmt: skip
    assert {r["metric"] for r in rows if r["task"] == "vqa"} == {"VQA accuracy"}
    table = (full_run / "table.md").read_text()
    assert "Command: `mmbert compare --models visualbert,bert --tasks vqa,refexp --seeds 2" in table
    for heading in ("## paper setting", "## controlled setting", "## Within the seed spread?"):
        assert heading in table
    header = next(line for line in table.splitlines() if line.startswith("| model |"))
    assert header == "| model | parameters | vqa | vqa, no pre-training | refexp | refexp, no pre-training |"
    bert = next(line for line in table.splitlines() if line.startswith("| text-only BERT |"))
    assert bert.count("n/a") == 2 and "±" in bert  # refexp: a text-only model cannot point at regions
    assert table.count("**") >= 2 * 4  # the best of each column marked, in both settings
    assert "Rule: two results differ beyond the seed spread only when" in table
    assert "- vqa, paper: best " in table
    for task in ("vqa", "refexp"):
        with Image.open(full_run / f"{task}.png") as im:
            assert im.format == "PNG" and im.size[0] > 300


def test_a_rerun_skips_every_finished_cell(full_run, cache, capsys):
    before = finished(full_run)
    assert main(["compare", *GRID, "--out", str(full_run), "--cache", str(cache)]) == 0
    out = capsys.readouterr().out
    assert f"{len(CELLS)} cells ({len(CELLS)} already done)" in out and "0 cell(s) computed" in out
    assert finished(full_run) == before


def test_a_killed_comparison_resumes_to_the_same_results(tmp_path, cache, full_run):
    out = tmp_path / "out"
    with open(tmp_path / "first.log", "w") as log:
        proc = subprocess.Popen(command(out, cache), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while len(list((out / "cells").glob("*.json"))) < 3:
            assert proc.poll() is None, (tmp_path / "first.log").read_text()
            assert time.monotonic() < deadline, "no 3 cells finished in 2 minutes"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    before = finished(out)
    assert 3 <= len(before) < len(CELLS)
    second = subprocess.run(command(out, cache), capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert f"({len(before)} already done)" in second.stdout
    after = finished(out)
    assert {k: after[k] for k in before} == before  # skipped: not one byte or timestamp changed
    assert values(out) == values(full_run)  # and the grid ends as an uninterrupted run's


def test_two_processes_on_one_grid_compute_each_cell_once(tmp_path, cache, full_run):
    out = tmp_path / "out"
    logs, procs = [], []
    for rank in (0, 1):  # as torchrun starts them: RANK tells the workers apart in the log
        logs.append(tmp_path / f"rank{rank}.log")
        with open(logs[-1], "w") as log:
            procs.append(subprocess.Popen(command(out, cache), stdout=log, stderr=subprocess.STDOUT,
                                          env={**os.environ, "RANK": str(rank)}))  # fmt: skip
    for p, log in zip(procs, logs, strict=True):
        assert p.wait(timeout=300) == 0, log.read_text()
    ran, pretrained = [], []
    for log in logs:
        lines = log.read_text().splitlines()
        ran.append({line.split("running ")[1].split(" |")[0] for line in lines if "cells done] running " in line})
        found = (re.search(r"pre-training (\w+ \(\w+, seed \d+)", line) for line in lines)
        pretrained.append({m.group(1) for m in found if m})
    assert not ran[0] & ran[1] and ran[0] | ran[1] == {c.id for c in CELLS}
    assert not pretrained[0] & pretrained[1] and len(pretrained[0] | pretrained[1]) == len(PRETRAININGS)
    assert values(out) == values(full_run)


def test_bad_options_are_named(tmp_path, capsys):
    assert main(["compare", "--models", "visualbert,gpt", "--out", str(tmp_path / "o")]) == 1
    assert "unknown model 'gpt'" in capsys.readouterr().err
    assert main(["compare", "--tasks", "vqa,caption", "--out", str(tmp_path / "o")]) == 1
    assert "unknown task 'caption'" in capsys.readouterr().err
    assert main(["compare", "--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 1
    assert "no vocab.txt" in capsys.readouterr().err


def test_a_grid_with_other_settings_is_refused(full_run, cache, capsys):
    plan = json.loads((full_run / "grid.json").read_text())
    assert main(["compare", *GRID, "--budget", "7", "--out", str(full_run), "--cache", str(cache)]) == 1
    assert "holds a comparison run with other settings (plan differ" in capsys.readouterr().err
    assert json.loads((full_run / "grid.json").read_text()) == plan


def test_own_data_directory_with_matched_parameter_counts(tmp_path, cache, full_run, capsys):
    """``--data DIR``: any directory in the synthetic world's layout (here the world the grid above used);
    ``--match-params`` brings the encoders to about one parameter count, said in the table."""
    world = next(cache.glob("world-*"))
    out = tmp_path / "out"
    args = ["compare", "--quick", "--models", "visualbert,vilbert", "--tasks", "refexp", "--seeds", "1",
            "--setting", "paper", "--data", str(world), "--match-params", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    with open(out / "results.csv") as f:
        sizes = {row["model"]: int(row["parameters"]) for row in csv.DictReader(f)}
    assert max(sizes.values()) < 1.3 * min(sizes.values())  # unmatched, vilbert is about 3x visualbert
    table = (out / "table.md").read_text()
    assert "Parameter counts matched (`--match-params`)" in table
    for model, n in sizes.items():  # the table's parameter column: what the cells ran
        assert f"| {model} | {n:,} |" in table
    # the common count is the median over the models named, so another list gives other widths: resuming
    # the grid with it is refused by name, never mixed into its cells
    grid = json.loads((out / "grid.json").read_text())
    assert grid["match_params"]["visualbert"]["dim"] != grid["plan"]["demo"]["dim"]
    other = [a if a != "visualbert,vilbert" else "visualbert,vilbert,uniter" for a in args]
    assert main(other) == 1
    assert "other settings (match_params differ" in capsys.readouterr().err
    assert json.loads((out / "grid.json").read_text()) == grid


def test_two_starts_with_other_options_cannot_both_claim_one_grid(tmp_path, monkeypatch):
    """Both processes look before either writes (simulated: grid.json reads as absent to any existence
    check): the first claims the grid, the second, with other options, is refused, not let through."""
    from mmbert.commands.compare import check_fingerprint

    real = Path.exists
    monkeypatch.setattr(Path, "exists", lambda p, *a, **k: False if p.name == "grid.json" else real(p, *a, **k))
    first, second = {"plan": {"dim": 32}, "match_params": False}, {"plan": {"dim": 48}, "match_params": False}
    check_fingerprint(tmp_path, first)
    with pytest.raises(ValueError, match=r"other settings \(plan differ"):
        check_fingerprint(tmp_path, second)
    check_fingerprint(tmp_path, first)  # the same options join the grid
    assert json.loads((tmp_path / "grid.json").read_text()) == first
    assert [p.name for p in tmp_path.iterdir()] == ["grid.json"]  # no temporary file left behind
