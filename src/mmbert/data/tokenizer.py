"""WordPiece tokenisation over the ``tokenizers`` library, giving exactly BERT's ids.

Reads a directory with ``vocab.txt`` and/or ``tokenizer.json``; lower-casing, accent stripping and
Chinese-character splitting follow ``tokenizer_config.json`` as Hugging Face does. Any fixed padding or
truncation stored in ``tokenizer.json`` is dropped: padding is to the longest item of a batch, and
truncation only where the caller asks.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer as _Backend
from tokenizers import decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece
from torch import Tensor

from mmbert.atomic import atomic_write, atomic_write_text

SPECIAL_TOKENS = {"unk": "[UNK]", "sep": "[SEP]", "pad": "[PAD]", "cls": "[CLS]", "mask": "[MASK]"}


@dataclass
class Encoding:
    """One (possibly paired) text: ids with [CLS]/[SEP], segment ids (0 first text, 1 second), tokens."""

    ids: list[int]
    segment_ids: list[int]
    tokens: list[str]
    word_ids: list[int | None]


_UNUSED = re.compile(r"\[unused\d+\]")


class BatchEncoder:
    """Batch encoding with padding, over a tokenizer's ``encode_batch`` and ``pad_id``: shared by BERT's
    WordPiece ``Tokenizer`` and UNIMO's BPE tokenizer."""

    pad_id: int

    def encode_batch(
        self, texts: Sequence[str], pairs: Sequence[str] | None = None, max_length: int | None = None
    ) -> list[Encoding]:
        """Texts (and their pairs, one each) -> encodings, ``max_length`` truncating each."""
        if isinstance(texts, str):
            raise TypeError("encode_batch takes a list of texts; use encode() for one")
        if pairs is not None and len(pairs) != len(texts):
            raise ValueError(f"got {len(texts)} texts but {len(pairs)} pairs")
        return self.encode_many(texts, pairs, max_length)

    def encode_many(self, texts: Sequence[str], pairs: Sequence[str] | None, max_length: int | None) -> list[Encoding]:
        """``encode_batch`` on checked arguments (each tokenizer implements it)."""
        raise NotImplementedError

    def __call__(
        self,
        texts: str | Sequence[str],
        pairs: str | Sequence[str] | None = None,
        max_length: int | None = None,
    ) -> dict[str, Tensor]:
        """Batch-encode and pad to the longest: ``text_ids`` (B, T), ``text_mask`` (bool), ``segment_ids``."""
        if isinstance(texts, str):
            texts = [texts]
            pairs = [pairs] if isinstance(pairs, str) else pairs
        encs = self.encode_batch(texts, pairs, max_length)
        return self.pad([e.ids for e in encs], [e.segment_ids for e in encs])

    def pad(
        self, ids: Sequence[Sequence[int]], segment_ids: Sequence[Sequence[int]] | None = None
    ) -> dict[str, Tensor]:
        longest = max((len(x) for x in ids), default=0)
        text_ids = torch.full((len(ids), longest), self.pad_id, dtype=torch.long)
        segments = torch.zeros((len(ids), longest), dtype=torch.long)
        mask = torch.zeros((len(ids), longest), dtype=torch.bool)
        for i, row in enumerate(ids):
            text_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, : len(row)] = True
            if segment_ids is not None:
                segments[i, : len(row)] = torch.tensor(segment_ids[i], dtype=torch.long)
        return {"text_ids": text_ids, "text_mask": mask, "segment_ids": segments}


