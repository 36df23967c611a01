"""The comparison's grid: its cells, the finished-cell store, and how processes claim cells (exclusive
locks, stale locks of killed processes taken over, cells held elsewhere waited for, never computed twice).
A fake cell computation stands in for training, so these run in a second."""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from pathlib import Path

import pytest

from mmbert.commands.compare.grid import Busy, Cell, CellStore, build_grid, fill, try_lock
from mmbert.commands.compare.plan import NONE, TEXT

FORK = multiprocessing.get_context("fork")


def fake_result(cell: Cell) -> dict:
    return {"cell": cell.id, "value": float(cell.seed)}


def test_grid_cells_and_their_pretraining():
    cells = build_grid(["uniter", "bert"], ["paper", "controlled"], ["vqa", "refexp"], [0, 1], text_tasks=["vqa"])
    uniter = [c for c in cells if c.model == "uniter"]
    bert = [c for c in cells if c.model == "bert"]
    assert len(uniter) == 3 * 2 * 2  # paper, controlled, none x 2 tasks x 2 seeds
    assert {c.setting for c in bert} == {TEXT, NONE} and {c.task for c in bert} == {"vqa"}  # no refexp from text
    assert len(cells) == len({c.id for c in cells})
    c = Cell("uniter", "paper", "vqa", 1)
    assert c.id == "vqa--uniter--paper--s1" and c.pretraining == ("uniter", "paper", 1)
    assert Cell("uniter", NONE, "vqa", 1).pretraining is None
    # the cells of one pre-training come one after another (a process keeps it in memory between them)
    keys = [c.pretraining for c in cells if c.pretraining]
    for key in set(keys):
        at = [i for i, k in enumerate(keys) if k == key]
        assert at == list(range(at[0], at[-1] + 1)), key


def test_fill_computes_each_cell_once_and_a_rerun_skips_them(tmp_path):
    cells = build_grid(["uniter"], ["paper"], ["vqa"], [0, 1, 2], text_tasks=[])
    store = CellStore(tmp_path)
    seen = []
    assert fill(cells, store, lambda c: seen.append(c) or fake_result(c), poll_s=0.01) == len(cells)
    assert sorted(seen) == sorted(cells)
    assert store.read(cells[0]) == fake_result(cells[0])
    stamps = {p.name: p.stat().st_mtime_ns for p in store.dir.glob("*.json")}
    assert fill(cells, store, lambda c: pytest.fail(f"recomputed {c.id}"), poll_s=0.01) == 0
    assert stamps == {p.name: p.stat().st_mtime_ns for p in store.dir.glob("*.json")}


def _hold_then_finish(out: Path, cell: Cell, seconds: float, ready) -> None:
    store = CellStore(out)
    lock = try_lock(store.path(cell), "comparison cell")
    ready.set()
    time.sleep(seconds)
    store.write(cell, {**fake_result(cell), "by": "other"})
    lock.release()


def test_a_cell_another_process_holds_is_waited_for_not_computed(tmp_path):
    cells = build_grid(["uniter"], ["paper"], ["vqa"], [0, 1], text_tasks=[])
    ready = FORK.Event()
    other = FORK.Process(target=_hold_then_finish, args=(tmp_path, cells[0], 0.5, ready))
    other.start()
    assert ready.wait(10)
    computed = []
    store = CellStore(tmp_path)
    n = fill(cells, store, lambda c: computed.append(c.id) or fake_result(c), poll_s=0.05)
    other.join(10)
    assert computed == [c.id for c in cells[1:]] and n == len(cells) - 1
    assert store.read(cells[0])["by"] == "other"  # finished by its holder, then read, not recomputed


def _hold_then_die(out: Path, cell: Cell, ready) -> None:
    try_lock(CellStore(out).path(cell), "comparison cell")
    ready.set()
    os.kill(os.getpid(), 9)  # SIGKILL while holding the lock: its file still names this pid


def test_the_lock_of_a_killed_process_is_taken_over(tmp_path):
    cells = build_grid(["uniter"], ["paper"], ["vqa"], [0], text_tasks=[])
    ready = FORK.Event()
    dead = FORK.Process(target=_hold_then_die, args=(tmp_path, cells[0], ready))
    dead.start()
    dead.join(10)
    assert dead.exitcode == -9
    lines: list[str] = []
    assert fill(cells, CellStore(tmp_path), fake_result, poll_s=0.01, log=lines.append) == len(cells)
    assert any(f"from process {dead.pid}" in line for line in lines), lines


def test_a_busy_cell_is_tried_again_after_the_others(tmp_path):
    cells = [c for c in build_grid(["uniter"], ["paper"], ["vqa"], [0, 1, 2], text_tasks=[]) if c.setting == "paper"]
    order, refused = [], set()

    def prepare(cell: Cell) -> None:
        if cell.seed == 0 and cell.id not in refused:  # its pre-training is elsewhere the first time
            refused.add(cell.id)
            raise Busy(cell.id)

    fill(cells, CellStore(tmp_path), fake_result, prepare=prepare, on_start=lambda c: order.append(c.seed),
         poll_s=0.01)  # fmt: skip
    assert order == [1, 2, 0]


def _fill_logging(out: Path, cells: list[Cell], log: Path) -> None:
    def compute(cell: Cell) -> dict:
        with open(log, "a") as f:  # O_APPEND: the two processes' lines do not interleave
            f.write(json.dumps({"pid": os.getpid(), "cell": cell.id}) + "\n")
        time.sleep(0.02)
        return fake_result(cell)

    fill(cells, CellStore(out), compute, poll_s=0.02, log=lambda s: None)


def test_two_processes_fill_one_grid_without_computing_a_cell_twice(tmp_path):
    cells = build_grid(["uniter", "lxmert"], ["paper", "controlled"], ["vqa", "refexp"], [0, 1, 2], text_tasks=[])
    log = tmp_path / "computed.jsonl"
    workers = [FORK.Process(target=_fill_logging, args=(tmp_path / "out", cells, log)) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
        assert w.exitcode == 0
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert sorted(r["cell"] for r in rows) == sorted(c.id for c in cells)  # each exactly once
    assert len({r["pid"] for r in rows}) == 2  # both took part
    assert CellStore(tmp_path / "out").count_done(cells) == len(cells)


def test_a_corrupt_cell_file_is_named(tmp_path):
    store = CellStore(tmp_path)
    cell = Cell("uniter", "paper", "vqa", 0)
    store.path(cell).write_text("{not json")
    with pytest.raises(ValueError, match=r"vqa--uniter--paper--s0\.json: not a valid cell result"):
        store.read(cell)
