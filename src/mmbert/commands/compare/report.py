"""The comparison's outputs from its finished cells: ``results.csv`` (one row per cell), ``table.md``
(mean +/- std over seeds per model x task, the best per column marked, the no-pre-training ablation
beside each task) and the text saying which differences lie within the seed spread.

The rule for "within the seed spread": two results (a model's mean +/- standard deviation over seeds)
are told apart only when their intervals mean +/- std do not overlap; otherwise the difference is within
what changing the seed does, and the text says so. With one seed the spread is unknown (the sample
standard deviation of one value is undefined): such an entry reads "x (1 seed)" and is not classified.
Ties go by the displayed rounding (one decimal): every model at the column's best shown value is bold
and named best.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmbert.atomic import atomic_write_csv, atomic_write_text
from mmbert.commands.compare.plan import CONTROLLED, NONE, PAPER, TEXT, TEXT_MODEL

CSV_COLUMNS = ("cell", "model", "setting", "task", "seed", "metric", "value", "wall_s", "parameters",
               "pretrain_wall_s")  # fmt: skip
SETTING_TITLES = {PAPER: "paper setting: each model pre-trained with its own paper's recipe",
                  CONTROLLED: "controlled setting: one objective set for every model (VOLTA's ctrl_*: MLM, "
                              "masked-region KL to the detector, image-text matching)"}  # fmt: skip


@dataclass(frozen=True)
class Summary:
    """One (model, setting, task): the values over seeds, their mean and sample standard deviation."""

    values: tuple[float, ...]

    @property
    def mean(self) -> float:
        return sum(self.values) / len(self.values)

    @property
    def std(self) -> float | None:
        """The sample standard deviation; None for one value, whose spread is undefined (not 0)."""
        n = len(self.values)
        if n < 2:
            return None
        return math.sqrt(sum((v - self.mean) ** 2 for v in self.values) / (n - 1))

    @property
    def shown(self) -> float:
        """The mean as the table shows it (one decimal), which ties are judged by."""
        return round(self.mean, 1)

    def overlaps(self, other: Summary) -> bool:
        """Within the seed spread: the intervals mean +/- std meet (both need a known spread)."""
        if self.std is None or other.std is None:
            raise ValueError("the seed spread of a single-seed result is unknown; nothing to overlap")
        return abs(self.mean - other.mean) <= self.std + other.std

    def text(self) -> str:
        if self.std is None:
            return f"{self.mean:.1f} ({len(self.values)} seed)"
        return f"{self.mean:.1f} ± {self.std:.1f}"


def best_of(rows: list[tuple[str, Summary]]) -> list[str]:
    """Every model whose mean equals the best at the displayed rounding (ties all count)."""
    top = max(s.shown for _, s in rows)
    return [m for m, s in rows if s.shown == top]


def summarise(results: Iterable[dict[str, Any]]) -> dict[tuple[str, str, str], Summary]:
    by: dict[tuple[str, str, str], list[tuple[int, float]]] = {}
    for r in results:
        by.setdefault((r["model"], r["setting"], r["task"]), []).append((r["seed"], r["value"]))
    return {k: Summary(tuple(v for _, v in sorted(vs))) for k, vs in by.items()}


def write_csv(out: Path, results: list[dict[str, Any]]) -> Path:
    rows = [CSV_COLUMNS]
    for r in sorted(results, key=lambda r: (r["task"], r["model"], r["setting"], r["seed"])):
        pre = (r.get("pretraining") or {}).get("wall_s", "")
        rows.append((r["cell"], r["model"], r["setting"], r["task"], r["seed"], r["metric"], r["value"],
                     r["wall_s"], r["parameters"], pre))  # fmt: skip
    return atomic_write_csv(out / "results.csv", rows)


def cell_parameters(results: list[dict[str, Any]]) -> dict[str, int]:
    """Per model, the encoder parameter count its cells record (what they ran, not what this run would
    build); cells of one model that disagree are named."""
    found: dict[str, tuple[int, str]] = {}
    for r in results:
        n, first = found.setdefault(r["model"], (r["parameters"], r["cell"]))
        if n != r["parameters"]:
            raise ValueError(f"cells {first} and {r['cell']} record {n:,} and {r['parameters']:,} encoder "
                             f"parameters for {r['model']}: they come from different widths")  # fmt: skip
    return {m: n for m, (n, _) in found.items()}


def pretrained_setting(model: str, setting: str) -> str:
    """The setting a model's pre-trained cells carry in ``setting``'s table (BERT: its one recipe)."""
    return TEXT if model == TEXT_MODEL else setting


def setting_table(summary: dict, models: list[str], tasks: list[str], setting: str,
                  params: dict[str, int]) -> list[str]:  # fmt: skip
    """Rows: models; columns: per task, pre-trained in ``setting`` and without pre-training."""
    columns = [(task, kind) for task in tasks for kind in ("pre", NONE)]
    cells: dict[tuple[str, tuple[str, str]], Summary | None] = {}
    for m in models:
        for task, kind in columns:
            key = (m, NONE if kind == NONE else pretrained_setting(m, setting), task)
            cells[(m, (task, kind))] = summary.get(key)
    best = {}
    for col in columns:
        present = [(m, s) for m in models if (s := cells[(m, col)]) is not None]
        best[col] = best_of(present) if present else []
    head = ["model", "parameters"] + [f"{t}" if k == "pre" else f"{t}, no pre-training" for t, k in columns]
    lines = ["| " + " | ".join(head) + " |", "|---|---:|" + "---:|" * len(columns)]
    for m in models:
        row = [label(m), f"{params[m]:,}" if m in params else "n/a"]
        for col in columns:
            s = cells[(m, col)]
            text = "n/a" if s is None else s.text()
            row.append(f"**{text}**" if s is not None and m in best[col] else text)
        lines.append("| " + " | ".join(row) + " |")
    return lines


def label(model: str) -> str:
    return "text-only BERT" if model == TEXT_MODEL else model


def spread_text(summary: dict, models: list[str], tasks: list[str], settings: list[str]) -> list[str]:
    """Per task and setting: the best model, and which others are within its seed spread; per setting:
    for how many models pre-training beats no pre-training beyond the spread."""
    lines = []
    for setting in settings:
        for task in tasks:
            rows = [(m, summary[(m, pretrained_setting(m, setting), task)]) for m in models
                    if (m, pretrained_setting(m, setting), task) in summary]  # fmt: skip
            if len(rows) < 2:
                continue
            tops = best_of(rows)
            best = [s for m, s in rows if m in tops]
            named = ", ".join(f"{label(m)} ({s.text()})" for m, s in rows if m in tops)
            if any(s.std is None for _, s in rows):
                lines.append(f"- {task}, {setting}: best {named}; the seed spread is unknown with one seed, so "
                             "the differences are not classified.")  # fmt: skip
                continue
            others = [(m, s) for m, s in rows if m not in tops]
            within = [label(m) for m, s in others if any(s.overlaps(b) for b in best)]
            below = [label(m) for m, s in others if not any(s.overlaps(b) for b in best)]
            lines.append(f"- {task}, {setting}: best {named}; within its seed spread: "
                         f"{', '.join(within) or 'none'}; below it beyond the spread: "
                         f"{', '.join(below) or 'none'}.")  # fmt: skip
        for task in tasks:
            helped, unknown, pairs = [], [], 0
            for m in models:
                pre, none = (summary.get((m, pretrained_setting(m, setting), task)), summary.get((m, NONE, task)))
                if pre is None or none is None:
                    continue
                if pre.std is None or none.std is None:
                    unknown.append(label(m))
                    continue
                pairs += 1
                if pre.mean > none.mean and not pre.overlaps(none):
                    helped.append(label(m))
            if pairs:
                names = f": {', '.join(helped)}" if helped else ""
                lines.append(f"- {task}, {setting}: pre-training beats no pre-training beyond the seed spread for "
                             f"{len(helped)} of {pairs} models{names}.")  # fmt: skip
            if unknown:
                lines.append(f"- {task}, {setting}: pre-training vs no pre-training not classified (one seed, "
                             f"spread unknown) for {', '.join(unknown)}.")  # fmt: skip
    return lines


def write_table(out: Path, results: list[dict[str, Any]], models: list[str], tasks: list[str],
                settings: list[str], header: list[str], params: dict[str, int]) -> tuple[Path, list[str]]:  # fmt: skip
    summary = summarise(results)
    seeds = sorted({r["seed"] for r in results})
    metrics = {r["task"]: r["metric"] for r in results}
    one_seed = " x (1 seed): one seed, its spread unknown." if any(s.std is None for s in summary.values()) else ""
    lines = ["# mmbert compare", "", *header, "",
             "Each entry: mean ± standard deviation over seeds " + ", ".join(map(str, seeds)) +
             " on the task's held-out test split; **bold**: the best of its column. Metrics: " +
             "; ".join(f"{t}: {metrics[t]}" for t in tasks if t in metrics) +
             ". Parameters: the encoder's (the task head comes on top). n/a: a task a text-only model cannot "
             "take (it ranks images or points at regions)." + one_seed, ""]  # fmt: skip
    for setting in settings:
        lines += [f"## {SETTING_TITLES[setting]}", "", *setting_table(summary, models, tasks, setting, params), ""]
    spread = spread_text(summary, models, tasks, settings)
    lines += ["## Within the seed spread?", "",
              "Rule: two results differ beyond the seed spread only when their intervals mean ± std (over seeds) "
              "do not overlap.", "", *spread, ""]  # fmt: skip
    lines += ["## Charts", "", *[f"![{t}]({t}.png)" for t in tasks], ""]
    return atomic_write_text(out / "table.md", "\n".join(lines)), spread
