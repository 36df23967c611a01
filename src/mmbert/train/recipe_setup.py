"""A paper's pre-training recipe made concrete: a model config + the run's data settings -> the corrupted
training stream (masking rule, ITM negatives, task schedule, text-only stream) and the objective that
scores it.

``mmbert pretrain`` and ``mmbert compare``'s paper setting both build their pre-training here, so a model
pre-trains by one and the same rule wherever it is pre-trained: ``resolve_corruption`` reads the paper's
``objectives.RECIPES`` entry (with the run's explicit deviations), ``pretraining_data`` builds the stream
(BERT: sentence pairs; UNIMO: its mixed corpora; the others: captions + regions, UNITER's one task per step,
VL-BERT's text-only corpus mixed in) and ``pretraining_task`` the loss (``Pretraining`` with the schedule
flag, or ``UnimoPretraining``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any


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




@dataclass
class PretrainSources:
    """The files a pre-training reads (``mmbert pretrain``'s flags of the same names; ``None``: not given).
    ``model`` names the model in messages; ``out`` is the run directory (UNIMO's related-image cache)."""

    model: str
    captions: str | None = None
    features: str | None = None
    eval_captions: str | None = None
    text_corpus: str | None = None
    questions: str | None = None
    answers: str | None = None
    answer_vocab: str | None = None
    image_corpus: str | None = None
    scenes: str | None = None
    lexicon: str | None = None
    paraphrases: str | None = None
    negatives: str | None = None
    image_index: str | None = None
    out: str | None = None

    @classmethod
    def from_args(cls, args) -> PretrainSources:
        return cls(**{f.name: getattr(args, f.name, None) for f in fields(cls)})


def pretraining_data(sources: PretrainSources, config, tokenizer, data: DataConfig, seed: int, recipe,
                     corruption: dict[str, Any], objectives: list[str] | None = None,
                     log: Callable = print):  # fmt: skip
    """``(train_data, eval_data, objectives, record)``: the stream ``config``'s model pre-trains on by
    ``recipe`` with ``corruption`` (``resolve_corruption``; updated in place with what was applied: the
    per-objective mix ratio, the text ratio actually mixed in). ``objectives`` overrides the recipe's;
    ``record`` is what run.json adds about the data."""
    if not getattr(config, "region_feat_dim", None):
        return _text_data(sources, data, seed, tokenizer, corruption, objectives)
    return _vl_data(sources, data, seed, tokenizer, config, recipe, corruption, objectives, log)


def pretraining_task(model, objectives: list[str], data: DataConfig, corruption: dict[str, Any],
                     weights: dict[str, float] | None = None):  # fmt: skip
    """The loss of ``model`` over ``objectives``: UNIMO's multi-forward ``UnimoPretraining``, else
    ``Pretraining`` (one task per batch when ``corruption`` schedules them)."""
    if model.config.model_type == "unimo":
        from mmbert.objectives.unimo import UnimoPretraining

        return UnimoPretraining(model, objectives, weights, data.cmcl_temperature)
    from mmbert.objectives import Pretraining

    task = Pretraining(model, objectives, weights)
    task.scheduled = corruption["mix_ratio"] is not None
    return task


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


def _text_data(sources: PretrainSources, d: DataConfig, seed: int, tokenizer, corruption, objectives):
    """BERT's own recipe: sentence pairs of a plain text corpus, NSP 50/50, 80/10/10 masking."""
    from mmbert.data.text_corpus import NextSentenceDataset, read_text_corpus

    objectives = objectives or ["mlm", "nsp"]
    documents = read_text_corpus(sources.text_corpus)
    data = NextSentenceDataset(documents, tokenizer, d.max_text_length, seed, d.mlm_prob,
                               d.match_prob, bool(corruption["whole_word"]))  # fmt: skip
    return data, None, objectives, {}


def _vl_data(sources: PretrainSources, d: DataConfig, seed: int, tokenizer, config, recipe, corruption,
             objectives, log):  # fmt: skip
    """Captions + region features corrupted by the paper's recipe (and, where it has one, its text stream)."""
    from mmbert.data import features as features_api
    from mmbert.data.datasets import CaptionDataset
    from mmbert.train.pretrain_data import PretrainingDataset, builds_pairs
    from mmbert.train.schedule import TaskSchedule

    store = features_api.open(sources.features)
    first_id = next(iter(store.keys()), None)
    if first_id is None:
        raise ValueError(f"{sources.features}: the feature store is empty")
    questions, answers = None, []
    if sources.questions:
        from mmbert.tasks.vqa import read_answer_vocab
        from mmbert.train.pretrain_data import read_pretraining_questions

        if not sources.answer_vocab:
            raise ValueError("--questions needs --answer-vocab (a JSON list of answers or {answer: label})")
        if not getattr(config, "num_qa_labels", 0):
            raise ValueError(f"--questions: {sources.model} has no answer head; image QA pre-training is LXMERT's")
        answers = read_answer_vocab(sources.answer_vocab)
        if config.num_qa_labels != len(answers):
            raise ValueError(f"{sources.answer_vocab} has {len(answers)} answers but the model's num_qa_labels is "
                             f"{config.num_qa_labels}; pass model.num_qa_labels={len(answers)}")  # fmt: skip
        questions = read_pretraining_questions(sources.questions, answers, sources.answers)
    elif sources.answers or sources.answer_vocab:
        raise ValueError("--answers / --answer-vocab go with --questions")
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
            log("note: no --questions; LXMERT's image QA objective is left out")
    elif "qa" in objectives and questions is None:
        raise ValueError("objective 'qa' needs question-answer data: pass --questions (and --answer-vocab)")
    check_store(store[first_id], config, [o for o in objectives if not unimo or o in SINGLE_FORWARD], sources.features)
    data = CaptionDataset(sources.captions, store, tokenizer, d.max_text_length, d.max_regions,
                          feat_dim=config.region_feat_dim, skip_bad_records=d.skip_bad_records)
    if data.bad_records:
        shown = "; ".join(f"{i}: {m}" for i, m in data.bad_records[:5])
        log(f"skipped {len(data.bad_records)} images with bad features (skip_bad_records): {shown}"
            f"{' ...' if len(data.bad_records) > 5 else ''}")  # fmt: skip
    if len(data) == 0:
        raise ValueError(f"{sources.captions}: no caption has its image in {sources.features}")
    eval_data = None
    if sources.eval_captions:
        eval_data = CaptionDataset(sources.eval_captions, store, tokenizer, d.max_text_length, d.max_regions,
                                   feat_dim=config.region_feat_dim, skip_bad_records=d.skip_bad_records)
    bad = {"bad_records_skipped": [list(b) for b in data.bad_records]}

    schedule = None
    ratio = corruption["mix_ratio"]
    if ratio is not None:
        if len(ratio) != len(objectives):
            raise ValueError(f"mix_ratio {ratio} needs one weight per objective {objectives} (mix_ratio=[] sums "
                             "every objective in every step)")  # fmt: skip
        schedule = TaskSchedule(objectives, ratio, seed)
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

        train_data = read_unimo_corpora(data, sources, d, seed, config.region_overlap_ratio, True)
        eval_set = None
        if eval_data is not None:
            eval_set = read_unimo_corpora(eval_data, sources, d, seed + 1, config.region_overlap_ratio, False)
        corruption.update(mix_ratio=None, text_ratio=0.0)
        return train_data, eval_set, objectives, {"region_rule": corruption["region_rule"], **bad}
    train_data = corrupt(data, seed, questions)
    eval_set = corrupt(eval_data, seed + 1) if eval_data is not None else None
    extra = {"questions": sources.questions, "answers": sources.answers, "answer_vocab": sources.answer_vocab,
             "region_rule": corruption["region_rule"], **bad}  # fmt: skip
    text_ratio = corruption["text_ratio"]
    if sources.text_corpus is not None or (d.text_ratio or 0) > 0:
        if sources.text_corpus is None:
            raise ValueError("text_ratio needs --text-corpus (the text-only stream to mix in)")
        if "mlm" not in objectives:
            raise ValueError("--text-corpus mixes in a text-only MLM stream, but 'mlm' is not among the objectives")
        if text_ratio <= 0:
            text_ratio = 1.0
        from mmbert.data.text_corpus import TextMLMDataset, TextStreamMixer, read_text_corpus

        documents = read_text_corpus(sources.text_corpus)

        def mixed(main, seed):
            text = TextMLMDataset(documents, tokenizer, d.max_text_length, seed, d.mlm_prob,
                                  bool(corruption["whole_word"]), bool(corruption["word_action"]))  # fmt: skip
            return TextStreamMixer(main, text, text_ratio, seed)

        train_data = mixed(train_data, seed)
        eval_set = mixed(eval_set, seed + 1) if eval_set is not None else None
        corruption["text_ratio"] = text_ratio
    elif text_ratio > 0:
        log(f"note: no --text-corpus; the text-only corpus stream of {config.model_type}'s recipe is left out")
        corruption["text_ratio"] = 0.0
    return train_data, eval_set, objectives, extra


def check_store(record, config, objectives: list[str], path: str) -> None:
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


