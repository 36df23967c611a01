"""``mmbert compare``: the survey's comparison of the multimodal BERTs as one command.

    mmbert compare --out runs/compare                  # the default grid, synthetic world, under an hour on 2 cores
    mmbert compare --models uniter,lxmert,bert --tasks vqa,nlvr2 --seeds 5 --setting controlled --out runs/c
    mmbert compare --quick --out runs/cq               # a smoke run
    mmbert compare --out runs/compare &  mmbert compare --out runs/compare   # two processes, one grid

Each model (the seven V&L models at the demo's size, and text-only BERT as the language prior) is
pre-trained per seed with its paper's recipe ("paper") and/or VOLTA's controlled objective set
("controlled"), then fine-tuned on each task and scored on its held-out test split with the task's
official metric; every model is also fine-tuned without pre-training ("none", the ablation). The grid of
cells (``grid.py``) is filled cell by cell, each result written to ``<out>/cells/`` as it finishes, so an
interrupted comparison resumes, and several processes fill one grid in parallel; pre-trained encoders
are cached in ``<out>/pretrained/``. Outputs: ``results.csv``, ``table.md``, one ``<task>.png`` per task.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path

from mmbert.commands.compare.grid import Cell, CellStore, build_grid, fill
from mmbert.commands.compare.plan import (
    DEFAULT_TASKS,
    PLAN,
    QUICK,
    TEXT_MODEL,
    ComparePlan,
    parse_models,
    parse_settings,
    with_budget,
)
from mmbert.commands.compare.tasks import SPECS, check_files, parse_tasks
from mmbert.commands.demo.plan import DemoPlan


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="the multimodal BERTs side by side: pre-train, fine-tune, mean and spread "
                       "over seeds", description=__doc__.split("\n\n")[0])  # fmt: skip
    p.add_argument("--models", default="all", help="all, or a comma-separated list of: vilbert, lxmert, visualbert, "
                   "unicoder_vl, vl_bert, uniter, unimo, bert (default all)")  # fmt: skip
    p.add_argument("--tasks", default=",".join(DEFAULT_TASKS),
                   help=f"comma-separated, of: {', '.join(SPECS)} (default {','.join(DEFAULT_TASKS)})")
    p.add_argument("--seeds", type=int, default=3, help="seeds per cell: 0, 1, ... (default 3)")
    p.add_argument("--budget", type=int, help=f"pre-training steps per model, setting and seed (default "
                   f"{PLAN.demo.pretrain_steps}; --quick {QUICK.demo.pretrain_steps})")  # fmt: skip
    p.add_argument("--setting", default="both", choices=["paper", "controlled", "both"],
                   help="pre-train with each paper's recipe, VOLTA's controlled objective set, or both (default)")
    p.add_argument("--data", default="synthetic", help="'synthetic' (the built-in world, generated once into "
                   "--cache) or a directory laid out like it (mmbert synthetic's file names)")  # fmt: skip
    p.add_argument("--match-params", action="store_true",
                   help="scale each model's width so that every encoder has about the same number of parameters")
    p.add_argument("--quick", action="store_true", help="a smoke run: tiny world, models and budget")
    p.add_argument("--out", required=True, help="output directory (cells/, pretrained/, results.csv, table.md, "
                   "<task>.png); run it again to resume")  # fmt: skip
    p.add_argument("--cache", default="runs/cache", help="where generated worlds are kept (default runs/cache)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads per process (default 1)")
    p.set_defaults(func=run)


class Progress:
    """One status line per cell: cells done (by any process) / total, the running cell, and the time left
    at the grid's pace since this process started (cells finished by every process sharing the grid)."""

    def __init__(self, cells: list[Cell], store: CellStore, log=print) -> None:
        self.cells, self.store, self.log = cells, store, log
        self.start = time.perf_counter()
        self.done_at_start = store.count_done(cells)
        self.computed = 0
        self.last_wait = 0.0

    def line(self, running: str) -> str:
        done = self.store.count_done(self.cells)
        left = len(self.cells) - done
        elapsed = time.perf_counter() - self.start
        finished = done - self.done_at_start
        eta = f"~{elapsed / finished * left / 60:.0f} min left at the pace so far" if finished else \
            "time left: after the first cell"  # fmt: skip
        return f"[{done}/{len(self.cells)} cells done] {running} | {elapsed / 60:.1f} min so far, {eta}"

    def on_start(self, cell: Cell) -> None:
        self.log(self.line(f"running {cell.id}"))

    def on_done(self, cell: Cell, seconds: float) -> None:
        self.computed += 1

    def on_wait(self, pending: list[Cell]) -> None:
        if time.perf_counter() - self.last_wait > 30:
            self.last_wait = time.perf_counter()
            self.log(self.line(f"waiting for {len(pending)} cell(s) that other processes hold"))


