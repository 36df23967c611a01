from __future__ import annotations

import torch
from torch import nn

from mmbert.nn import MLMHead, MLPClassifier, Pooler, RegionHeads


def test_mlm_head_is_tied_and_gathers_positions():
    emb = nn.Embedding(11, 8)
    head = MLMHead(8, emb).eval()
    assert head.decoder_weight is emb.weight
    assert "word_embeddings.weight" not in head.state_dict() and set(head.state_dict()) == {
        "transform.dense.weight",
        "transform.dense.bias",
        "transform.norm.weight",
        "transform.norm.bias",
        "bias",
    }
    hidden = torch.randn(2, 5, 8)
    positions = torch.zeros(2, 5, dtype=torch.bool)
    positions[0, 1] = positions[1, 3] = True
    full = head(hidden)
    assert full.shape == (2, 5, 11)
    torch.testing.assert_close(head(hidden, positions), full[positions])


def test_pooler_uses_first_token_and_activation():
    p = Pooler(4, 6, "relu")
    h = torch.randn(2, 3, 4)
    torch.testing.assert_close(p(h), torch.relu(p.dense(h[:, 0])))
    t = Pooler(4)
    torch.testing.assert_close(t(h), torch.tanh(t.dense(h[:, 0])))


def test_region_heads_and_classifier_shapes():
    heads = RegionHeads(8, {"class": 7, "feat": 16})
    out = heads(torch.randn(2, 3, 8))
    assert out["class"].shape == (2, 3, 7) and out["feat"].shape == (2, 3, 16)
    assert MLPClassifier(8, 16, 5)(torch.randn(4, 8)).shape == (4, 5)
