"""The comparison's pieces beside the grid: the statistics and the seed-spread rule of table.md, the
table's best-of-column marks, matched parameter counts, option parsing, and the controlled recipe
(one objective set, a match head given to the models whose paper had none)."""

from __future__ import annotations

import csv
import math

import pytest

from mmbert.commands.compare.params import encoder_parameters, matched_plans
from mmbert.commands.compare.plan import CONTROLLED_RECIPE, QUICK, parse_models, parse_settings, with_budget
from mmbert.commands.compare.report import (
    Summary,
    cell_parameters,
    setting_table,
    spread_text,
    summarise,
    write_csv,
)
from mmbert.commands.compare.tasks import parse_tasks


def result(model: str, setting: str, task: str, seed: int, value: float) -> dict:
    return {"cell": f"{task}--{model}--{setting}--s{seed}", "model": model, "setting": setting, "task": task,
            "seed": seed, "metric": "accuracy", "value": value, "wall_s": 1.0, "parameters": 10,
            "pretraining": None if setting == "none" else {"wall_s": 2.0}}  # fmt: skip


def test_summary_mean_sample_std_and_the_overlap_rule():
    s = Summary((50.0, 52.0, 54.0))
    assert s.mean == 52.0 and math.isclose(s.std, 2.0)
    one = Summary((60.0,))
    assert one.std is None and one.text() == "60.0 (1 seed)"  # one value: spread undefined, not 0
    with pytest.raises(ValueError, match="single-seed"):
        one.overlaps(s)
    assert s.overlaps(Summary((53.0, 55.0, 57.0)))  # 52 +/- 2 meets 55 +/- 2 (|3| <= 2 + 2) ...
    assert not s.overlaps(Summary((55.0, 57.0, 59.0)))  # ... but not 57 +/- 2 (|5| > 2 + 2)
    assert s.text() == "52.0 ± 2.0"


def test_spread_text_names_the_best_and_who_is_within_its_spread():
    rows = [result("uniter", "paper", "vqa", k, v) for k, v in enumerate((60, 62, 64))]
    rows += [result("lxmert", "paper", "vqa", k, v) for k, v in enumerate((58, 60, 62))]  # 60 +/- 2: within
    rows += [result("vilbert", "paper", "vqa", k, v) for k, v in enumerate((40, 41, 42))]  # 41 +/- 1: below
    rows += [result("uniter", "none", "vqa", k, v) for k, v in enumerate((30, 31, 32))]
    rows += [result("lxmert", "none", "vqa", k, v) for k, v in enumerate((57, 60, 63))]
    lines = spread_text(summarise(rows), ["uniter", "lxmert", "vilbert"], ["vqa"], ["paper"])
    assert lines[0] == ("- vqa, paper: best uniter (62.0 ± 2.0); within its seed spread: lxmert; below it beyond "
                        "the spread: vilbert.")  # fmt: skip
    assert lines[1] == ("- vqa, paper: pre-training beats no pre-training beyond the seed spread for 1 of 2 models: "
                        "uniter.")  # fmt: skip


def test_spread_text_with_one_seed_says_the_spread_is_unknown():
    rows = [result("uniter", "paper", "vqa", 0, 70.0), result("lxmert", "paper", "vqa", 0, 60.0),
            result("uniter", "none", "vqa", 0, 40.0)]  # fmt: skip
    lines = spread_text(summarise(rows), ["uniter", "lxmert"], ["vqa"], ["paper"])
    assert lines == ["- vqa, paper: best uniter (70.0 (1 seed)); the seed spread is unknown with one seed, so the "
                     "differences are not classified.",
                     "- vqa, paper: pre-training vs no pre-training not classified (one seed, spread unknown) for "
                     "uniter."]  # fmt: skip


def test_ties_at_the_shown_rounding_are_all_bold_and_all_named_best():
    rows = [result("uniter", "paper", "vqa", k, v) for k, v in enumerate((60.0, 62.0, 64.04))]  # 62.01 -> 62.0
    rows += [result("lxmert", "paper", "vqa", k, v) for k, v in enumerate((61.0, 62.0, 63.0))]  # 62.0
    rows += [result("vilbert", "paper", "vqa", k, v) for k, v in enumerate((40.0, 41.0, 42.0))]
    summary = summarise(rows)
    lines = setting_table(summary, ["uniter", "lxmert", "vilbert"], ["vqa"], "paper", {})
    assert lines[2].startswith("| uniter | n/a | **62.0 ± 2.0** |")
    assert lines[3].startswith("| lxmert | n/a | **62.0 ± 1.0** |")
    assert lines[4].startswith("| vilbert | n/a | 41.0 ± 1.0 |")
    text = spread_text(summary, ["uniter", "lxmert", "vilbert"], ["vqa"], ["paper"])
    assert text[0] == ("- vqa, paper: best uniter (62.0 ± 2.0), lxmert (62.0 ± 1.0); within its seed spread: none; "
                       "below it beyond the spread: vilbert.")  # fmt: skip


