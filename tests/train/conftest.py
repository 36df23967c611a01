"""Trainer tests run tiny models: one intra-op thread is fastest, and on a loaded 2-core machine two
threads spin against each other (measured: 33 ms vs 640 ms per tiny ViLBERT step)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
