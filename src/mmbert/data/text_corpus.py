"""Plain text corpora for text-only pre-training: BERT's own recipe, and the text stream V&L recipes mix in.

Corpus format (BERT's ``create_pretraining_data.py`` input): one sentence per line, a blank line between
documents, UTF-8. ``read_text_corpus`` returns the documents as lists of sentences.

* :class:`NextSentenceDataset` — BERT: example ``i`` is sentence ``i`` of the corpus as segment A and,
  with probability 0.5, its true next sentence as segment B (label 1), else a random sentence of another
  document (label 0; always so after a document's last sentence); both masked 15 % with 80/10/10.
  Deviation (named): BERT packs several sentences into each segment up to its 512-token budget; we pair
  single sentences, truncated longest-first to ``max_length``.
* :class:`TextMLMDataset` — a text-only MLM stream (VL-BERT's general corpus, pretrain/data/datasets/
  general_corpus.py): example ``i`` starts at sentence ``i`` and takes the following sentences of its
  document while they fit in ``max_length`` tokens; masked like the captions of the recipe it joins.
* :class:`TextStreamMixer` — a V&L pre-training dataset plus a text-only stream: every step takes
  ``ratio`` text examples per caption example (drawn as a function of (seed, step)), collated into
  ``batch.text_batch``; ``Pretraining`` adds their MLM loss (``mlm_text``). VL-BERT uses ratio 1 (one
  batch of each per step); UNIMO reuses it for its text-only corpus.

Every random draw comes from ``example_generator(seed, epoch, index)`` (or (seed, step)), so resumed and
multi-process runs see exactly the corruption of an unbroken run.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, fields
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from mmbert.data.batch import Batch
from mmbert.data.collate import pad_1d
from mmbert.data.masking import IGNORE, choose_next_sentence, example_generator, mask_tokens
from mmbert.data.tokenizer import Tokenizer


def read_text_corpus(path: str | os.PathLike) -> list[list[str]]:
    """Documents (lists of sentences) of a corpus file: one sentence per line, blank lines between
    documents; surrounding whitespace is stripped. Refuses a missing, non-UTF-8 or empty file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such corpus file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.start})") from None
    documents: list[list[str]] = [[]]
    for line in text.splitlines():
        line = line.strip()
        if not line:
            if documents[-1]:
                documents.append([])
            continue
        documents[-1].append(line)
    documents = [d for d in documents if d]
    if not documents:
        raise ValueError(f"{path}: the corpus holds no sentence")
    return documents


@dataclass
class TextExample:
    """One corrupted text example (unpadded): ids / segment ids (T,), MLM labels (T,), NSP label or None."""

    index: int
    text_ids: Tensor
    segment_ids: Tensor
    mlm_labels: Tensor
    pair_label: int | None = None


def collate_text(examples: Sequence[TextExample], pad_token_id: int = 0) -> Batch:
    """Text examples -> a text-only ``Batch`` (no regions): padded ids, masks, MLM labels, NSP labels."""
    if not examples:
        raise ValueError("cannot collate an empty list of text examples")
    text_ids, text_mask = pad_1d([e.text_ids for e in examples], pad_token_id)
    segment_ids, _ = pad_1d([e.segment_ids for e in examples], 0)
    mlm_labels, _ = pad_1d([e.mlm_labels for e in examples], IGNORE)
    batch = Batch(text_ids=text_ids, text_mask=text_mask, segment_ids=segment_ids, mlm_labels=mlm_labels)
    if all(e.pair_label is not None for e in examples):
        batch.pair_labels = torch.tensor([e.pair_label for e in examples], dtype=torch.long)
    batch.meta = {"indices": [e.index for e in examples]}
    return batch


