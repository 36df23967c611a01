"""The comparison's outputs from its finished cells: ``results.csv`` (one row per cell), ``table.md``
(mean +/- std over seeds per model x task, the best per column marked, the no-pre-training ablation
beside each task) and the text saying which differences lie within the seed spread.

The rule for "within the seed spread": two results (a model's mean +/- standard deviation over seeds)
are told apart only when their intervals mean +/- std do not overlap; otherwise the difference is within
what changing the seed does, and the text says so.
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
    def std(self) -> float:
        n = len(self.values)
        if n < 2:
            return 0.0
        return math.sqrt(sum((v - self.mean) ** 2 for v in self.values) / (n - 1))

    def overlaps(self, other: Summary) -> bool:
        """Within the seed spread: the intervals mean +/- std meet."""
        return abs(self.mean - other.mean) <= self.std + other.std

    def text(self) -> str:
        return f"{self.mean:.1f} ± {self.std:.1f}"


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
        present = [(cells[(m, col)].mean, m) for m in models if cells[(m, col)] is not None]
        best[col] = max(present)[1] if present else None
    head = ["model", "parameters"] + [f"{t}" if k == "pre" else f"{t}, no pre-training" for t, k in columns]
    lines = ["| " + " | ".join(head) + " |", "|---|---:|" + "---:|" * len(columns)]
    for m in models:
        row = [label(m), f"{params.get(m, 0):,}"]
        for col in columns:
            s = cells[(m, col)]
            text = "n/a" if s is None else s.text()
            row.append(f"**{text}**" if s is not None and best[col] == m else text)
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
            best_m, best = max(rows, key=lambda r: r[1].mean)
            within = [label(m) for m, s in rows if m != best_m and s.overlaps(best)]
            below = [label(m) for m, s in rows if m != best_m and not s.overlaps(best)]
            lines.append(f"- {task}, {setting}: best {label(best_m)} ({best.text()}); within its seed spread: "
                         f"{', '.join(within) or 'none'}; below it beyond the spread: "
                         f"{', '.join(below) or 'none'}.")  # fmt: skip
        for task in tasks:
            helped, pairs = [], 0
            for m in models:
                pre, none = (summary.get((m, pretrained_setting(m, setting), task)), summary.get((m, NONE, task)))
                if pre is None or none is None:
                    continue
                pairs += 1
                if pre.mean > none.mean and not pre.overlaps(none):
                    helped.append(label(m))
            if pairs:
                names = f": {', '.join(helped)}" if helped else ""
                lines.append(f"- {task}, {setting}: pre-training beats no pre-training beyond the seed spread for "
                             f"{len(helped)} of {pairs} models{names}.")  # fmt: skip
    return lines


def write_table(out: Path, results: list[dict[str, Any]], models: list[str], tasks: list[str],
                settings: list[str], header: list[str], params: dict[str, int]) -> tuple[Path, list[str]]:  # fmt: skip
    summary = summarise(results)
    seeds = sorted({r["seed"] for r in results})
    metrics = {r["task"]: r["metric"] for r in results}
    lines = ["# mmbert compare", "", *header, "",
             "Each entry: mean ± standard deviation over seeds " + ", ".join(map(str, seeds)) +
             " on the task's held-out test split; **bold**: the best of its column. Metrics: " +
             "; ".join(f"{t}: {metrics[t]}" for t in tasks if t in metrics) +
             ". Parameters: the encoder's (the task head comes on top). n/a: a task a text-only model cannot "
             "take (it ranks images or points at regions).", ""]  # fmt: skip
    for setting in settings:
        lines += [f"## {SETTING_TITLES[setting]}", "", *setting_table(summary, models, tasks, setting, params), ""]
    spread = spread_text(summary, models, tasks, settings)
    lines += ["## Within the seed spread?", "",
              "Rule: two results differ beyond the seed spread only when their intervals mean ± std (over seeds) "
              "do not overlap.", "", *spread, ""]  # fmt: skip
    lines += ["## Charts", "", *[f"![{t}]({t}.png)" for t in tasks], ""]
    return atomic_write_text(out / "table.md", "\n".join(lines)), spread
