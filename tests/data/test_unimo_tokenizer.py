"""UNIMO's tokenizer on the released files: ids computed by hand from encoder.json / vocab.bpe / vocab.txt."""

from __future__ import annotations

import json

import pytest
import regex
from helpers import fixture_dir

from mmbert.data.unimo_tokenizer import UnimoTokenizer

SENTENCES = [
    "A man riding a horse on the beach.",
    "Two dogs don't play; they're sleeping   under 3 trees!",
    "Café naïve — 東京 🙂 über",
    " leading space and\nnew line",
]


def byte_symbols() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    table, extra = {b: chr(b) for b in printable}, 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def reference_ids(text: str, files) -> list[int]:
    """GPT-2 BPE written out (lowest-rank merge first), then line lookup in vocab.txt."""
    encoder = json.loads((files / "unimo_en.encoder.json").read_text(encoding="utf-8"))
    merges = (files / "unimo_en.vocab.bpe").read_text(encoding="utf-8").split("\n")[1:-1]
    rank = {tuple(m.split()): i for i, m in enumerate(merges)}
    table = (files / "unimo_en.vocab.txt").read_text(encoding="utf-8").split("\n")
    line_of = {tok: i for i, tok in enumerate(table)}
    pattern = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
    symbols = byte_symbols()
    out = []
    for piece in regex.findall(pattern, text):
        word = [symbols[b] for b in piece.encode("utf-8")]
        while len(word) > 1:
            pairs = [(rank.get((a, b), float("inf")), i) for i, (a, b) in enumerate(zip(word, word[1:]))]
            best, _ = min(pairs)
            if best == float("inf"):
                break
            a, b = merges[best].split()
            merged, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and word[i] == a and word[i + 1] == b:
                    merged.append(a + b)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        out += [line_of[str(encoder[w])] for w in word]
    return out


@pytest.fixture(scope="module")
def tok():
    return UnimoTokenizer.from_pretrained(fixture_dir("unimo"))


def test_special_ids_follow_the_table(tok):
    assert (tok.cls_id, tok.pad_id, tok.sep_id, tok.unk_id) == (0, 1, 2, 3)
    assert tok.mask_id == tok.vocab_size - 1 == 50264
    assert (tok.single_modal_id, tok.multi_modal_id) == (50261, 50262)


@pytest.mark.parametrize("text", SENTENCES)
def test_ids_match_the_hand_computed_ones(tok, text):
    expected = reference_ids(text, fixture_dir("unimo"))
    assert tok.text_ids(text) == expected
    assert tok.encode(text).ids == [0, *expected, 2]
    assert tok.decode(tok.encode(text).ids) == text


def test_known_ids(tok):
    # "the" with a leading space is GPT-2 id 262, which vocab.txt lists at line 5 (UNIMO id 5); "." is 13 -> 4
    assert tok.text_ids(" the.") == [5, 4]


def test_pairs_padding_and_truncation(tok):
    batch = tok(["a cat", "a dog on a mat"], ["sleeps", None])
    assert batch["text_ids"][0].tolist()[:2] == [0, tok.text_ids("a")[0]]
    assert batch["text_ids"][0].tolist().count(2) == 2
    first = 3 + len(tok.text_ids("a cat")) + len(tok.text_ids("sleeps"))
    second = 2 + len(tok.text_ids("a dog on a mat"))
    assert batch["text_mask"].sum(1).tolist() == [first, second]
    assert set(batch["text_ids"][0, first:].tolist()) <= {1}  # [PAD]
    assert len(tok.encode("a dog on a mat", "sleeps soundly", max_length=6).ids) == 6
    with pytest.raises(ValueError, match="leaves no room"):
        tok.encode("a", "b", max_length=3)


def test_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"expected exactly one \*encoder.json"):
        UnimoTokenizer.from_pretrained(tmp_path)
