"""Helpers of the Hugging Face converter tests (importable as ``convert.hf_helpers``)."""

from __future__ import annotations

import torch
import transformers

import mmbert


def hf_reference(cls: type, config: transformers.PretrainedConfig, path=None, seed: int = 0):
    """A transformers model of ``cls`` with non-trivial values everywhere (HF initialises biases and
    LayerNorms to 0/1), in eval mode; saved to ``path`` when given."""
    torch.manual_seed(seed)
    ref = cls(config).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    if path is not None:
        ref.save_pretrained(path)
    return ref


def assert_export_round_trip(ref, src, tmp_path):
    """``ref`` saved at ``src`` -> mmbert -> exported to transformers -> mmbert again: every transformers
    weight and every mmbert weight comes back bit-exact. Returns (mmbert's model, the exported one)."""
    ours = mmbert.load_pretraining(src)
    mmbert.export_hf(ours, tmp_path / "hf")
    again = type(ref).from_pretrained(tmp_path / "hf").eval()
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(again.state_dict()[k], v, atol=0, rtol=0, msg=k)
    back = mmbert.load_pretraining(tmp_path / "hf")
    for (k, a), (_, b) in zip(ours.state_dict().items(), back.state_dict().items()):
        assert torch.equal(a, b), k
    return ours, again
