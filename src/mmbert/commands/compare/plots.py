"""One bar chart per task: each model's mean per setting, the standard deviation over seeds as an error
bar and every seed's value as a dot, so the spread is seen, not only read."""

from __future__ import annotations

from pathlib import Path

from mmbert.atomic import atomic_write
from mmbert.commands.compare.plan import NONE, TEXT
from mmbert.commands.compare.report import Summary, label

COLOURS = {"paper": "tab:blue", "controlled": "tab:green", TEXT: "tab:grey", NONE: "tab:orange"}
NAMES = {"paper": "paper recipe", "controlled": "controlled recipe", TEXT: "BERT's recipe (text only)",
         NONE: "no pre-training"}  # fmt: skip


def bar_chart(out: Path, task: str, metric: str, summary: dict[tuple[str, str, str], Summary],
              models: list[str], settings: list[str]) -> Path:  # fmt: skip
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = [*settings, TEXT, NONE]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(models)), 3.8))
    width = 0.8 / len(kinds)
    shown: set[str] = set()
    for i, model in enumerate(models):
        present = [k for k in kinds if (model, k, task) in summary]
        for j, kind in enumerate(present):
            s = summary[(model, kind, task)]
            x = i - 0.4 + width * (j + 0.5) + width * (len(kinds) - len(present)) / 2
            ax.bar(x, s.mean, width, yerr=s.std, capsize=3, color=COLOURS[kind], alpha=0.85,
                   label=None if kind in shown else NAMES[kind])  # fmt: skip
            ax.scatter([x] * len(s.values), s.values, s=9, color="black", zorder=3)
            shown.add(kind)
    ax.set_xticks(range(len(models)))
    ax.set_xticklabels([label(m) for m in models], rotation=20, fontsize=8)
    ax.set_ylabel(metric)
    ax.set_title(f"{task}: mean over seeds, ± std (bars), each seed (dots)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path = out / f"{task}.png"
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return path