class _TextDataset(Dataset):
    """Shared corpus bookkeeping and masking of the two text datasets."""

    def __init__(
        self,
        documents: Sequence[Sequence[str]],
        tokenizer: Tokenizer,
        max_length: int,
        seed: int = 0,
        mlm_prob: float = 0.15,
        whole_word: bool = False,
        word_action: bool = False,
        dynamic: bool = True,
    ) -> None:
        self.documents = [list(d) for d in documents if len(d)]
        if not self.documents:
            raise ValueError("a text corpus needs at least one non-empty document")
        self.tokenizer, self.max_length = tokenizer, max_length
        self.seed, self.epoch, self.dynamic = seed, 0, dynamic
        self.mlm_prob, self.whole_word, self.word_action = mlm_prob, whole_word, word_action
        # (document, sentence) of every sentence, in corpus order: example i is sentence i
        self.positions = [(d, s) for d, doc in enumerate(self.documents) for s in range(len(doc))]
        self.special = torch.tensor(sorted(tokenizer.special_ids), dtype=torch.long)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.positions)

    @property
    def collate(self) -> partial:
        return partial(collate_text, pad_token_id=self.tokenizer.pad_id)

    def _generator(self, index: int) -> torch.Generator:
        return example_generator(self.seed, self.epoch if self.dynamic else 0, index)

    def _mask(self, index: int, enc, g: torch.Generator, pair_label: int | None) -> TextExample:
        ids = torch.tensor(enc.ids, dtype=torch.long)
        masked, labels = mask_tokens(
            ids, ~torch.isin(ids, self.special), self.tokenizer.mask_id, self.tokenizer.vocab_size, g,
            self.mlm_prob, word_ids=enc.word_ids if self.whole_word else None, word_action=self.word_action,
        )  # fmt: skip
        return TextExample(index, masked, torch.tensor(enc.segment_ids, dtype=torch.long), labels, pair_label)


class NextSentenceDataset(_TextDataset):
    """BERT's pre-training pairs (see the module docstring): sentence A, next or random sentence B."""

    def __init__(self, documents: Sequence[Sequence[str]], tokenizer: Tokenizer, max_length: int = 128,
                 seed: int = 0, mlm_prob: float = 0.15, nsp_prob: float = 0.5, whole_word: bool = False,
                 dynamic: bool = True) -> None:  # fmt: skip
        super().__init__(documents, tokenizer, max_length, seed, mlm_prob, whole_word, False, dynamic)
        if len(self.documents) < 2:
            raise ValueError("next-sentence prediction needs a corpus of at least two documents")
        self.nsp_prob = nsp_prob

    def __getitem__(self, index: int) -> TextExample:
        g = self._generator(index)
        d, s = self.positions[index]
        second, label = choose_next_sentence(self.documents, d, s, g, self.nsp_prob)
        enc = self.tokenizer.encode(self.documents[d][s], second, max_length=self.max_length)
        return self._mask(index, enc, g, label)


class TextMLMDataset(_TextDataset):
    """A text-only MLM stream (see the module docstring): consecutive sentences up to ``max_length``."""

    def __getitem__(self, index: int) -> TextExample:
        g = self._generator(index)
        d, s = self.positions[index]
        doc = self.documents[d]
        text, budget = doc[s], self.max_length - 2
        used = len(self.tokenizer.tokenize(text))
        for nxt in doc[s + 1 :]:
            more = len(self.tokenizer.tokenize(nxt))
            if used + more > budget:
                break
            text, used = f"{text} {nxt}", used + more
        return self._mask(index, self.tokenizer.encode(text, max_length=self.max_length), g, None)