def command_line(args: argparse.Namespace) -> str:
    """The command that reproduces this grid (written into table.md)."""
    parts = ["mmbert compare", f"--models {args.models}", f"--tasks {args.tasks}", f"--seeds {args.seeds}"]
    parts += [f"--budget {args.budget}"] if args.budget is not None else []
    parts += [f"--setting {args.setting}", f"--data {args.data}"]
    parts += ["--match-params"] * args.match_params + ["--quick"] * args.quick + [f"--out {args.out}"]
    return " ".join(parts)


def fingerprint(plan: ComparePlan, world: Path, matched: dict[str, DemoPlan] | None) -> dict:
    """What every cell's result depends on beyond its own (model, setting, task, seed): a resumed or
    shared grid must agree on it, or its cells would not be comparable. With ``--match-params`` that
    is each model's resolved plan (``matched``): the common parameter count is the median over the
    models named in the run, so another model list can give other widths."""
    import json

    match = {m: dataclasses.asdict(p) for m, p in sorted(matched.items())} if matched is not None else False
    found = {"plan": dataclasses.asdict(plan), "data": str(world.resolve()), "match_params": match,
             "paper_pretraining": "mmbert pretrain's recipes (train.recipe_setup)"}  # refuses older grids
    return json.loads(json.dumps(found))  # as it reads back from grid.json (tuples become lists)


