"""Trainer tests run tiny models: one intra-op thread is fastest, and on a loaded 2-core machine two
threads spin against each other (measured: 33 ms vs 640 ms per tiny ViLBERT step)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def every_test_on_one_thread(one_thread) -> None:
    """Every trainer test runs under the shared ``one_thread`` fixture (tests/conftest.py)."""
    return one_thread