class TextStreamMixer(Dataset):
    """``main`` (a pre-training dataset) with ``text`` (a text-only dataset) mixed in by ``ratio``.

    The trainer asks ``step_keys(step, indices)``: the main examples' keys (through ``main.step_keys``
    when it has a task schedule) plus ``round(ratio x len(indices))`` text examples drawn without
    replacement as a function of (seed, step), each micro-batch of the step (every rank, every
    accumulation step) its own slice of that draw. ``collate`` puts the text examples in ``batch.text_batch``.
    """

    def __init__(self, main: Dataset, text: Dataset, ratio: float = 1.0, seed: int = 0) -> None:
        if ratio <= 0:
            raise ValueError(f"the text-only stream's ratio must be positive, got {ratio}")
        if not hasattr(main, "collate") or not hasattr(text, "collate"):
            raise TypeError("both datasets need a ``collate`` property (PretrainingDataset, TextMLMDataset)")
        self.main, self.text, self.ratio, self.seed = main, text, float(ratio), seed

    def __len__(self) -> int:
        return len(self.main)  # an epoch is an epoch of the main (caption) data

    def set_epoch(self, epoch: int) -> None:
        for d in (self.main, self.text):
            if hasattr(d, "set_epoch"):
                d.set_epoch(epoch)

    def text_indices(self, step: int, count: int, part: int = 0, parts: int = 1) -> list[int]:
        """Text examples of micro-batch ``part`` of ``parts`` (rank x grad_accum slots) at ``step``: slot
        ``part`` of one draw of ``count x parts`` per step, a function of (seed, step) alone, so the
        slots of a step never repeat an example (while the text corpus has enough) and a resumed run
        draws the same ones."""
        if not 0 <= part < parts:
            raise ValueError(f"micro-batch slot {part} is outside 0 .. {parts - 1}")
        state = np.random.SeedSequence([self.seed, int(step), 0x7E47]).generate_state(1, np.uint64)[0]
        g = torch.Generator().manual_seed(int(state) & ((1 << 63) - 1))
        n, total = len(self.text), count * parts
        draw = torch.randperm(n, generator=g)[:total] if total <= n else torch.randint(0, n, (total,), generator=g)
        return draw[part * count : (part + 1) * count].tolist()

    def _keys(self, step: int, indices: Sequence[Any], main_keys, part: int, parts: int) -> list[tuple[str, Any]]:
        keys = main_keys(step, indices) if main_keys is not None else list(indices)
        count = max(1, round(self.ratio * len(indices)))
        return [("main", k) for k in keys] + [("text", j) for j in self.text_indices(step, count, part, parts)]

    def step_keys(self, step: int, indices: Sequence[Any], part: int = 0, parts: int = 1) -> list[tuple[str, Any]]:
        """The trainer's hook; ``part`` / ``parts``: this micro-batch's slot among the step's
        ``world_size x grad_accum`` micro-batches (``rank x grad_accum + micro-batch``)."""
        return self._keys(step, indices, getattr(self.main, "step_keys", None), part, parts)

    def eval_keys(self, round_: int, indices: Sequence[Any], part: int = 0, parts: int = 1) -> list[tuple[str, Any]]:
        return self._keys(round_, indices, getattr(self.main, "eval_keys", None), part, parts)

    def __getitem__(self, key: tuple[str, Any]) -> tuple[str, Any]:
        if not (isinstance(key, tuple) and len(key) == 2 and key[0] in ("main", "text")):
            raise KeyError(f"a mixed dataset is read by ('main' | 'text', key), got {key!r}")
        source, inner = key
        return source, (self.main if source == "main" else self.text)[inner]

    @property
    def collate(self) -> partial:
        return partial(collate_mixed, main=self.main.collate, text=self.text.collate)


def collate_mixed(items: Sequence[tuple[str, Any]], main, text) -> Batch:
    """(source, example) pairs -> the main batch with ``text_batch`` holding the text-only examples."""
    mains = [e for s, e in items if s == "main"]
    texts = [e for s, e in items if s == "text"]
    if not mains:
        raise ValueError("a mixed batch needs at least one example of the main (caption) data")
    batch = main(mains)
    if texts:
        if not any(f.name == "text_batch" for f in fields(batch)):
            raise TypeError(f"{type(batch).__name__} has no text_batch field to carry the text-only examples")
        batch.text_batch = text(texts)
    return batch