class Tokenizer(BatchEncoder):
    """BERT WordPiece tokenizer. ``tok(texts)`` returns padded ``text_ids``, ``text_mask``, ``segment_ids``."""

    def __init__(self, backend: _Backend, model_max_length: int = 512) -> None:
        self.backend = backend
        self.backend.no_padding()
        self.backend.no_truncation()
        self.model_max_length = model_max_length
        vocab = backend.get_vocab()
        missing = [t for t in SPECIAL_TOKENS.values() if t not in vocab]
        if missing:
            raise ValueError(f"vocabulary lacks the special tokens {missing}")
        self.unk_id, self.sep_id, self.pad_id, self.cls_id, self.mask_id = (
            vocab[SPECIAL_TOKENS[k]] for k in ("unk", "sep", "pad", "cls", "mask")
        )
        self.special_ids = {self.unk_id, self.sep_id, self.pad_id, self.cls_id, self.mask_id}

    # construction -----------------------------------------------------------------------------------
    @classmethod
    def from_vocab(
        cls,
        vocab_file: str | os.PathLike,
        lowercase: bool = True,
        strip_accents: bool | None = None,
        handle_chinese_chars: bool = True,
        model_max_length: int = 512,
    ) -> Tokenizer:
        """Build BERT's pipeline around a ``vocab.txt`` (one token per line, id = line number)."""
        vocab_file = Path(vocab_file)
        if not vocab_file.exists():
            raise FileNotFoundError(f"{vocab_file}: vocabulary file not found")
        lines = vocab_file.read_text(encoding="utf-8").split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        vocab = {tok: i for i, tok in enumerate(lines)}
        missing = [t for t in SPECIAL_TOKENS.values() if t not in vocab]
        if missing:
            raise ValueError(f"{vocab_file}: vocabulary lacks the special tokens {missing}")
        backend = _Backend(WordPiece(vocab, unk_token=SPECIAL_TOKENS["unk"], max_input_chars_per_word=100))
        backend.normalizer = normalizers.BertNormalizer(
            clean_text=True,
            handle_chinese_chars=handle_chinese_chars,
            strip_accents=strip_accents,
            lowercase=lowercase,
        )
        backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        backend.decoder = decoders.WordPiece(prefix="##")
        _set_template(backend)
        return cls(backend, model_max_length)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> Tokenizer:
        """Load from a directory holding ``tokenizer.json`` or ``vocab.txt`` (+ ``tokenizer_config.json``)."""
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: not a directory (expected vocab.txt or tokenizer.json inside)")
        cfg_file = path / "tokenizer_config.json"
        cfg = json.loads(cfg_file.read_text()) if cfg_file.exists() else {}
        lowercase = bool(cfg.get("do_lower_case", True))
        strip_accents = cfg.get("strip_accents")
        chinese = bool(cfg.get("tokenize_chinese_chars", True))
        max_len = (
            int(cfg.get("model_max_length", 512)) if int(cfg.get("model_max_length", 512)) < 10**6 else 512
        )
        if (path / "tokenizer.json").exists():
            backend = _Backend.from_file(str(path / "tokenizer.json"))
            if cfg and isinstance(backend.normalizer, normalizers.BertNormalizer):
                # tokenizer_config.json wins over the normaliser stored in tokenizer.json, as in HF.
                backend.normalizer = normalizers.BertNormalizer(
                    clean_text=True,
                    handle_chinese_chars=chinese,
                    strip_accents=strip_accents,
                    lowercase=lowercase,
                )
            _set_template(backend)
            return cls(backend, max_len)
        if (path / "vocab.txt").exists():
            return cls.from_vocab(path / "vocab.txt", lowercase, strip_accents, chinese, max_len)
        raise FileNotFoundError(
            f"{path}: no tokenizer files; expected vocab.txt or tokenizer.json "
            f"(found: {sorted(p.name for p in path.iterdir())})"
        )

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        atomic_write(path / "tokenizer.json", lambda tmp: self.backend.save(tmp))
        vocab = sorted(self.backend.get_vocab().items(), key=lambda kv: kv[1])
        atomic_write_text(path / "vocab.txt", "".join(tok + "\n" for tok, _ in vocab))
        return path

    # encoding ---------------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size()

    def word_piece_range(self) -> tuple[int, int]:
        """(lo, hi): the ids after the last special or ``[unusedN]`` token, up to the vocabulary's end —
        the ids UNITER draws random MLM replacements from (its ``v_range``; 999..28995 for bert-base-cased).
        The special tokens sit at the start of BERT's vocabularies, as they do here."""
        vocab = self.backend.get_vocab()
        reserved = [i for t, i in vocab.items() if i in self.special_ids or _UNUSED.fullmatch(t)]
        lo = max(reserved) + 1
        if lo >= self.vocab_size:
            raise ValueError("the vocabulary has no word pieces after its special tokens")
        return lo, self.vocab_size

    def tokenize(self, text: str) -> list[str]:
        return self.backend.encode(text, add_special_tokens=False).tokens

    def convert_tokens_to_ids(self, tokens: Sequence[str]) -> list[int]:
        return [
            self.backend.token_to_id(t) if self.backend.token_to_id(t) is not None else self.unk_id
            for t in tokens
        ]

    def encode(self, text: str, pair: str | None = None, max_length: int | None = None) -> Encoding:
        """One text (or pair) with [CLS] ... [SEP] (... [SEP]); ``max_length`` truncates longest-first."""
        return self.encode_batch([text], None if pair is None else [pair], max_length)[0]

    def encode_many(self, texts: Sequence[str], pairs: Sequence[str] | None, max_length: int | None) -> list[Encoding]:
        if max_length is not None:
            if max_length < (4 if pairs is not None else 3):
                raise ValueError(
                    f"max_length={max_length} leaves no room for text between the special tokens"
                )
            self.backend.enable_truncation(max_length, strategy="longest_first")
        try:
            # An empty second text counts as none, as in Hugging Face ([CLS] a [SEP], not [CLS] a [SEP] [SEP]).
            inputs = list(texts) if pairs is None else [(t, p) if p else t for t, p in zip(texts, pairs)]
            encs = self.backend.encode_batch(inputs, add_special_tokens=True)
        finally:
            self.backend.no_truncation()
        return [Encoding(e.ids, e.type_ids, e.tokens, e.word_ids) for e in encs]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)


def _set_template(backend: _Backend) -> None:
    cls_id, sep_id = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
    if cls_id is None or sep_id is None:
        raise ValueError("vocabulary lacks the special tokens [CLS] or [SEP]")
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0",
        pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
