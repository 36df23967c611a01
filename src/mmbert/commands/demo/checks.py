"""The demo's checks: what the synthetic world must show (text-only near the majority answer, V&L well
above it, pre-training well above from-scratch, zero-shot retrieval above chance).

The thresholds were chosen looking at the validation split, so they are judged on the held-out test split
(VQA: ``results["vqa_test"]``; retrieval: the Karpathy "test" images). ``mmbert demo`` exits with status
1 when one fails (``exit_status``); ``--quick`` reports them without enforcing them, its budget being a
smoke test's."""

from __future__ import annotations

# The split the checks read, and the ones the VQA comparison is evaluated on.
CHECK_SPLIT = "test"
EVAL_SPLITS = ("val", "test")


def acceptance(results: dict) -> list[dict]:
    v, r = results["vqa_test"], results["retrieval_zero_shot"]
    maj, text, scratch, pre = (v["majority"]["overall"], v["text_only"]["mean"], v["from_scratch"]["mean"],
                               v["pretrained"]["mean"])  # fmt: skip
    return [
        {"what": "text-only at most 3 points above the per-type majority (VQA test)", "value": f"{text - maj:+.2f}",
         "pass": text - maj <= 3.0},
        {"what": "V&L (pre-trained) at least 8 points above text-only (VQA test)", "value": f"{pre - text:+.2f}",
         "pass": pre - text >= 8.0},
        {"what": "pre-trained at least 5 points above from-scratch (VQA test, mean over seeds)",
         "value": f"{pre - scratch:+.2f}", "pass": pre - scratch >= 5.0},
    ] + ([] if r is None else [
        {"what": "zero-shot text->image R@1 >= 15 % (retrieval test images)", "value": f"{r['ir_r@1']:.1f} %",
         "pass": r["ir_r@1"] >= 15.0},
    ])  # fmt: skip


def exit_status(checks: list[dict], enforced: bool = True) -> int:
    """1 when an enforced check failed, else 0 (so ``make demo`` fails when the demo does)."""
    return 1 if enforced and not all(c["pass"] for c in checks) else 0
