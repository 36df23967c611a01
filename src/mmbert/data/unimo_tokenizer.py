"""UNIMO's tokenizer: GPT-2 / RoBERTa byte-level BPE, each BPE id remapped through UNIMO's id table.

The released files (``unimo_en.encoder.json``, ``unimo_en.vocab.bpe``, ``unimo_en.vocab.txt``; see
PaddlePaddle/Research ``NLP/UNIMO/src/model/tokenization.py``): the BPE turns text into GPT-2 ids, and
line i of ``vocab.txt`` holds the BPE id (as a decimal string) whose UNIMO id is i. The table starts with
[CLS] 0, [PAD] 1, [SEP] 2, [UNK] 3 and ends with ``madeupword0000..0002`` and [MASK]; ``madeupword0000``
/ ``0001`` mark single-modal / multi-modal input. The BPE runs in the ``tokenizers`` library; the remap
is a lookup table. Text is not lower-cased (the official tokenizer does not either).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from tokenizers import Tokenizer as _Backend
from tokenizers import decoders, pre_tokenizers
from tokenizers.models import BPE

from mmbert.data.tokenizer import BatchEncoder, Encoding

UNIMO_SPECIAL_TOKENS = {
    "cls": "[CLS]", "pad": "[PAD]", "sep": "[SEP]", "unk": "[UNK]", "mask": "[MASK]",
    "single_modal": "madeupword0000", "multi_modal": "madeupword0001",
}  # fmt: skip


def _find(path: Path, suffix: str) -> Path:
    found = sorted(path.glob(f"*{suffix}"))
    if len(found) != 1:
        raise FileNotFoundError(
            f"{path}: expected exactly one *{suffix} (UNIMO tokenizer files), found {[p.name for p in found]}"
        )
    return found[0]


class UnimoTokenizer(BatchEncoder):
    """``tok(texts)`` returns padded ``text_ids``, ``text_mask``, ``segment_ids`` (all 0) in UNIMO ids:
    ``[CLS] text [SEP]``, or ``[CLS] a [SEP] b [SEP]`` for a pair."""

    def __init__(self, backend: _Backend, table: Sequence[str], model_max_length: int = 512) -> None:
        self.backend = backend
        self.backend.no_padding()
        self.backend.no_truncation()
        self.model_max_length = model_max_length
        self.table = list(table)
        index = {tok: i for i, tok in enumerate(self.table)}
        missing = [t for t in UNIMO_SPECIAL_TOKENS.values() if t not in index]
        if missing:
            raise ValueError(f"UNIMO id table lacks the special tokens {missing}")
        ids = {k: index[t] for k, t in UNIMO_SPECIAL_TOKENS.items()}
        self.cls_id, self.pad_id, self.sep_id, self.unk_id, self.mask_id = (
            ids[k] for k in ("cls", "pad", "sep", "unk", "mask")
        )
        self.single_modal_id, self.multi_modal_id = ids["single_modal"], ids["multi_modal"]
        self.special_ids = set(ids.values())
        bpe_size = backend.get_vocab_size()
        # BPE id -> UNIMO id ([UNK] for a BPE id the table does not list); UNIMO id -> BPE id (-1: special)
        self._to_unimo = torch.full((bpe_size,), self.unk_id, dtype=torch.long)
        self._to_bpe = torch.full((len(self.table),), -1, dtype=torch.long)
        for unimo_id, tok in enumerate(self.table):
            if tok.isdigit():
                bpe_id = int(tok)
                if bpe_id >= bpe_size:
                    raise ValueError(
                        f"UNIMO id table line {unimo_id + 1}: BPE id {bpe_id} >= BPE size {bpe_size}"
                    )
                self._to_unimo[bpe_id] = unimo_id
                self._to_bpe[unimo_id] = bpe_id

    @classmethod
    def from_files(
        cls,
        encoder_json: str | os.PathLike,
        vocab_bpe: str | os.PathLike,
        vocab_txt: str | os.PathLike,
        model_max_length: int = 512,
    ) -> UnimoTokenizer:
        encoder_json, vocab_bpe, vocab_txt = Path(encoder_json), Path(vocab_bpe), Path(vocab_txt)
        for p in (encoder_json, vocab_bpe, vocab_txt):
            if not p.exists():
                raise FileNotFoundError(f"{p}: UNIMO tokenizer file not found")
        try:
            vocab = json.loads(encoder_json.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{encoder_json}: not a JSON BPE encoder: {e}") from e
        lines = vocab_bpe.read_text(encoding="utf-8").split("\n")
        # As the official reader: the first line is "#version", the last is empty.
        merges = []
        for n, line in enumerate(lines[1:], start=2):
            if not line:
                continue
            parts = line.split()
            if len(parts) != 2:
                raise ValueError(f"{vocab_bpe} line {n}: a merge is two symbols, got {line!r}")
            merges.append((parts[0], parts[1]))
        backend = _Backend(BPE(vocab, merges))
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = decoders.ByteLevel()
        table = [line.strip().split("\t")[0] for line in vocab_txt.read_text(encoding="utf-8").split("\n")]
        if table and table[-1] == "":
            table.pop()
        return cls(backend, table, model_max_length)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> UnimoTokenizer:
        """A directory with the released files (``*encoder.json``, ``*vocab.bpe``, ``*vocab.txt``)."""
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: not a directory (expected UNIMO's tokenizer files inside)")
        return cls.from_files(_find(path, "encoder.json"), _find(path, "vocab.bpe"), _find(path, "vocab.txt"))

    # encoding ---------------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return len(self.table)

    def bpe_ids(self, text: str) -> list[int]:
        return self.backend.encode(text, add_special_tokens=False).ids

    def text_ids(self, text: str) -> list[int]:
        """UNIMO ids of ``text`` without special tokens."""
        return self._to_unimo[self.bpe_ids(text)].tolist() if text else []

    def tokenize(self, text: str) -> list[str]:
        return self.backend.encode(text, add_special_tokens=False).tokens

    def encode(self, text: str, pair: str | None = None, max_length: int | None = None) -> Encoding:
        """``[CLS] text [SEP]`` (+ ``pair [SEP]``); ``max_length`` truncates the longer text first."""
        encs = [
            self.backend.encode(t, add_special_tokens=False) for t in ([text] if not pair else [text, pair])
        ]
        ids = [self._to_unimo[e.ids].tolist() if e.ids else [] for e in encs]
        words = [list(e.word_ids) for e in encs]
        toks = [list(e.tokens) for e in encs]
        if max_length is not None:
            budget = max_length - 1 - len(ids)
            if budget < 1:
                raise ValueError(
                    f"max_length={max_length} leaves no room for text between the special tokens"
                )
            while sum(len(x) for x in ids) > budget:
                longest = max(range(len(ids)), key=lambda i: len(ids[i]))
                for seq in (ids, words, toks):
                    seq[longest].pop()
        out_ids, out_words, out_toks = [self.cls_id], [None], ["[CLS]"]
        for i, (seq, w, t) in enumerate(zip(ids, words, toks)):
            offset = 0 if i == 0 else max((x for x in words[0] if x is not None), default=-1) + 1
            out_ids += [*seq, self.sep_id]
            out_words += [*(None if x is None else x + offset for x in w), None]
            out_toks += [*t, "[SEP]"]
        return Encoding(out_ids, [0] * len(out_ids), out_toks, out_words)

    def encode_many(self, texts: Sequence[str], pairs: Sequence[str] | None, max_length: int | None) -> list[Encoding]:
        return [self.encode(t, None if pairs is None else pairs[i], max_length) for i, t in enumerate(texts)]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """UNIMO ids -> text; special tokens are dropped (or written by name)."""
        pieces: list[str] = []
        run: list[int] = []
        for i in ids:
            bpe = int(self._to_bpe[i]) if 0 <= i < len(self.table) else -1
            if bpe >= 0:
                run.append(bpe)
                continue
            if run:
                pieces.append(self.backend.decode(run))
                run = []
            if not skip_special_tokens:
                pieces.append(self.table[i] if 0 <= i < len(self.table) else "[UNK]")
        if run:
            pieces.append(self.backend.decode(run))
        return "".join(pieces)
