"""``mmbert pretrain``: pre-train a V&L model on captions + region features with its paper's objectives.

    mmbert pretrain --model lxmert_base --captions captions_train2014.json --features train_obj36.h5 \\
        --tokenizer bert-base-uncased/ --out runs/lxmert --max-steps 100000 lr=1e-4 warmup_steps=5000
    torchrun --nproc_per_node=4 -m mmbert pretrain ...          # the same run on 4 GPUs
    mmbert pretrain ... --out runs/lxmert --resume              # continue a killed run exactly
    mmbert pretrain --model lxmert_base ... --questions vqa_questions.json --answers vqa_annotations.json \
        --answer-vocab trainval_ans2label.json                  # LXMERT's image QA task as well
    mmbert pretrain --model bert_base --text-corpus corpus.txt --tokenizer bert-base-uncased/ --out runs/bert
                                                                # BERT's own recipe: sentence pairs, NSP, MLM
    mmbert pretrain --model vl_bert_base ... --text-corpus wiki.txt   # VL-BERT's text-only stream mixed in

Each paper's recipe (``mmbert.objectives.RECIPES``: masking rule, task schedule, ITM negatives, text
stream) applies by default; ``region_rule=``, ``negative=``, ``whole_word=``, ``word_action=``,
``force_one=``, ``mix_ratio=`` and ``text_ratio=`` deviate from it on purpose and are written to run.json.

Options come first, then the ``key=value`` settings.

The configuration is resolved (defaults < ``--config FILE.json`` < flags < ``key=value``), validated
before any work (an unknown key lists the valid ones, a wrong type names the key) and written to
``<out>/run.json``. Keys: every ``TrainConfig`` field, the data keys below, ``objectives``,
``weights.<objective>`` and ``model.<config field>`` (e.g. ``model.vocab_size=103``).
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from mmbert.train.config import TrainConfig, _matches
from mmbert.train.recipe_setup import (
    DataConfig,
    PretrainSources,
    pretraining_data,
    pretraining_task,
    resolve_corruption,
)

TRAIN_KEYS = {f.name for f in fields(TrainConfig)}
DATA_KEYS = {f.name for f in fields(DataConfig)}
FLAG_KEYS = {"max_steps": "max_steps", "batch_size": "batch_size", "lr": "lr", "grad_accum": "grad_accum",
             "image_positives": "cmcl_image_positives", "image_retrieval": "cmcl_image_retrieval"}  # fmt: skip


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pretrain",
        help="pre-train a vision-and-language model on captions + region features",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--model", required=True, help="model preset (see `mmbert models`), e.g. lxmert_base")
    p.add_argument("--captions", help="captions: COCO JSON, Conceptual Captions TSV, Karpathy, JSONL (V&L models)")
    p.add_argument("--features", help="region feature store: TSV, HDF5, LMDB or npz directory (V&L models)")
    p.add_argument("--out", required=True, help="run directory: run.json, metrics.jsonl, checkpoints/, final/")
    p.add_argument("--tokenizer", help="directory with vocab.txt / tokenizer.json (default: next to --captions)")
    p.add_argument("--eval-captions", help="held-out captions (same store) evaluated every eval_every steps")
    p.add_argument("--questions", help="LXMERT's image QA data: its JSON list {img_id, sent, label}, or official "
                   "VQA questions with --answers")  # fmt: skip
    p.add_argument("--answers", help="official VQA annotations for --questions")
    p.add_argument("--answer-vocab", help="answer vocabulary for --questions: a JSON list or {answer: label}")
    p.add_argument("--init-text-from", help="initialise the text side from a BERT checkpoint directory")
    p.add_argument("--text-corpus", help="a plain text corpus (one sentence per line, a blank line between "
                   "documents): BERT's corpus, the text-only stream a V&L recipe mixes in (VL-BERT), or UNIMO's "
                   "text-only sentences")  # fmt: skip
    p.add_argument("--image-corpus", help="UNIMO: image-only images mixed in (image ids of --features, one per "
                   "line, or 'all' for every image of the store)")  # fmt: skip
    p.add_argument("--scenes", help="UNIMO: scene graphs for the contrastive rewrites (the synthetic world's "
                   "scenes.json); without it a lexicon rewrites the captions")  # fmt: skip
    p.add_argument("--lexicon", help="UNIMO: a JSON lexicon extending the default one (objects, attributes, relations)")
    p.add_argument("--paraphrases", help='UNIMO: JSONL {"caption", "paraphrases": [...]} (e.g. back-translations)')
    p.add_argument("--negatives", help='UNIMO: JSONL {"caption", "negatives": [...]} (curated hard negatives)')
    p.add_argument("--image-positives", type=int, metavar="N", help="UNIMO: N images retrieved from --image-corpus "
                   "per pair as extra CMCL positives (setting cmcl_image_positives; drawn from the "
                   "cmcl_image_neighbours most related)")  # fmt: skip
    p.add_argument("--image-retrieval", choices=("labels", "features"), help="UNIMO: how related images are "
                   "found: TF-IDF over the detector's region labels (default) or mean region features")  # fmt: skip
    p.add_argument("--image-index", help="UNIMO: the cache of the related images (JSON; default "
                   "<out>/cmcl_related_images.json), reused while the corpora and settings match")  # fmt: skip
    p.add_argument("--config", help="flat JSON file of settings (same keys as key=value)")
    p.add_argument("--max-steps", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--grad-accum", type=int)
    p.add_argument("--objectives", nargs="+", help="override the paper's objective set, e.g. mlm itm")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    p.add_argument("settings", nargs="*", metavar="key=value", help="any setting, e.g. warmup_steps=1000")
    p.set_defaults(func=run, lock_out=True)  # mmbert.cli locks --out for the whole run


@dataclass
class Resolved:
    train: TrainConfig
    data: DataConfig
    objectives: list[str] | None
    weights: dict[str, float]
    model_overrides: dict[str, Any]


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def resolve_settings(args: argparse.Namespace) -> Resolved:
    """Merge the settings and validate every key and type before anything is built."""
    raw: dict[str, Any] = {}
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            raise FileNotFoundError(f"--config {path}: no such file")
        try:
            loaded = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"--config {path}: not valid JSON ({e})") from None
        if not isinstance(loaded, dict):
            raise ValueError(f"--config {path}: expected a JSON object of settings")
        for key, value in loaded.items():
            if key in ("model", "weights") and isinstance(value, dict):
                raw.update({f"{key}.{k}": v for k, v in value.items()})
            else:
                raw[key] = value
    for flag, key in FLAG_KEYS.items():
        if getattr(args, flag, None) is not None:
            raw[key] = getattr(args, flag)
    # `--objectives mlm itm lr=1e-4`: argparse hands the trailing settings to --objectives
    named = [o for o in args.objectives or [] if "=" not in o]
    trailing = [o for o in args.objectives or [] if "=" in o]
    if named:
        raw["objectives"] = named
    for item in [*trailing, *(args.settings or [])]:
        if "=" not in item:
            raise ValueError(f"setting {item!r} is not key=value")
        key, value = item.split("=", 1)
        raw[key.strip()] = _parse_value(value)

    train, data, weights, model = {}, {}, {}, {}
    objectives = None
    valid = sorted(TRAIN_KEYS | DATA_KEYS | {"objectives", "weights.<objective>", "model.<field>"})
    for key, value in raw.items():
        if key in TRAIN_KEYS:
            train[key] = value
        elif key in DATA_KEYS:
            data[key] = value
        elif key == "objectives":
            if isinstance(value, str):
                value = [v for v in value.split(",") if v]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise TypeError(f"setting 'objectives' expects a list of names, got {value!r}")
            objectives = value
        elif key.startswith("weights."):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"setting {key!r} expects a number, got {value!r}")
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"setting {key!r}: a loss weight must be finite and >= 0, got {value!r}")
            weights[key.split(".", 1)[1]] = float(value)
        elif key.startswith("model."):
            model[key.split(".", 1)[1]] = value
        else:
            raise ValueError(f"unknown setting {key!r}; valid keys: {', '.join(valid)}")
    from mmbert.objectives import OBJECTIVE_NAMES
    from mmbert.objectives.unimo import UNIMO_OBJECTIVES

    known = [*OBJECTIVE_NAMES, *(o for o in UNIMO_OBJECTIVES if o not in OBJECTIVE_NAMES)]
    for name in [*(objectives or []), *weights]:
        if name not in known:
            raise KeyError(f"unknown objectives [{name!r}]; known: {', '.join(known)}")
    if isinstance(data.get("mix_ratio"), str):  # mix_ratio=2,2,1,1 on the command line
        data["mix_ratio"] = [_parse_value(v) for v in data["mix_ratio"].split(",") if v]
    for key, value in data.items():
        expected = next(f.type for f in fields(DataConfig) if f.name == key)
        if key == "mix_ratio":
            if value is not None and not (isinstance(value, list) and all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):  # fmt: skip
                raise TypeError(f"setting 'mix_ratio' expects a list of numbers (one per objective), got {value!r}")
        elif not _matches(value, str(expected)):
            raise TypeError(f"setting {key!r} expects {expected}, got {value!r}")
    return Resolved(TrainConfig.from_dict(train, "settings"), DataConfig(**data), objectives, weights, model)


def run(args: argparse.Namespace) -> int:
    from mmbert.convert.init_text import build_model
    from mmbert.data.tokenizer import Tokenizer
    from mmbert.models import MODELS, PretrainingModel
    from mmbert.objectives import recipe_for
    from mmbert.train.distributed import cleanup, init_distributed
    from mmbert.train.runs import refuse_old_checkpoints, train_or_stop

    settings = resolve_settings(args)
    out = Path(args.out)
    for flag, path in (("--captions", args.captions), ("--features", args.features),
                       ("--eval-captions", args.eval_captions), ("--tokenizer", args.tokenizer),
                       ("--questions", args.questions), ("--answers", args.answers),
                       ("--answer-vocab", args.answer_vocab), ("--text-corpus", args.text_corpus),
                       ("--scenes", args.scenes), ("--lexicon", args.lexicon), ("--paraphrases", args.paraphrases),
                       ("--negatives", args.negatives),
                       ("--image-corpus", None if args.image_corpus == "all" else args.image_corpus)):  # fmt: skip
        if path is not None and not Path(path).exists():
            raise FileNotFoundError(f"{flag} {path}: no such file or directory")

    # ---- the model's configuration ------------------------------------------------------------------
    if args.model not in MODELS:
        raise KeyError(f"unknown model {args.model!r}; available: {', '.join(MODELS)}")
    base = MODELS[args.model]()
    config = type(base).from_dict({**base.to_dict(), **settings.model_overrides}, "model settings")
    text_only = not getattr(config, "region_feat_dim", None)
    if text_only:
        if args.text_corpus is None:
            raise ValueError(f"{args.model} is a text-only model: pass --text-corpus FILE (one sentence per line, "
                             "a blank line between documents) to pre-train it with BERT's recipe")  # fmt: skip
        vl_flags = (("--captions", args.captions), ("--features", args.features),
                    ("--eval-captions", args.eval_captions), ("--questions", args.questions))  # fmt: skip
        given = [f for f, v in vl_flags if v]
        if given:
            raise ValueError(f"{', '.join(given)}: {args.model} is a text-only model; it pre-trains on --text-corpus")
    elif args.captions is None or args.features is None:
        raise ValueError(f"{args.model} is a vision-and-language model: pass --captions and --features")
    recipe = recipe_for(config)  # VOLTA's controlled presets: VOLTA's recipe
    unimo = config.model_type == "unimo"
    unimo_flags = [f for f in ("image_corpus", "scenes", "lexicon", "paraphrases", "negatives", "image_positives",
                               "image_retrieval", "image_index")
                   if getattr(args, f, None)]  # fmt: skip
    if unimo_flags and not unimo:
        raise ValueError(f"--{unimo_flags[0].replace('_', '-')} is for UNIMO's mixed pre-training, not {args.model}")

    # ---- the run directory --------------------------------------------------------------------------
    run_file = out / "run.json"
    if args.resume:
        if not run_file.is_file():
            raise FileNotFoundError(f"--resume: {out} holds no run.json (not a pretrain run directory)")
        previous = json.loads(run_file.read_text())
        if previous.get("model") != args.model or previous.get("model_config") != config.to_dict():
            raise ValueError(
                f"--resume: {out} is a run of {previous.get('model')!r} "
                f"({_config_diff(previous.get('model_config') or {}, config.to_dict())}), not of {args.model!r} "
                "with this configuration"
            )
    refuse_old_checkpoints(out, args.resume)

    tok_dir = Path(args.tokenizer) if args.tokenizer else _default_tokenizer_dir(args)
    tokenizer = Tokenizer.from_pretrained(tok_dir)
    if tokenizer.vocab_size > config.vocab_size:
        raise ValueError(
            f"the tokenizer in {tok_dir} has {tokenizer.vocab_size} tokens but {args.model} has vocab_size "
            f"{config.vocab_size}; pass model.vocab_size={tokenizer.vocab_size}"
        )
    corruption = resolve_corruption(recipe, settings.data)
    train_data, eval_set, objectives, extra_record = pretraining_data(
        PretrainSources.from_args(args), config, tokenizer, settings.data, settings.train.seed, recipe, corruption,
        settings.objectives)  # fmt: skip

    # ---- build, record, train -----------------------------------------------------------------------
    env = init_distributed(None if settings.train.device == "auto" else settings.train.device,
                           settings.train.dist_timeout_minutes)
    import torch

    torch.manual_seed(settings.train.seed)
    overrides = dict(settings.model_overrides)
    if args.init_text_from:
        overrides["init_text_from"] = args.init_text_from
    model = PretrainingModel(build_model(args.model, **overrides))
    head_copied: list[str] = []
    if args.init_text_from:
        from mmbert.convert.init_text import init_mlm_head_from_bert

        head_copied = init_mlm_head_from_bert(model, args.init_text_from)
        if env.is_main:
            head = f"copied {', '.join(head_copied)}" if head_copied else "none in the checkpoint, new"
            print(f"init from {args.init_text_from}: {model.encoder.init_report}; MLM head: {head}")
    task = pretraining_task(model, objectives, settings.data, corruption, settings.weights)
    run_info = {"model": args.model, "model_config": config.to_dict(), "objectives": list(task.objective_names),
                "weights": task.weights}  # fmt: skip
    record = {**run_info, "captions": str(args.captions) if args.captions else None,
              "features": str(args.features) if args.features else None, "text_corpus": args.text_corpus,
              "tokenizer": str(tok_dir), "train": settings.train.to_dict(), "data": asdict(settings.data),
              "init_text_from": args.init_text_from, "mlm_head_from_bert": head_copied,
              "score_mismatched": task.score_mismatched, "recipe": corruption, **extra_record}  # fmt: skip
    if env.is_main:
        out.mkdir(parents=True, exist_ok=True)
        if not args.resume:
            from mmbert.atomic import atomic_write_json

            atomic_write_json(run_file, record)
    result = train_or_stop("pretrain", env, task, train_data, train_data.collate, settings.train, out,
                           eval_dataset=eval_set, resume=args.resume, run_info=run_info)  # fmt: skip
    if result is None:
        return 1
    if env.is_main:
        model.save(out / "final")
        tokenizer.save(out / "final")
        print(json.dumps({"out": str(out), "step": result.step, "metrics": result.metrics,
                          "eval": result.eval_metrics, "checkpoint": str(result.last_checkpoint)}))  # fmt: skip
    cleanup(env)
    return 0


def _default_tokenizer_dir(args: argparse.Namespace) -> Path:
    nearby = args.captions or args.text_corpus
    for candidate in (args.init_text_from, str(Path(nearby).parent) if nearby else None):
        if candidate and any((Path(candidate) / name).exists() for name in ("vocab.txt", "tokenizer.json")):
            return Path(candidate)
    raise ValueError("no tokenizer: pass --tokenizer DIR (a directory with vocab.txt or tokenizer.json)")


def _config_diff(old: dict, new: dict) -> str:
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return ", ".join(f"{k}: {old.get(k)!r} there vs {new.get(k)!r} here" for k in keys[:5]) or "same config"
