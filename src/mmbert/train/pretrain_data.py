"""Pre-training examples: a caption dataset's pairs, corrupted by a paper's recipe.

``PretrainingDataset(captions, region_rule=..., match=True)`` wraps a
:class:`~mmbert.data.datasets.CaptionDataset`. For example ``i`` of epoch ``e`` every random choice
comes from ``example_generator(seed, e, i)``: whether the caption is swapped for one of another image
(image-text match, 50 %), which tokens are masked (15 %, 80/10/10) and which regions (the recipe's
rule). Every pair is corrupted the same way, matching or not, so [MASK] never reveals the pair label;
``Pretraining`` decides per paper whether mismatched pairs' MLM / region targets are scored.

LXMERT also pre-trains on questions about the images (its image QA task): pass ``questions``
(``QAItem(image_id, question, {answer index: score})``, read with ``read_pretraining_questions``) and
they join the captions as sentences of their own, with soft answer targets; a caption, or a question
swapped onto another image, has no answer.

With a task ``schedule`` (UNITER, :class:`~mmbert.train.schedule.TaskSchedule`) every step computes one
task and its examples are corrupted for that task alone (UNITER's conditional masking, data/mlm.py,
data/mrm.py, data/itm.py): text masked for MLM, regions masked for the region tasks, nothing masked for
ITM, whose negatives replace the image (``negative="image"``). The trainer asks ``step_keys(step,
indices)`` for the keys of a step's examples, ``(index, task)``, so the task of a step is a function of
(seed, step) and a resumed run keeps the schedule exactly.

``collate_pretraining`` pads like ``collate_captions`` and adds ``region_masked`` (for the models with
a masked-region embedding), ``global_feats`` (ViLBERT's pre-training whole-image feature),
``answer_targets`` and the step's ``task`` in a :class:`PretrainingBatch`.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, fields
from functools import partial
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor
from torch.utils.data import Dataset

from mmbert.data.batch import Batch, CaptionExample
from mmbert.data.collate import collate_captions
from mmbert.data.datasets import CaptionDataset
from mmbert.data.masking import (
    REGION_RULES,
    choose_mismatch,
    example_generator,
    mask_regions,
    mask_tokens,
    whole_image_feature,
)
from mmbert.train.schedule import TaskSchedule

# what a scheduled task corrupts: the text (masked LM), the regions (masked region modelling) or the pair
TEXT_TASKS = frozenset({"mlm"})
PAIR_TASKS = frozenset({"itm", "itm_wra"})
NEGATIVES = ("caption", "image")


def builds_pairs(objectives) -> bool:
    """Whether these objectives score image-text pairs (so the data builds mismatched ones)."""
    return bool(PAIR_TASKS & set(objectives))
# the region rules whose pre-training loader computes the whole-image feature after masking
GLOBAL_FEATURE_RULES = ("vilbert", "vilbert_beta")


@dataclass
class PretrainingExample(CaptionExample):
    """A corrupted caption example; ``region_masked`` (R,) bool marks regions whose input was replaced;
    ``global_feats`` (F,) the whole-image feature of the ViLBERT rules; ``task`` the scheduled task."""

    region_masked: Tensor | None = None
    answer_targets: Tensor | None = None
    global_feats: Tensor | None = None
    task: str | None = None


class QAItem(NamedTuple):
    """A pre-training question: its image, its text and soft answer scores {answer index: score}."""

    image_id: str
    question: str
    scores: dict[int, float]


def read_pretraining_questions(
    questions: str | os.PathLike, answers: Sequence[str], annotations: str | os.PathLike | None = None
) -> list[QAItem]:
    """Questions with soft answer scores over the vocabulary ``answers`` (answers outside it are dropped,
    as LXMERT prunes its labels). Two formats: LXMERT's JSON list of ``{img_id, sent, label: {answer:
    score}}`` (``annotations`` None), or the official VQA questions + ``annotations`` files, scored with
    the official leave-one-out formula on the normalised human answers."""
    from mmbert.data.answers import normalize_answer, vqa_soft_scores

    index = {a: i for i, a in enumerate(answers)}
    path = Path(questions)
    data = _read_json(path)
    items: list[QAItem] = []
    if annotations is None:
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected LXMERT's JSON list of {{img_id, sent, label}} (or pass the "
                             "official annotations file as well)")  # fmt: skip
        for i, d in enumerate(data):
            if not isinstance(d, dict) or not {"img_id", "sent"} <= set(d):
                raise ValueError(f"{path}[{i}]: a question needs 'img_id' and 'sent', got {d!r:.200}")
            label = d.get("label") or {}
            if not isinstance(label, dict):
                raise ValueError(f"{path}[{i}]: 'label' must be {{answer: score}}, got {label!r:.80}")
            scores = {index[a]: float(v) for a, v in label.items() if a in index}
            items.append(QAItem(str(d["img_id"]), _text(d["sent"], f"{path}[{i}]: 'sent'"), scores))
        return items
    if not isinstance(data, dict) or not isinstance(data.get("questions"), list):
        raise ValueError(f"{path}: not a VQA questions file (no 'questions' list)")
    ann_path = Path(annotations)
    ann = _read_json(ann_path)
    if not isinstance(ann, dict) or not isinstance(ann.get("annotations"), list):
        raise ValueError(f"{ann_path}: not a VQA annotations file (no 'annotations' list)")
    by_id = {}
    for i, a in enumerate(ann["annotations"]):
        if not isinstance(a, dict) or "question_id" not in a or not isinstance(a.get("answers"), list):
            raise ValueError(f"{ann_path}: annotations[{i}] needs 'question_id' and an 'answers' list")
        if a["question_id"] in by_id:
            raise ValueError(f"{ann_path}: annotations[{i}]: question_id {a['question_id']!r} is annotated twice")
        by_id[a["question_id"]] = a
    seen = set()
    for i, q in enumerate(data["questions"]):
        if not isinstance(q, dict) or not {"question_id", "image_id", "question"} <= set(q):
            raise ValueError(f"{path}: questions[{i}] needs 'question_id', 'image_id' and 'question'")
        if q["question_id"] not in by_id:
            raise ValueError(f"{path}: question {q['question_id']} has no annotation in {ann_path}")
        if q["question_id"] in seen:
            raise ValueError(f"{path}: questions[{i}]: question_id {q['question_id']!r} appears twice")
        seen.add(q["question_id"])
        answers_of = by_id[q["question_id"]]["answers"]
        human = [normalize_answer(_text(h.get("answer") if isinstance(h, dict) else h,
                                        f"{ann_path}: question {q['question_id']}: an answer"))
                 for h in answers_of]  # fmt: skip
        scores = {index[a]: v for a, v in vqa_soft_scores(human).items() if a in index}
        items.append(QAItem(str(q["image_id"]), _text(q["question"], f"{path}: questions[{i}]: 'question'"), scores))
    return items


def _text(value, where: str) -> str:
    """A question or answer must be a string: an int or null would pass loading and fail (or mislead) later."""
    if not isinstance(value, str):
        raise ValueError(f"{where} must be a string, got {type(value).__name__} {value!r:.80}")
    return value


def _read_json(path: Path):
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e.reason}); re-encode it as UTF-8") from None


@dataclass
class PretrainingBatch(Batch):
    """A ``Batch`` plus ``region_masked`` (B, R), passed to models that take it (``masked_region_input``),
    ``global_feats`` (B, F), the model's whole-image feature where the recipe computes it, and
    ``task``: the one objective a scheduled step computes (None: all of them)."""

    region_masked: Tensor | None = None
    global_feats: Tensor | None = None
    task: str | None = None
    text_batch: Batch | None = None  # a text-only corpus stream's examples for this step (VL-BERT)

    def to(self, device: torch.device | str) -> PretrainingBatch:
        return type(self)(**{f.name: _move(getattr(self, f.name), device) for f in fields(self)})

    def pin_memory(self) -> PretrainingBatch:
        pinned = {f.name: getattr(self, f.name) for f in fields(self)}
        return type(self)(**{k: v.pin_memory() if isinstance(v, (Tensor, Batch)) else v for k, v in pinned.items()})


def _move(value, device):
    return value.to(device) if isinstance(value, (Tensor, Batch)) else value


def collate_pretraining(examples: list[PretrainingExample], pad_token_id: int = 0) -> PretrainingBatch:
    tasks = {e.task for e in examples}
    if len(tasks) > 1:
        raise ValueError(f"a batch mixes scheduled tasks {sorted(map(str, tasks))}; a step computes one task")
    batch = collate_captions(examples, pad_token_id)
    out = PretrainingBatch(**{f.name: getattr(batch, f.name) for f in fields(Batch)})
    if all(e.region_masked is not None for e in examples):
        flags = torch.zeros(batch.region_mask.shape, dtype=torch.bool)
        for i, e in enumerate(examples):
            flags[i, : e.region_masked.shape[0]] = e.region_masked
        out.region_masked = flags
    if all(e.answer_targets is not None for e in examples):
        out.answer_targets = torch.stack([e.answer_targets for e in examples])
    out.image_size = torch.tensor([list(e.regions.image_size) for e in examples], dtype=torch.long)
    if all(e.global_feats is not None for e in examples):
        out.global_feats = torch.stack([e.global_feats for e in examples])
    out.task = tasks.pop()
    return out


class PretrainingDataset(Dataset):
    """Corrupted caption-image pairs for pre-training (see the module docstring).

    region_rule: one of ``REGION_RULES`` or None (no region masking); match: build image-text match
    pairs (50 % mismatched); negative: what a mismatch replaces, "caption" (ViLBERT, LXMERT, VisualBERT)
    or "image" (UNITER); mlm_prob / region_prob: the masking rates; whole_word: whole-word MLM;
    word_action / force_one / random_range: token-masking options (``mask_tokens``); dynamic: a fresh
    corruption every epoch (False: the same one every epoch, BERT's original static masking, and what an
    over-fitting check wants); questions / num_answers: LXMERT's image QA data (examples
    ``len(captions)`` onwards are the questions whose image the store holds); schedule: one task per step
    with conditional masking (UNITER); overlap_iou: the "vilbert" / "unimo" rules' overlap threshold
    (UNIMO's ``overlap_ratio``: 0.4 base, 0.3 large).
    """

    def __init__(
        self,
        captions: CaptionDataset,
        region_rule: str | None,
        match: bool,
        seed: int = 0,
        mlm_prob: float = 0.15,
        region_prob: float = 0.15,
        match_prob: float = 0.5,
        whole_word: bool = False,
        dynamic: bool = True,
        questions: Sequence[QAItem] | None = None,
        num_answers: int = 0,
        negative: str = "caption",
        word_action: bool = False,
        force_one: bool = False,
        random_range: tuple[int, int] | None = None,
        schedule: TaskSchedule | None = None,
        overlap_iou: float = 0.4,
    ) -> None:
        if region_rule is not None and region_rule not in REGION_RULES:
            raise ValueError(f"unknown region masking rule {region_rule!r}; choose from {REGION_RULES}")
        if negative not in NEGATIVES:
            raise ValueError(f"negative must be one of {NEGATIVES}, got {negative!r}")
        self.base = captions
        self.region_rule, self.match, self.negative = region_rule, match, negative
        self.seed, self.epoch = seed, 0
        self.mlm_prob, self.region_prob, self.match_prob = mlm_prob, region_prob, match_prob
        self.whole_word, self.dynamic = whole_word, dynamic
        self.overlap_iou = overlap_iou  # "vilbert" rule: zero regions overlapping a masked one beyond this IoU
        self.word_action, self.force_one, self.random_range = word_action, force_one, random_range
        self.schedule = schedule
        if schedule is not None and PAIR_TASKS & set(schedule.tasks) and not match:
            raise ValueError("the schedule has the itm task but match=False builds no image-text pairs")
        tok = captions.tokenizer
        self.mask_id, self.vocab_size = tok.mask_id, tok.vocab_size
        self.special = torch.tensor(sorted(tok.special_ids), dtype=torch.long)
        self.questions: list[QAItem] = []
        if questions is not None:
            if num_answers <= 0:
                raise ValueError("questions need num_answers, the size of the answer vocabulary")
            if schedule is not None:
                raise ValueError("image QA questions and a task schedule do not go together (no paper does both)")
            store_ids = set(captions.store.keys())
            self.questions = [q for q in questions if q.image_id in store_ids]
            if len(self.questions) < len(questions):
                warnings.warn(f"{len(questions) - len(self.questions)} of {len(questions)} questions are about "
                              "images the feature store lacks; left out", stacklevel=2)  # fmt: skip
            bad = [a for q in self.questions for a in q.scores if not 0 <= a < num_answers]
            if bad:
                raise ValueError(f"answer index {bad[0]} is outside the {num_answers} answers")
        self.num_answers = num_answers  # > 0: every example carries answer targets (all zero for captions)
        # every sentence (captions, then questions) and its image: the pool mismatches are drawn from
        self.image_ids = [c.image_id for c in captions.captions] + [q.image_id for q in self.questions]
        self.sentences = [c.caption for c in captions.captions] + [q.question for q in self.questions]
        self.distinct_images = sorted(set(self.image_ids))
        self._image_position = {im: i for i, im in enumerate(self.distinct_images)}
        if match and len(self.distinct_images) < 2:
            raise ValueError("image-text matching needs captions of at least two different images")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.base) + len(self.questions)

    @property
    def collate(self) -> partial:
        return partial(collate_pretraining, pad_token_id=self.base.tokenizer.pad_id)

    @property
    def step_keys(self):
        """With a schedule: ``(step, indices) -> [(index, task), ...]`` (the trainer's hook); else None."""
        if self.schedule is None:
            return None
        return self._keys_for_step

    def _keys_for_step(self, step: int, indices: Sequence[int]) -> list[tuple[int, str]]:
        task = self.schedule.task(step)
        return [(int(i), task) for i in indices]

    @property
    def eval_keys(self):
        """With a schedule: ``(round, indices) -> [(index, task), ...]`` cycling through the tasks, so an
        evaluation of a few batches reports every task; else None."""
        if self.schedule is None:
            return None
        return self._keys_for_round

    def _keys_for_round(self, round_: int, indices: Sequence[int]) -> list[tuple[int, str]]:
        task = self.schedule.tasks[round_ % len(self.schedule.tasks)]
        return [(int(i), task) for i in indices]

    def __getitem__(self, key: int | tuple[int, str]) -> PretrainingExample:
        index, task = (key, None) if isinstance(key, int) else (int(key[0]), str(key[1]))
        if task is None and self.schedule is not None:
            raise KeyError(f"this dataset follows a task schedule: ask for (index, task), not {index}")
        if task is not None and self.schedule is not None and task not in self.schedule.tasks:
            raise KeyError(f"task {task!r} is not in the schedule {list(self.schedule.tasks)}")
        g = example_generator(self.seed, self.epoch if self.dynamic else 0, index)
        # conditional masking: a scheduled task corrupts only what it predicts from
        mask_text = task is None or task in TEXT_TASKS
        make_pair = self.match and (task is None or task in PAIR_TASKS)
        mask_image = self.region_rule is not None and (task is None or task not in TEXT_TASKS | PAIR_TASKS)
        answer_targets = None
        if index < len(self.base):
            item = self.base[index]
            text_ids, segment_ids, word_ids, caption = item.text_ids, item.segment_ids, item.word_ids, item.caption
            regions, image_id = item.regions, item.image_id
            if self.num_answers:
                answer_targets = torch.zeros(self.num_answers)
        else:
            q = self.questions[index - len(self.base)]
            caption, image_id = q.question, q.image_id
            text_ids, segment_ids, word_ids = self.base.encode_text(caption)
            regions = self.base.regions(image_id)
            answer_targets = torch.zeros(self.num_answers)
            for a, score in q.scores.items():
                answer_targets[a] = score
        pair_label = None
        if make_pair:
            if self.negative == "caption":
                other = choose_mismatch(index, self.image_ids, g, self.match_prob)
                if other is not None:  # the sentence of another image; its answer (if any) is not about this one
                    caption = self.sentences[other]
                    text_ids, segment_ids, word_ids = self.base.encode_text(caption)
            else:  # UNITER data/itm.py: the image is replaced by a uniformly drawn other image
                other = self._other_image(image_id, g)
                if other is not None:
                    image_id, regions = other, self.base.regions(other)
            pair_label = 1 if other is None else 0
        mlm_labels = None
        if mask_text:
            maskable = ~torch.isin(text_ids, self.special)
            text_ids, mlm_labels = mask_tokens(
                text_ids, maskable, self.mask_id, self.vocab_size, g, self.mlm_prob,
                word_ids=word_ids if self.whole_word else None, word_action=self.word_action,
                force_one=self.force_one, random_range=self.random_range,
            )  # fmt: skip
        region_targets = region_target_mask = region_masked = global_feat = None
        if mask_image:
            def random_pool() -> Tensor:  # LXMERT: a feature of a random image
                j = int(torch.randint(0, len(self.image_ids), (), generator=g))
                return self.base.regions(self.image_ids[j]).feats

            h, w = regions.image_size
            pixel = self.region_rule != "unimo"  # the authors' IoU on pixel boxes (+1); UNIMO's on normalised ones
            boxes = regions.boxes * regions.boxes.new_tensor([w, h, w, h]) if pixel else regions.boxes
            m = mask_regions(regions.feats, g, self.region_rule, prob=self.region_prob, boxes=boxes,
                             random_pool=random_pool, overlap_iou=self.overlap_iou, pixel_boxes=pixel)  # fmt: skip
            region_targets, region_target_mask, region_masked = regions.feats, m.targets, m.masked
            if self.region_rule in GLOBAL_FEATURE_RULES:
                real = torch.ones(m.feats.shape[0], dtype=torch.bool)
                global_feat = whole_image_feature(m.feats, real, m.overlap)
            regions.feats = m.feats
        return PretrainingExample(
            index=index,
            image_id=image_id,
            caption=caption,
            text_ids=text_ids,
            segment_ids=segment_ids,
            word_ids=word_ids,
            regions=regions,
            mlm_labels=mlm_labels,
            pair_label=pair_label,
            region_targets=region_targets,
            region_target_mask=region_target_mask,
            region_masked=region_masked,
            answer_targets=answer_targets,
            global_feats=global_feat,
            task=task,
        )

    def _other_image(self, image_id: str, g: torch.Generator) -> str | None:
        """With probability ``match_prob`` an image other than ``image_id`` (uniform over the images)."""
        if float(torch.rand((), generator=g)) >= self.match_prob:
            return None
        others = len(self.distinct_images) - 1
        j = int(torch.randint(0, others, (), generator=g))
        own = self._image_position[image_id]
        return self.distinct_images[j + (j >= own)]
