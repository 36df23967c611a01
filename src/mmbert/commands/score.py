"""``mmbert score``: score a predictions file with a task's official metric, as the official evaluators do.

    mmbert score --task vqa --questions v2_OpenEnded_mscoco_val2014_questions.json \\
        --annotations v2_mscoco_val2014_annotations.json --predictions vqa_results.json
    mmbert score --task nlvr2 --data dev.json --predictions predictions.csv
    mmbert score --task vcr --data val.jsonl --predictions q2a.json --rationale-predictions qa2r.json
    mmbert score --task caption --predictions captions_results.json --annotations captions_val2014.json
    mmbert score --task gqa --data testdev_balanced.json --predictions gqa_submission.json
    mmbert score --task snli-ve --data snli_ve_test.jsonl --predictions snli_ve_predictions.json

VQA: the official accuracy (answer normalisation, leave-one-out over the 10 human answers), overall,
per answer type and per question type; every annotated question needs a prediction unless
``--allow-missing``. NLVR2: accuracy and consistency. VCR: Q->A, QA->R and Q->AR. Captions: BLEU-1..4,
METEOR, ROUGE-L, CIDEr-D and SPICE through pycocoevalcap (``bleu_1``..``bleu_4``, ``meteor``, ``rouge_l``,
``cider``, ``spice``; a metric that cannot run here is null, with the reason under ``unavailable``).
GQA: accuracy of the submission ``[{"questionId", "prediction"}]``. SNLI-VE: accuracy overall and per class.
"""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help="score a predictions file with a task's official metric",
                       description=__doc__.split("\n\n")[0])  # fmt: skip
    p.add_argument("--task", required=True, choices=["vqa", "nlvr2", "vcr", "caption", "gqa", "snli-ve"])
    p.add_argument("--predictions", required=True,
                   help="VQA results JSON, NLVR2 CSV, VCR Q->A predictions, captioning results JSON "
                        "[{image_id, caption}], GQA submission, SNLI-VE predictions")  # fmt: skip
    p.add_argument("--questions", help="VQA: official questions JSON")
    p.add_argument("--annotations", help="VQA: official annotations JSON; caption: the COCO captions JSON")
    p.add_argument("--data", help="NLVR2 / VCR / SNLI-VE: the labelled JSONL; GQA: the labelled JSON")
    p.add_argument("--rationale-predictions", help="VCR: the QA->R predictions")
    p.add_argument("--allow-missing", action="store_true",
                   help="VQA / caption: score only the predicted questions / images")  # fmt: skip
    p.add_argument("--caption-tokenizer", default="ptb", choices=["ptb", "simple"],
                   help="caption: ptb (official, Java) or simple (no Java; BLEU, ROUGE-L, CIDEr-D only)")  # fmt: skip
    p.add_argument("--metrics", help="caption: comma-separated subset of bleu_1..bleu_4,meteor,rouge_l,cider,spice")
    p.add_argument("--spice-download", action="store_true",
                   help="caption: let pycocoevalcap download Stanford CoreNLP 3.6.0 for SPICE (needs network)")
    p.add_argument("--out", help="also write the metrics JSON here")
    p.set_defaults(func=run)


def _need(args: argparse.Namespace, *names: str) -> None:
    missing = [f"--{n.replace('_', '-')}" for n in names if not getattr(args, n)]
    if missing:
        raise ValueError(f"--task {args.task} needs {' '.join(missing)}")


def run(args: argparse.Namespace) -> int:
    from mmbert.tasks.base import write_json

    if args.task == "vqa":
        from mmbert.tasks.metrics import vqa_evaluate
        from mmbert.tasks.vqa import read_official_annotations, read_results

        _need(args, "questions", "annotations")
        annotations = read_official_annotations(args.questions, args.annotations)
        metrics = vqa_evaluate(
            read_results(args.predictions), annotations, require_all=not args.allow_missing
        )
    elif args.task == "nlvr2":
        from mmbert.tasks.base import read_jsonl, require_fields
        from mmbert.tasks.metrics import nlvr2_scores
        from mmbert.tasks.nlvr2 import parse_label, read_predictions

        _need(args, "data")
        labels = {}
        for line, d in read_jsonl(args.data):
            require_fields(d, ("identifier", "label"), f"{args.data}:{line}")
            labels[d["identifier"]] = bool(parse_label(d["label"], f"{args.data}:{line}"))
        metrics = nlvr2_scores(read_predictions(args.predictions), labels)
    elif args.task == "caption":
        from mmbert.tasks.caption_metrics import METRICS, score_caption_files

        _need(args, "annotations")
        metrics = score_caption_files(
            args.predictions, args.annotations, tokenizer=args.caption_tokenizer, allow_missing=args.allow_missing,
            spice_download=args.spice_download,
            metrics=[m.strip() for m in args.metrics.split(",")] if args.metrics else METRICS,
        )  # fmt: skip
    elif args.task == "gqa":
        from mmbert.tasks.gqa import score_submission

        _need(args, "data")
        metrics = score_submission(args.predictions, args.data, allow_missing=args.allow_missing)
    elif args.task == "snli-ve":
        from mmbert.tasks.snli_ve import score_prediction_file

        _need(args, "data")
        metrics = score_prediction_file(args.predictions, args.data)
    else:
        from mmbert.tasks.vcr import read_predictions, vcr_joint

        _need(args, "data", "rationale_predictions")
        metrics = vcr_joint(
            read_predictions(args.predictions), read_predictions(args.rationale_predictions), args.data
        )
    if args.out:
        write_json(metrics, args.out)
    print(json.dumps(metrics))
    return 0
