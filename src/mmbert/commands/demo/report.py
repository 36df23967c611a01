"""``report.md``: the results tables, the checks and the pictures, from ``results.json``'s content."""

from __future__ import annotations

from pathlib import Path

from mmbert.atomic import atomic_write_text


def mean(xs: list[float]) -> float:
    return round(sum(xs) / len(xs), 2) if xs else float("nan")


def vqa_table(v: dict, model: str, split: str, note: str) -> list[str]:
    """The VQA comparison on one split as a markdown table."""
    rows = [
        ("per-type majority answer", v["majority"]["overall"], "-"),
        ("text-only BERT", v["text_only"]["mean"], ", ".join(f"{x:.1f}" for x in v["text_only"]["seeds"])),
        (f"{model} from scratch", v["from_scratch"]["mean"],
         ", ".join(f"{x:.1f}" for x in v["from_scratch"]["seeds"])),
        (f"{model} pre-trained", v["pretrained"]["mean"],
         ", ".join(f"{x:.1f}" for x in v["pretrained"]["seeds"])),
    ]  # fmt: skip
    table = [f"| VQA ({split}, official accuracy{note}) | mean % | per seed |", "|---|---:|---|"]
    return table + [f"| {a} | {b:.2f} | {c} |" for a, b, c in rows]


def write_report(out: Path, results: dict) -> str:
    r = results["retrieval_zero_shot"]
    table = vqa_table(results["vqa"], results["model"], "val", "")
    table += ["", *vqa_table(results["vqa_test"], results["model"], "test", "; the checks")]
    v = results["vqa_test"]
    types = sorted(v["pretrained"]["per_type"])
    type_table = [
        "| question type (test) | majority | text-only | from scratch | pre-trained |",
        "|---|---:|---:|---:|---:|",
    ]
    for t in types:
        type_table.append(f"| {t} | {v['majority']['perQuestionType'].get(t, 0):.1f} | "
                          f"{v['text_only']['per_type'].get(t, 0):.1f} | {v['from_scratch']['per_type'].get(t, 0):.1f}"
                          f" | {v['pretrained']['per_type'].get(t, 0):.1f} |")  # fmt: skip
    if r is None:
        ret = [f"Zero-shot retrieval: not available ({results['model']} pre-trains without image-text matching, "
               "so it has no match head)."]  # fmt: skip
    else:
        ret = ["| zero-shot retrieval (match head) | R@1 | R@5 | R@10 | chance R@1 |", "|---|---:|---:|---:|---:|",
               f"| text -> image | {r['ir_r@1']:.1f} | {r['ir_r@5']:.1f} | {r['ir_r@10']:.1f} | "
               f"{r['chance_r@1']:.1f} |",
               f"| image -> text | {r['tr_r@1']:.1f} | {r['tr_r@5']:.1f} | {r['tr_r@10']:.1f} | - |"]  # fmt: skip
    checks = results["acceptance"]
    qa_note = "; image QA left out: it would see the VQA answers the comparison withholds"
    lines = [
        "# mmbert demo: pre-training on the synthetic world",
        "",
        f"Model: `{results['model']}` ({results['parameters']:,} parameters, objectives: "
        f"{', '.join(results['pretraining']['objectives'])}"
        f"{qa_note if results['pretraining']['qa_left_out'] else ''}"
        f"); world: {results['world']['images']} images, "
        f"seed {results['world']['seed']}; pre-training {results['plan']['pretrain_steps']} steps x "
        f"{results['plan']['pretrain_batch']} pairs; VQA fine-tuning on {results['vqa']['train_questions']} "
        f"questions, {results['plan']['vqa_steps']} steps, seeds {list(results['plan']['seeds'])}; "
        f"evaluated on {results['vqa']['val_questions']} validation and {v['test_questions']} held-out test "
        "questions (the checks read the test split). "
        f"Total time {results['timings']['total_s']:.0f} s.",
        "",
        *table,
        "",
        *type_table,
        "",
        *ret,
        "",
        *(
            [
                f"Note: {results['model']} takes no region boxes (by design), so the spatial-relation "
                "questions are beyond it whatever its pre-training.",
                "",
            ]
            if not results["uses_boxes"]
            else []
        ),
        "## Checks",
        "",
        f"- the match objective's training accuracy left its chance plateau at step "
        f"{results['pretraining']['itm_left_chance_at_step']} of {results['plan']['pretrain_steps']} "
        "(trap 4: the budget leaves room for the plateau)",
        *[f"- {'PASS' if c['pass'] else 'FAIL'}: {c['what']} ({c['value']})" for c in checks],
        *([] if results.get("checks_enforced", True) else ["- (--quick: reported, not enforced)"]),
        "",
        "## Pictures",
        "",
        "![pre-training curves](pretrain_curves.png)",
        "",
        "![VQA fine-tuning curves](vqa_curves.png)",
        "",
    ]
    if results.get("attention"):
        a = results["attention"]
        lines += [f"Attention from the word *{a['word']}* in \"{a['question']}\" to each region (layer {a['layer']}, "
                  "mean over heads; redder = more; the most attended region shows a "
                  f"{a['most_attended_region_shows']}). Over {a['questions_measured']} validation questions naming a "
                  f"shape, the word's attention peaks on a region showing that shape in "
                  f"{', '.join(f'{x:.0f} %' for x in a['grounding_rate_per_layer'])} of them (layer by layer; a "
                  f"random region would in {a['grounding_chance']:.0f} %).",
                  "", "![attention](attention.png)", ""]  # fmt: skip
    text = "\n".join(lines)
    atomic_write_text(out / "report.md", text)
    return "\n".join([*table, "", *ret])