def check_fingerprint(out: Path, expected: dict) -> None:
    """Claim ``out`` for ``expected`` or refuse it. ``grid.json`` comes into being only whole and only
    once (a hard link of a finished temporary file, which fails where the name exists), so of two
    processes started together with different options the second is refused, not let through."""
    import json
    import uuid

    from mmbert.atomic import atomic_write_json

    path = out / "grid.json"
    mine = atomic_write_json(out / f".grid.json.{os.getpid()}-{uuid.uuid4().hex}", expected)
    try:
        os.link(mine, path)
        return
    except FileExistsError:
        pass
    finally:
        mine.unlink()
    found = json.loads(path.read_text())
    if found != expected:
        differ = sorted(k for k in expected if found.get(k) != expected[k])
        raise ValueError(f"{out} holds a comparison run with other settings ({', '.join(differ)} differ: "
                         f"see {path}); resume it with the same options, or choose another --out")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    import torch

    from mmbert.commands.compare.experiment import Runner
    from mmbert.commands.compare.plots import bar_chart
    from mmbert.commands.compare.report import cell_parameters, summarise, write_csv, write_table
    from mmbert.commands.demo.world import ensure_world

    models, tasks, settings = parse_models(args.models), parse_tasks(args.tasks), parse_settings(args.setting)
    if args.seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {args.seeds}")
    plan = with_budget(QUICK if args.quick else PLAN, args.budget)
    worker = int(os.environ.get("RANK", "0"))
    # Under torchrun each worker fills cells on its own (the locks share the grid): its training runs are
    # single-process, not one distributed job.
    os.environ.update(WORLD_SIZE="1", RANK="0", LOCAL_RANK="0")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    if args.data == "synthetic":
        world = ensure_world(Path(args.cache), plan.demo, 0, nlvr2_pairs=plan.demo.images // 4)
    else:
        world = Path(args.data)
        if not (world / "vocab.txt").exists() and not (world / "tokenizer.json").exists():
            raise FileNotFoundError(f"--data {world}: no vocab.txt or tokenizer.json (expected a directory laid out "
                                    "like the synthetic world)")  # fmt: skip
    check_files(world, tasks)

    log = print if worker == 0 else (lambda text: print(f"[worker {worker}] {text}", flush=True))
    runner = Runner(out, world, plan, {}, log)
    target = None
    if args.match_params:
        from mmbert.commands.compare.params import matched_plans

        runner.model_plans, target = matched_plans(models, plan.demo, runner.tok.vocab_size, runner.num_answers)
    else:
        runner.model_plans = {m: plan.demo for m in models}
    check_fingerprint(out, fingerprint(plan, world, runner.model_plans if args.match_params else None))
    text_tasks = [t for t in tasks if SPECS[t].text_only]
    cells = build_grid(models, settings, tasks, range(args.seeds), text_tasks)
    store = CellStore(out)
    progress = Progress(cells, store, log)
    already = store.count_done(cells)
    log(f"mmbert compare: {len(cells)} cells ({already} already done), {len(models)} models x {len(settings)} "
        f"setting(s) + no pre-training x {len(tasks)} task(s) x {args.seeds} seed(s); world {world}")  # fmt: skip
    start = time.perf_counter()
    computed = fill(cells, store, runner.compute, runner.prepare, progress.on_start, progress.on_done, progress.on_wait,
                    log=log)  # fmt: skip
    results = [store.read(c) for c in cells]

    width = {m: runner.model_plans[m].dim for m in models}
    size = (f"Parameter counts matched (`--match-params`): each model's width scaled so its encoder comes "
            f"closest to {target:,} parameters (the median at width {plan.demo.dim}); widths: "
            + ", ".join(f"{m} {w}" for m, w in width.items()) + "." if target is not None else
            f"Every model at width {plan.demo.dim}, {plan.demo.layers} layers per stack (the tiny presets' layer "
            "plans), so the dual-stream models carry more parameters (column 2); `--match-params` equalises "
            "them.")  # fmt: skip
    d = plan.demo
    header = [
        f"Command: `{command_line(args)}`",
        "",
        f"Data: {'the synthetic world (' + str(d.images) + ' images)' if args.data == 'synthetic' else world}. "
        f"Pre-training: {d.pretrain_steps} steps x {d.pretrain_batch} captions per (model, setting, seed) on the "
        f"training captions; fine-tuning: {plan.finetune_steps} steps x {plan.finetune_batch} on the first "
        f"{plan.train_items} training examples of each task, from the pre-trained encoder or (the ablation) from "
        "a random one. The paper setting pre-trains each model as `mmbert pretrain --model <model>_tiny` does "
        "(its recipe's objectives, masking, negatives and task schedule; the text-only corpus of VL-BERT and "
        "UNIMO is the training captions, one document per image; LXMERT without its image-QA objective, which "
        "would see the VQA answers). Text-only BERT pre-trains with its own recipe (MLM + next-sentence "
        "prediction on the same captions) in both settings, and sees the questions and statements without the "
        "images.",
        "",
        size,
    ]  # fmt: skip
    write_csv(out, results)
    _, spread = write_table(out, results, models, tasks, settings, header, cell_parameters(results))
    summary = summarise(results)
    for task in tasks:
        bar_chart(out, task, SPECS[task].metric, summary, models, settings)
    print((out / "table.md").read_text().split("## Charts")[0].rstrip())
    log(f"\n{computed} cell(s) computed by this process in {(time.perf_counter() - start) / 60:.1f} min; wrote "
        f"{out}/results.csv, table.md, {', '.join(t + '.png' for t in tasks)}")  # fmt: skip
    return 0


__all__ = ["TEXT_MODEL", "register", "run"]
