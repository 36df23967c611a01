"""The tokenizer fixture of the task tests (helpers live in task_fixtures.py)."""

from __future__ import annotations

import pytest
from tasks.task_fixtures import WORDS

from mmbert.data.tokenizer import Tokenizer


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory) -> Tokenizer:
    d = tmp_path_factory.mktemp("vocab")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, ".", ",", "?", "-", "'"]
    (d / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return Tokenizer.from_pretrained(d)
