"""Fixtures for the feature-store, caption and dataset tests: small records and a tiny tokenizer."""

from __future__ import annotations

import pytest
from data.feature_fixtures import WORDS, make_region_record

from mmbert.data.batch import RegionFeatures
from mmbert.data.tokenizer import Tokenizer


@pytest.fixture
def feature_records() -> list[RegionFeatures]:
    """Five records with 3..7 regions (different lengths exercise padding)."""
    return [make_region_record(f"COCO_val2014_{i:012d}", n=3 + i, seed=i) for i in range(5)]


@pytest.fixture
def tiny_tokenizer(tmp_path) -> Tokenizer:
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(vocab) + "\n")
    return Tokenizer.from_vocab(path)
