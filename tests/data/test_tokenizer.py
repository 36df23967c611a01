"""Our tokenizer gives exactly the ids of transformers.BertTokenizerFast on the same directory."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

import mmbert

TEXTS = [
    "Hello, world! How's it going?",
    "Café déjà vu — naïve façade; ÅNGSTRÖM",
    "我爱自然语言处理。東京は晴れです",
    "Emoji 😀🚀 and ✨ symbols ™ ©",
    "Punctuation!!!...???---((([[[{{{}}}]]])))",
    "   multiple   spaces\tand\nnewlines  ",
    "unaffable supercalifragilisticexpialidocious" * 3,
    "",
]


def check_same(path, max_length=None):
    ours = mmbert.Tokenizer.from_pretrained(path)
    ref = transformers.BertTokenizerFast.from_pretrained(path)
    for text in TEXTS:
        r = ref(text, truncation=max_length is not None, max_length=max_length)
        o = ours.encode(text, max_length=max_length)
        assert o.ids == r["input_ids"], text
        assert o.segment_ids == r["token_type_ids"], text
    for a, b in zip(TEXTS, reversed(TEXTS)):
        r = ref(a, b, truncation="longest_first" if max_length else False, max_length=max_length)
        o = ours.encode(a, b, max_length=max_length)
        assert o.ids == r["input_ids"], (a, b)
        assert o.segment_ids == r["token_type_ids"], (a, b)
    return ours, ref


def test_minilm_directory_matches_and_ignores_stored_padding(minilm_path):
    ours, ref = check_same(minilm_path)
    check_same(minilm_path, max_length=12)
    enc = ours.encode("short")
    assert len(enc.ids) == 3  # tokenizer.json pads to 128: that must not leak in


def write_vocab_dir(tmp_path, lowercase, strip_accents=None, with_config=True):
    words = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        "hello",
        "Hello",
        "world",
        "café",
        "cafe",
        "Café",
        "##s",
        "un",
        "##aff",
        "##able",
        ",",
        "!",
        "我",
        "爱",
        "é",
        "e",
        "c",
        "a",
        "f",
        "##a",
        "##f",
        "##e",
        "##é",
    ]
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n")
    if with_config:
        cfg = {"do_lower_case": lowercase, "strip_accents": strip_accents, "tokenize_chinese_chars": True}
        (tmp_path / "tokenizer_config.json").write_text(json.dumps(cfg))
    return tmp_path


TOY = ["Hello, world!", "hello worlds", "Café cafe CAFÉ", "unaffable", "我爱", "Hello café!"]


@pytest.mark.parametrize("lowercase,strip", [(True, None), (False, None), (False, True), (True, False)])
def test_vocab_only_directories_follow_the_config(tmp_path, lowercase, strip):
    path = write_vocab_dir(tmp_path / "v", lowercase, strip)
    ours = mmbert.Tokenizer.from_pretrained(path)
    ref = transformers.BertTokenizerFast.from_pretrained(path)
    for text in TOY:
        assert ours.encode(text).ids == ref(text)["input_ids"], text


def test_batch_encoding_pads_to_longest_with_bool_mask(minilm_path):
    tok = mmbert.Tokenizer.from_pretrained(minilm_path)
    batch = tok(["a b c d e", "a"], ["x", "y z"])
    assert batch["text_ids"].shape == (2, 9)
    assert batch["text_mask"].dtype == torch.bool
    assert batch["text_mask"].sum(1).tolist() == [9, 6]
    assert batch["text_ids"][1, 6:].tolist() == [tok.pad_id] * 3
    assert batch["segment_ids"][0].tolist() == [0] * 7 + [1] * 2
    assert tok.decode(batch["text_ids"][0].tolist()) == "a b c d e x"
    assert tok.mask_id == 103 and tok.cls_id == 101 and tok.vocab_size == 30522


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="expected vocab.txt or tokenizer.json"):
        mmbert.Tokenizer.from_pretrained(tmp_path)
    (tmp_path / "vocab.txt").write_text("a\nb\n")
    with pytest.raises(ValueError, match="lacks the special tokens"):
        mmbert.Tokenizer.from_pretrained(tmp_path)


def test_save_and_reload(tmp_path, minilm_path):
    tok = mmbert.Tokenizer.from_pretrained(minilm_path)
    tok.save(tmp_path / "t")
    again = mmbert.Tokenizer.from_pretrained(tmp_path / "t")
    assert again.encode(TEXTS[1], TEXTS[2]).ids == tok.encode(TEXTS[1], TEXTS[2]).ids
