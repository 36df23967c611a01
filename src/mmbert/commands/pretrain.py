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


@dataclass
class DataConfig:
    """Data and corruption settings. ``None`` = the paper's recipe (``mmbert.objectives.RECIPES``); set one
    to deviate from the authors on purpose (it is written to run.json)."""

    max_text_length: int = 40  # tokens per caption, [CLS] and [SEP] included
    max_regions: int = 36  # regions per image (the most confident ones)
    mlm_prob: float = 0.15
    region_prob: float = 0.15
    match_prob: float = 0.5  # share of captions swapped for another image's (image-text match)
    whole_word: bool | None = None  # mask whole words rather than word pieces
    word_action: bool | None = None  # one 80/10/10 draw per word (VL-BERT)
    force_one: bool | None = None  # at least one masked token / region per example (UNITER)
    region_rule: str | None = None  # a name of mmbert.data.masking.REGION_RULES
    negative: str | None = None  # what an ITM negative replaces: "caption" or "image" (UNITER)
    mix_ratio: list | None = None  # one task per step by these weights, one per objective; [] = all each step
    text_ratio: float | None = None  # text-only examples per caption example each step (with --text-corpus)
    cmcl_temperature: float = 0.07  # UNIMO's contrastive temperature (the paper does not state it)
    cmcl_negatives: int = 4  # UNIMO: rewritten hard negatives per caption (+ one similar caption)
    cmcl_image_positives: int = 0  # UNIMO: images retrieved from --image-corpus per pair, extra CMCL positives
    cmcl_image_neighbours: int = 0  # UNIMO: the related images those are drawn from (0 = cmcl_image_positives)
    cmcl_image_retrieval: str = "labels"  # UNIMO: relatedness, "labels" or "features" (data.related_images)
    skip_bad_records: bool = False  # scan the store first and leave out images with NaN/inf, flipped boxes ...

    def __post_init__(self) -> None:
        for name in ("mlm_prob", "region_prob", "match_prob"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
                raise ValueError(f"setting {name!r} is a probability, within [0, 1]; got {value!r}")
        if self.cmcl_image_positives < 0 or self.cmcl_image_neighbours < 0:
            raise ValueError("settings 'cmcl_image_positives' / 'cmcl_image_neighbours' must be >= 0")
        if self.cmcl_image_retrieval not in ("labels", "features"):
            raise ValueError(f"setting 'cmcl_image_retrieval' is 'labels' or 'features', got "
                             f"{self.cmcl_image_retrieval!r}")  # fmt: skip
        if self.max_regions < 1:
            raise ValueError(f"setting 'max_regions' must be >= 1, got {self.max_regions}")
        if self.max_text_length < 3:
            raise ValueError(f"setting 'max_text_length' must be >= 3 ([CLS], a token, [SEP]), got "
                             f"{self.max_text_length}")  # fmt: skip


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
    from mmbert.objectives import Pretraining, recipe_for
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
    if text_only:
        data_parts = _text_data(args, settings, tokenizer, corruption)
    else:
        data_parts = _vl_data(args, settings, tokenizer, config, recipe, corruption)
    train_data, eval_set, objectives, extra_record = data_parts

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
    if unimo:
        from mmbert.objectives.unimo import UnimoPretraining

        task = UnimoPretraining(model, objectives, settings.weights, settings.data.cmcl_temperature)
    else:
        task = Pretraining(model, objectives, settings.weights)
        task.scheduled = corruption["mix_ratio"] is not None
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


def resolve_corruption(recipe, data: DataConfig) -> dict[str, Any]:
    """The recipe's masking / pairing / schedule choices with the run's explicit overrides applied."""
    from mmbert.data.masking import REGION_RULES

    chosen = {
        "region_rule": recipe.region_rule if data.region_rule is None else data.region_rule,
        "negative": recipe.negative if data.negative is None else data.negative,
        "whole_word": recipe.whole_word if data.whole_word is None else data.whole_word,
        "word_action": recipe.word_action if data.word_action is None else data.word_action,
        "force_one": recipe.force_one if data.force_one is None else data.force_one,
        "random_tokens": recipe.random_tokens,
        "mix_ratio": (list(recipe.mix_ratio) if recipe.mix_ratio else None) if data.mix_ratio is None
        else (list(data.mix_ratio) or None),
        "text_ratio": recipe.text_ratio if data.text_ratio is None else data.text_ratio,
        "source": recipe.source,
    }  # fmt: skip
    if chosen["region_rule"] is not None and chosen["region_rule"] not in REGION_RULES:
        raise ValueError(f"setting 'region_rule': {chosen['region_rule']!r} is not one of {REGION_RULES}")
    if chosen["negative"] not in ("caption", "image"):
        raise ValueError(f"setting 'negative': {chosen['negative']!r} is not 'caption' or 'image'")
    if chosen["text_ratio"] < 0:
        raise ValueError(f"setting 'text_ratio' must be >= 0, got {chosen['text_ratio']}")
    return chosen


def _text_data(args, settings: Resolved, tokenizer, corruption):
    """BERT's own recipe: sentence pairs of a plain text corpus, NSP 50/50, 80/10/10 masking."""
    from mmbert.data.text_corpus import NextSentenceDataset, read_text_corpus

    d = settings.data
    objectives = settings.objectives or ["mlm", "nsp"]
    documents = read_text_corpus(args.text_corpus)
    data = NextSentenceDataset(documents, tokenizer, d.max_text_length, settings.train.seed, d.mlm_prob,
                               d.match_prob, bool(corruption["whole_word"]))  # fmt: skip
    return data, None, objectives, {}


def _vl_data(args, settings: Resolved, tokenizer, config, recipe, corruption):
    """Captions + region features corrupted by the paper's recipe (and, where it has one, its text stream)."""
    from mmbert.data import features as features_api
    from mmbert.data.datasets import CaptionDataset
    from mmbert.train.pretrain_data import PretrainingDataset, builds_pairs
    from mmbert.train.schedule import TaskSchedule

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
    unimo = config.model_type == "unimo"
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
    d = settings.data
    data = CaptionDataset(args.captions, store, tokenizer, d.max_text_length, d.max_regions,
                          feat_dim=config.region_feat_dim, skip_bad_records=d.skip_bad_records)
    if data.bad_records:
        shown = "; ".join(f"{i}: {m}" for i, m in data.bad_records[:5])
        print(f"skipped {len(data.bad_records)} images with bad features (skip_bad_records): {shown}"
              f"{' ...' if len(data.bad_records) > 5 else ''}")  # fmt: skip
    if len(data) == 0:
        raise ValueError(f"{args.captions}: no caption has its image in {args.features}")
    eval_data = None
    if args.eval_captions:
        eval_data = CaptionDataset(args.eval_captions, store, tokenizer, d.max_text_length, d.max_regions,
                                   feat_dim=config.region_feat_dim, skip_bad_records=d.skip_bad_records)
    bad = {"bad_records_skipped": [list(b) for b in data.bad_records]}

    schedule = None
    ratio = corruption["mix_ratio"]
    if ratio is not None:
        if len(ratio) != len(objectives):
            raise ValueError(f"mix_ratio {ratio} needs one weight per objective {objectives} (mix_ratio=[] sums "
                             "every objective in every step)")  # fmt: skip
        schedule = TaskSchedule(objectives, ratio, settings.train.seed)
        corruption["mix_ratio"] = {o: r for o, r in zip(objectives, ratio)}
    random_range = tokenizer.word_piece_range() if corruption["random_tokens"] == "word_pieces" else None

    def corrupt(captions: CaptionDataset, seed: int, qa=None) -> PretrainingDataset:
        return PretrainingDataset(captions, corruption["region_rule"], builds_pairs(objectives), seed, d.mlm_prob,
                                  d.region_prob, d.match_prob, bool(corruption["whole_word"]), questions=qa,
                                  num_answers=len(answers), negative=corruption["negative"],
                                  word_action=bool(corruption["word_action"]), force_one=bool(corruption["force_one"]),
                                  random_range=random_range, schedule=schedule,
                                  overlap_iou=getattr(config, "region_overlap_ratio", 0.4))  # fmt: skip

    if unimo:  # UNIMO mixes its own text-only and image-only corpora (mmbert.train.unimo_data)
        from mmbert.train.unimo_data import read_unimo_corpora

        train_data = read_unimo_corpora(data, args, d, settings.train.seed, config.region_overlap_ratio, True)
        eval_set = None
        if eval_data is not None:
            seed = settings.train.seed + 1
            eval_set = read_unimo_corpora(eval_data, args, d, seed, config.region_overlap_ratio, False)
        corruption.update(mix_ratio=None, text_ratio=0.0)
        return train_data, eval_set, objectives, {"region_rule": corruption["region_rule"], **bad}
    train_data = corrupt(data, settings.train.seed, questions)
    eval_set = corrupt(eval_data, settings.train.seed + 1) if eval_data is not None else None
    extra = {"questions": args.questions, "answers": args.answers, "answer_vocab": args.answer_vocab,
             "region_rule": corruption["region_rule"], **bad}  # fmt: skip
    text_ratio = corruption["text_ratio"]
    if args.text_corpus is not None or (d.text_ratio or 0) > 0:
        if args.text_corpus is None:
            raise ValueError("text_ratio needs --text-corpus (the text-only stream to mix in)")
        if "mlm" not in objectives:
            raise ValueError("--text-corpus mixes in a text-only MLM stream, but 'mlm' is not among the objectives")
        if text_ratio <= 0:
            text_ratio = 1.0
        from mmbert.data.text_corpus import TextMLMDataset, TextStreamMixer, read_text_corpus

        documents = read_text_corpus(args.text_corpus)

        def mixed(main, seed):
            text = TextMLMDataset(documents, tokenizer, d.max_text_length, seed, d.mlm_prob,
                                  bool(corruption["whole_word"]), bool(corruption["word_action"]))  # fmt: skip
            return TextStreamMixer(main, text, text_ratio, seed)

        train_data = mixed(train_data, settings.train.seed)
        eval_set = mixed(eval_set, settings.train.seed + 1) if eval_set is not None else None
        corruption["text_ratio"] = text_ratio
    elif text_ratio > 0:
        print(f"note: no --text-corpus; the text-only corpus stream of {config.model_type}'s recipe is left out")
        corruption["text_ratio"] = 0.0
    return train_data, eval_set, objectives, extra


def _default_tokenizer_dir(args: argparse.Namespace) -> Path:
    nearby = args.captions or args.text_corpus
    for candidate in (args.init_text_from, str(Path(nearby).parent) if nearby else None):
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