def test_setting_table_marks_the_best_per_column_and_puts_the_ablation_beside(tmp_path):
    rows = [result("uniter", "paper", "vqa", 0, 70.0), result("uniter", "none", "vqa", 0, 40.0),
            result("lxmert", "paper", "vqa", 0, 60.0), result("lxmert", "none", "vqa", 0, 45.0),
            result("bert", "text", "vqa", 0, 35.0), result("bert", "none", "vqa", 0, 30.0)]  # fmt: skip
    lines = setting_table(summarise(rows), ["uniter", "lxmert", "bert"], ["vqa", "refexp"], "paper",
                          {"uniter": 1234, "lxmert": 5678, "bert": 99})  # fmt: skip
    assert lines[0] == "| model | parameters | vqa | vqa, no pre-training | refexp | refexp, no pre-training |"
    assert lines[2] == "| uniter | 1,234 | **70.0 (1 seed)** | 40.0 (1 seed) | n/a | n/a |"
    assert lines[3] == "| lxmert | 5,678 | 60.0 (1 seed) | **45.0 (1 seed)** | n/a | n/a |"
    assert lines[4] == "| text-only BERT | 99 | 35.0 (1 seed) | 30.0 (1 seed) | n/a | n/a |"  # its one recipe
    write_csv(tmp_path, rows)
    with open(tmp_path / "results.csv") as f:
        back = list(csv.DictReader(f))
    assert len(back) == len(rows)
    pre = {(r["model"], r["setting"]): r["pretrain_wall_s"] for r in back}
    assert pre[("uniter", "paper")] == "2.0" and pre[("bert", "text")] == "2.0"  # pre-trained: its wall time
    assert pre[("uniter", "none")] == "" and pre[("bert", "none")] == ""  # no pre-training: empty


def test_the_parameter_column_comes_from_the_cells():
    rows = [result("uniter", "paper", "vqa", 0, 70.0), {**result("uniter", "none", "vqa", 0, 40.0)},
            {**result("lxmert", "paper", "vqa", 0, 60.0), "parameters": 77}]  # fmt: skip
    assert cell_parameters(rows) == {"uniter": 10, "lxmert": 77}
    lines = setting_table(summarise(rows), ["uniter", "lxmert", "bert"], ["vqa"], "paper", cell_parameters(rows))
    assert lines[2].startswith("| uniter | 10 |") and lines[3].startswith("| lxmert | 77 |")
    assert lines[4].startswith("| text-only BERT | n/a |")  # no cell: no count to show
    rows[1]["parameters"] = 12  # a cell of another width
    with pytest.raises(ValueError, match="cells vqa--uniter--paper--s0 and vqa--uniter--none--s0 record 10 and 12"):
        cell_parameters(rows)


def test_matched_parameter_counts_come_close_to_the_median():
    models = ["vilbert", "visualbert", "uniter"]
    plans, target = matched_plans(models, QUICK.demo, 60, 10)
    plain = sorted(encoder_parameters(m, QUICK.demo, 60, 10) for m in models)
    assert target == plain[1]
    matched = {m: encoder_parameters(m, plans[m], 60, 10) for m in models}
    assert plans["vilbert"].dim < QUICK.demo.dim  # the dual-stream model narrows ...
    assert max(abs(n - target) for n in matched.values()) < 0.2 * target  # ... to about the common count
    assert max(matched.values()) / min(matched.values()) < max(plain) / min(plain)


def test_option_parsing():
    assert parse_models("all")[-1] == "bert" and len(parse_models("all")) == 8
    assert parse_models("uniter_tiny,lxmert,uniter") == ["uniter", "lxmert"]
    with pytest.raises(KeyError, match="unknown model 'gpt'"):
        parse_models("uniter,gpt")
    assert parse_tasks("vqa, snli_ve") == ["vqa", "snli-ve"]
    with pytest.raises(KeyError, match="unknown task 'caption'"):
        parse_tasks("caption")
    assert parse_settings("both") == ["paper", "controlled"]
    assert with_budget(QUICK, 9).demo.pretrain_steps == 9
    with pytest.raises(ValueError, match="--budget"):
        with_budget(QUICK, 0)


def test_the_controlled_recipe_gives_vl_bert_a_match_head(tmp_path):
    """VL-BERT's paper drops image-text matching; in the controlled setting it pre-trains with the same
    objectives as every other model, through a fresh match head."""
    import json

    from mmbert.commands.demo import ensure_world, pretrain
    from mmbert.data.tokenizer import Tokenizer

    plan = with_budget(QUICK, 2).demo
    world = ensure_world(tmp_path / "cache", plan, 0)
    tok = Tokenizer.from_pretrained(world)
    answers = len(json.loads((world / "vqa" / "answers.json").read_text()))
    model, objectives, metrics, _ = pretrain(world, tok, plan, "vl_bert_tiny", answers, tmp_path / "run", 0, True,
                                             recipe=CONTROLLED_RECIPE)  # fmt: skip
    assert objectives == ["mlm", "mrc_kl", "itm"] and model.heads.pair is not None
    assert {"mlm_loss", "mrc_kl_loss", "itm_loss"} <= set(metrics)
    _, paper, _, _ = pretrain(world, tok, plan, "vl_bert_tiny", answers, tmp_path / "run2", 0, True)
    assert paper == ["mlm", "mvrc_soft"]
