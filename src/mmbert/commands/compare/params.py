"""``--match-params``: every model at about the same number of encoder parameters.

At one width the tiny presets differ by a factor of three (the dual-stream models carry a second stream
and co-attention), so a comparison at equal width also compares sizes. Matching scales each model's
width (and its feed-forward width, keeping the plan's ratio) to the width whose encoder comes closest
to a common count: the median of the models' counts at the plan's width.
"""

from __future__ import annotations

import dataclasses
import statistics

from mmbert.commands.demo.plan import DemoPlan


def encoder_parameters(model: str, plan: DemoPlan, vocab_size: int, num_answers: int) -> int:
    from mmbert.commands.compare.plan import preset_name
    from mmbert.commands.demo.plan import build_encoder, demo_config

    encoder = build_encoder(demo_config(preset_name(model), plan, vocab_size, num_answers))
    return sum(p.numel() for p in encoder.parameters())


def at_width(plan: DemoPlan, dim: int) -> DemoPlan:
    return dataclasses.replace(plan, dim=dim, ffn_dim=max(plan.heads, round(dim * plan.ffn_dim / plan.dim)))


def matched_plans(models: list[str], plan: DemoPlan, vocab_size: int,
                  num_answers: int) -> tuple[dict[str, DemoPlan], int]:  # fmt: skip
    """Per model, the plan at the width (a multiple of the head count, up to 4x the plan's) whose
    encoder's parameter count is nearest the median count at the plan's width; and that target."""
    counts = {m: encoder_parameters(m, plan, vocab_size, num_answers) for m in models}
    target = int(statistics.median(counts.values()))
    widths = list(range(plan.heads * 2, 4 * plan.dim + 1, plan.heads))
    plans = {}
    for m in models:
        def size(i: int, m: str = m) -> int:
            return encoder_parameters(m, at_width(plan, widths[i]), vocab_size, num_answers)

        lo, hi = 0, len(widths) - 1  # the count grows with the width: the first width reaching the target
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (mid + 1, hi) if size(mid) < target else (lo, mid)
        nearest = min({max(lo - 1, 0), lo}, key=lambda i: abs(size(i) - target))
        plans[m] = at_width(plan, widths[nearest])
    return plans, target
