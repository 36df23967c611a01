"""``mmbert pretrain``: pre-train a V&L model on captions + region features with its paper's objectives.

    mmbert pretrain --model lxmert_base --captions captions_train2014.json --features train_obj36.h5 \\
        --tokenizer bert-base-uncased/ --out runs/lxmert --max-steps 100000 lr=1e-4 warmup_steps=5000
    torchrun --nproc_per_node=4 -m mmbert pretrain ...          # the same run on 4 GPUs
    mmbert pretrain ... --out runs/lxmert --resume              # continue a killed run exactly
    mmbert pretrain --model lxmert_base ... --questions vqa_questions.json --answers vqa_annotations.json \
        --answer-vocab trainval_ans2label.json                  # LXMERT's image QA task as well

Options come first, then the ``key=value`` settings.

The configuration is resolved (defaults < ``--config FILE.json`` < flags < ``key=value``), validated
before any work (an unknown key lists the valid ones, a wrong type names the key) and written to
``<out>/run.json``. Keys: every ``TrainConfig`` field, the data keys below, ``objectives``,
``weights.<objective>`` and ``model.<config field>`` (e.g. ``model.vocab_size=103``).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from mmbert.train.config import TrainConfig, _matches


@dataclass
class DataConfig:
    max_text_length: int = 40  # tokens per caption, [CLS] and [SEP] included
    max_regions: int = 36  # regions per image (the most confident ones)
    mlm_prob: float = 0.15
    region_prob: float = 0.15
    match_prob: float = 0.5  # share of captions swapped for another image's (image-text match)
    whole_word: bool = False  # mask whole words rather than word pieces
    cmcl_temperature: float = 0.07  # UNIMO's contrastive temperature (the paper does not state it)
    cmcl_negatives: int = 4  # UNIMO: rewritten hard negatives per caption (+ one similar caption)


TRAIN_KEYS = {f.name for f in fields(TrainConfig)}
DATA_KEYS = {f.name for f in fields(DataConfig)}
FLAG_KEYS = {"max_steps": "max_steps", "batch_size": "batch_size", "lr": "lr", "grad_accum": "grad_accum"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pretrain",
        help="pre-train a vision-and-language model on captions + region features",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--model", required=True, help="model preset (see `mmbert models`), e.g. lxmert_base")
    p.add_argument("--captions", required=True, help="captions: COCO JSON, Conceptual Captions TSV, Karpathy, JSONL")
    p.add_argument("--features", required=True, help="region feature store: TSV, HDF5, LMDB or npz directory")
    p.add_argument("--out", required=True, help="run directory: run.json, metrics.jsonl, checkpoints/, final/")
    p.add_argument("--tokenizer", help="directory with vocab.txt / tokenizer.json (default: next to --captions)")
    p.add_argument("--eval-captions", help="held-out captions (same store) evaluated every eval_every steps")
    p.add_argument("--questions", help="LXMERT's image QA data: its JSON list {img_id, sent, label}, or official "
                   "VQA questions with --answers")  # fmt: skip
    p.add_argument("--answers", help="official VQA annotations for --questions")
    p.add_argument("--answer-vocab", help="answer vocabulary for --questions: a JSON list or {answer: label}")
    p.add_argument("--text-corpus", help="UNIMO: text-only sentences mixed in (a text file, one per line)")
    p.add_argument("--image-corpus", help="UNIMO: image-only images mixed in (image ids of --features, one per "
                   "line, or 'all' for every image of the store)")  # fmt: skip
    p.add_argument("--scenes", help="UNIMO: scene graphs for the contrastive rewrites (the synthetic world's "
                   "scenes.json); without it a lexicon rewrites the captions")  # fmt: skip
    p.add_argument("--lexicon", help="UNIMO: a JSON lexicon extending the default one (objects, attributes, relations)")
    p.add_argument("--paraphrases", help='UNIMO: JSONL {"caption", "paraphrases": [...]} (e.g. back-translations)')
    p.add_argument("--negatives", help='UNIMO: JSONL {"caption", "negatives": [...]} (curated hard negatives)')
    p.add_argument("--init-text-from", help="initialise the text side from a BERT checkpoint directory")
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
    for key in FLAG_KEYS:
        if getattr(args, key, None) is not None:
            raw[key] = getattr(args, key)
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
    for key, value in data.items():
        expected = next(f.type for f in fields(DataConfig) if f.name == key)
        if not _matches(value, str(expected)):
            raise TypeError(f"setting {key!r} expects {expected}, got {value!r}")
    return Resolved(TrainConfig.from_dict(train, "settings"), DataConfig(**data), objectives, weights, model)


def run(args: argparse.Namespace) -> int:
    from mmbert.convert.init_text import build_model
    from mmbert.data import features as features_api
    from mmbert.data.datasets import CaptionDataset
    from mmbert.data.tokenizer import Tokenizer
    from mmbert.models import MODELS, PretrainingModel
    from mmbert.objectives import Pretraining, recipe_for
    from mmbert.train.distributed import cleanup, init_distributed
    from mmbert.train.pretrain_data import PretrainingDataset
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
    if not getattr(config, "region_feat_dim", None):
        raise ValueError(f"{args.model} is a text-only model; `mmbert pretrain` trains vision-and-language models")
    recipe = recipe_for(config.model_type)
    unimo = config.model_type == "unimo"
    unimo_flags = [f for f in ("text_corpus", "image_corpus", "scenes", "lexicon", "paraphrases", "negatives")
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

    # ---- data: tokenizer, store, captions -----------------------------------------------------------
    tok_dir = Path(args.tokenizer) if args.tokenizer else _default_tokenizer_dir(args)
    tokenizer = Tokenizer.from_pretrained(tok_dir)
    if tokenizer.vocab_size > config.vocab_size:
        raise ValueError(
            f"the tokenizer in {tok_dir} has {tokenizer.vocab_size} tokens but {args.model} has vocab_size "
            f"{config.vocab_size}; pass model.vocab_size={tokenizer.vocab_size}"
        )
    store = features_api.open(args.features)
    first_id = next(iter(store.keys()), None)
    if first_id is None:
        raise ValueError(f"{args.features}: the feature store is empty")
    questions, answers = None, []
    if args.questions:
        from mmbert.tasks.vqa import read_answer_vocab
        from mmbert.train.pretrain_data import read_pretraining_questions

        if not args.answer_vocab:
            raise ValueError("--questions needs --answer-vocab (a JSON list of answers or {answer: label})")
        if not getattr(config, "num_qa_labels", 0):
            raise ValueError(f"--questions: {args.model} has no answer head; image QA pre-training is LXMERT's")
        answers = read_answer_vocab(args.answer_vocab)
        if config.num_qa_labels != len(answers):
            raise ValueError(f"{args.answer_vocab} has {len(answers)} answers but the model's num_qa_labels is "
                             f"{config.num_qa_labels}; pass model.num_qa_labels={len(answers)}")  # fmt: skip
        questions = read_pretraining_questions(args.questions, answers, args.answers)
    elif args.answers or args.answer_vocab:
        raise ValueError("--answers / --answer-vocab go with --questions")
    objectives = settings.objectives
    if unimo:
        from mmbert.objectives.unimo import SINGLE_FORWARD, UNIMO_OBJECTIVES

        objectives = list(objectives or UNIMO_OBJECTIVES)
        bad = [o for o in objectives if o not in UNIMO_OBJECTIVES]
        if bad:
            raise ValueError(f"objectives {bad} are not UNIMO's; choose from {', '.join(UNIMO_OBJECTIVES)}")
    elif objectives is None:
        objectives = [o for o in recipe.objectives if o != "qa" or questions is not None]
        if "qa" in recipe.objectives and questions is None:
            print("note: no --questions; LXMERT's image QA objective is left out")
    elif "qa" in objectives and questions is None:
        raise ValueError("objective 'qa' needs question-answer data: pass --questions (and --answer-vocab)")
    _check_store(store[first_id], config, [o for o in objectives if not unimo or o in SINGLE_FORWARD], args.features)
    data = CaptionDataset(args.captions, store, tokenizer, settings.data.max_text_length, settings.data.max_regions)
    if len(data) == 0:
        raise ValueError(f"{args.captions}: no caption has its image in {args.features}")
    eval_data = None
    if args.eval_captions:
        eval_data = CaptionDataset(args.eval_captions, store, tokenizer, settings.data.max_text_length,
                                   settings.data.max_regions)  # fmt: skip

    def corrupt(captions: CaptionDataset, seed: int, qa=None) -> PretrainingDataset:
        d = settings.data
        return PretrainingDataset(captions, recipe.region_rule, "itm" in objectives, seed, d.mlm_prob,
                                  d.region_prob, d.match_prob, d.whole_word, questions=qa,
                                  num_answers=len(answers),
                                  overlap_iou=getattr(config, "region_overlap_ratio", 0.4))  # fmt: skip

    if unimo:
        from mmbert.train.unimo_data import read_unimo_corpora

        def corrupt(captions: CaptionDataset, seed: int, qa=None, corpora: bool = False):  # noqa: F811
            return read_unimo_corpora(captions, args, settings.data, seed, config.region_overlap_ratio, corpora)

        train_data = corrupt(data, settings.train.seed, corpora=True)
        eval_set = corrupt(eval_data, settings.train.seed + 1) if eval_data is not None else None
    else:
        train_data = corrupt(data, settings.train.seed, questions)
        eval_set = corrupt(eval_data, settings.train.seed + 1) if eval_data is not None else None

    # ---- build, record, train -----------------------------------------------------------------------
    env = init_distributed(None if settings.train.device == "auto" else settings.train.device,
                           settings.train.dist_timeout_minutes)
    import torch

    torch.manual_seed(settings.train.seed)
    model = PretrainingModel(
        build_model(args.model, init_text_from=args.init_text_from or None, **settings.model_overrides)
    )
    if unimo:
        from mmbert.objectives.unimo import UnimoPretraining

        task = UnimoPretraining(model, objectives, settings.weights, settings.data.cmcl_temperature)
    else:
        task = Pretraining(model, objectives, settings.weights)
    run_info = {"model": args.model, "model_config": config.to_dict(), "objectives": list(task.objective_names),
                "weights": task.weights}  # fmt: skip
    record = {**run_info, "captions": str(args.captions), "features": str(args.features),
              "tokenizer": str(tok_dir), "train": settings.train.to_dict(), "data": asdict(settings.data),
              "init_text_from": args.init_text_from, "score_mismatched": task.score_mismatched,
              "questions": args.questions, "answers": args.answers, "answer_vocab": args.answer_vocab,
              "region_rule": recipe.region_rule}  # fmt: skip
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
    for candidate in (args.init_text_from, str(Path(args.captions).parent)):
        if candidate and any((Path(candidate) / name).exists() for name in ("vocab.txt", "tokenizer.json")):
            return Path(candidate)
    raise ValueError("no tokenizer: pass --tokenizer DIR (a directory with vocab.txt or tokenizer.json)")


def _check_store(record, config, objectives: list[str], path: str) -> None:
    """The store's features and detector outputs fit the model and the objectives (first record)."""
    width = int(record.feats.shape[1])
    if width != config.region_feat_dim:
        raise ValueError(
            f"{path}: features are {width}-d but the model's region_feat_dim is {config.region_feat_dim}; "
            f"pass model.region_feat_dim={width}"
        )
    from mmbert.objectives import OBJECTIVES

    for objective in objectives:
        need = OBJECTIVES[objective]().detector  # what the objective declares it reads from the store
        if need is None:
            continue
        present = [n for n in need.fields if getattr(record, n) is not None]
        if not present:
            raise ValueError(f"{path}: objective {objective!r} needs the detector's {' or '.join(need.fields)}, "
                             "which this store lacks")  # fmt: skip
        field = present[0]
        value = getattr(record, field)
        # a distribution has exactly the head's classes; ids must fall inside them
        top = int(value.shape[1]) if field == "cls_prob" else int(value.max()) + 1
        size = getattr(config, need.size_key, None)
        if size is not None and (top != size if field == "cls_prob" else top > size):
            raise ValueError(
                f"{path}: the detector's {field} has {top} classes but the model's {need.size_key} is {size}; "
                f"pass model.{need.size_key}={top if field == 'cls_prob' else max(top, size)}"
            )


def _config_diff(old: dict, new: dict) -> str:
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return ", ".join(f"{k}: {old.get(k)!r} there vs {new.get(k)!r} here" for k in keys[:5]) or "same config"
