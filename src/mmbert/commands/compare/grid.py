"""The comparison's grid of cells (model x setting x task x seed) and how processes share it.

Each cell's result is one JSON file, ``<out>/cells/<cell-id>.json``, written atomically when the cell
finishes: a file there is a finished cell, so a restarted comparison skips it. A process claims a cell
with an exclusive lock (``mmbert.lock.PathLock`` on ``.<cell-id>.json.lock`` beside it) before computing
it; a cell locked by another live process is left to that process and looked at again later, so several
processes (or ``torchrun`` workers) fill one grid without computing a cell twice. The kernel drops a
killed holder's lock, so its cell becomes claimable again (the stale lock is reported and taken over).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmbert.atomic import atomic_write_json
from mmbert.lock import LockedError, PathLock


class Busy(Exception):
    """A cell needs something another live process is computing (its pre-training): try it later."""


@dataclass(frozen=True, order=True)
class Cell:
    model: str
    setting: str
    task: str
    seed: int

    @property
    def id(self) -> str:
        return f"{self.task}--{self.model}--{self.setting}--s{self.seed}"

    @property
    def pretraining(self) -> tuple[str, str, int] | None:
        """The (model, setting, seed) pre-training this cell fine-tunes, None for the ablation."""
        from mmbert.commands.compare.plan import NONE

        return None if self.setting == NONE else (self.model, self.setting, self.seed)


def build_grid(models: Iterable[str], settings: Iterable[str], tasks: Iterable[str], seeds: Iterable[int],
               text_tasks: Iterable[str]) -> list[Cell]:  # fmt: skip
    """Every cell, those sharing a pre-training next to each other (a process reuses it in memory).
    The text-only model runs once per seed with its own recipe ("text") and takes only ``text_tasks``;
    every model also runs without pre-training ("none")."""
    from mmbert.commands.compare.plan import NONE, TEXT, TEXT_MODEL

    settings, tasks, seeds, text_tasks = list(settings), list(tasks), list(seeds), set(text_tasks)
    cells = []
    for model in models:
        text = model == TEXT_MODEL
        for setting in ([TEXT] if text else settings) + [NONE]:
            for seed in seeds:
                cells += [Cell(model, setting, task, seed) for task in tasks if not text or task in text_tasks]
    return cells


class CellStore:
    """The finished cells on disk, and the locks that claim them."""

    def __init__(self, out: Path) -> None:
        self.dir = Path(out) / "cells"
        self.dir.mkdir(parents=True, exist_ok=True)

    def path(self, cell: Cell) -> Path:
        return self.dir / f"{cell.id}.json"

    def done(self, cell: Cell) -> bool:
        return self.path(cell).exists()

    def read(self, cell: Cell) -> dict[str, Any]:
        import json

        path = self.path(cell)
        try:
            return json.loads(path.read_text())
        except ValueError as e:
            raise ValueError(f"{path}: not a valid cell result ({e}); delete it to recompute the cell") from None

    def write(self, cell: Cell, result: dict[str, Any]) -> None:
        atomic_write_json(self.path(cell), result)

    def count_done(self, cells: Iterable[Cell]) -> int:
        return sum(self.done(c) for c in cells)


def try_lock(path: Path, what: str, log: Callable[[str], None] = print) -> PathLock | None:
    """The exclusive lock of ``path`` (beside it), or None while another live process holds it. A lock
    left by a killed process is taken over, with one line saying so."""
    lock = PathLock(path, what, inside=False, reentrant=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the stale-lock warning: said in one line below instead
        try:
            lock.acquire()
        except LockedError:
            return None
    if lock.stale_holder is not None:
        log(f"{path.name}: taking over from process {lock.stale_holder.get('pid', '?')}, which stopped before "
            "finishing it")  # fmt: skip
    return lock


def fill(cells: list[Cell], store: CellStore, compute: Callable[[Cell], dict[str, Any]],
         prepare: Callable[[Cell], None] = lambda c: None, on_start: Callable[[Cell], None] = lambda c: None,
         on_done: Callable[[Cell, float], None] = lambda c, s: None,
         on_wait: Callable[[list[Cell]], None] = lambda cs: None, poll_s: float = 2.0,
         log: Callable[[str], None] = print) -> int:  # fmt: skip
    """Compute every unfinished cell this process can claim; wait for those other processes hold (or whose
    pre-training they hold) until all are finished. ``prepare(cell)`` gets what the cell needs first
    (raising ``Busy`` when another process is computing it); ``on_start`` is called only for the cells
    this process then computes. Returns how many cells this process computed."""
    computed = 0
    pending = [c for c in cells if not store.done(c)]
    while pending:
        later = []
        for cell in pending:
            if store.done(cell):
                continue
            lock = try_lock(store.path(cell), "comparison cell", log)
            if lock is None:
                later.append(cell)
                continue
            try:
                if store.done(cell):  # another process finished it between the look and the claim
                    continue
                try:
                    prepare(cell)
                except Busy:
                    later.append(cell)
                    continue
                on_start(cell)
                start = time.perf_counter()
                result = compute(cell)
                store.write(cell, result)
                computed += 1
                on_done(cell, time.perf_counter() - start)
            finally:
                lock.release()
        pending = [c for c in later if not store.done(c)]
        if pending:
            on_wait(pending)
            time.sleep(poll_s)
    return computed
