"""Helpers shared by the tests (importable as `helpers`: tests/ is on pytest's pythonpath)."""

from __future__ import annotations

import torch


def make_inputs(config, batch: int = 2, text_len: int = 7, regions: int = 5, seed: int = 0) -> dict:
    """Random inputs that fit ``config``: text always; regions when the model has ``region_feat_dim``.
    The second example is padded (3 fewer tokens, 2 fewer regions) so masks are exercised."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, config.vocab_size, (batch, text_len), generator=g)
    mask = torch.ones(batch, text_len, dtype=torch.bool)
    if batch > 1:
        mask[1, text_len - 3 :] = False
        ids[1, text_len - 3 :] = config.pad_token_id
    inputs = {"text_ids": ids, "text_mask": mask, "segment_ids": torch.zeros_like(ids)}
    feat_dim = getattr(config, "region_feat_dim", None)
    if feat_dim:
        feats = torch.randn(batch, regions, feat_dim, generator=g)
        xy = torch.rand(batch, regions, 2, generator=g) * 0.5
        wh = torch.rand(batch, regions, 2, generator=g) * 0.5 + 0.01
        boxes = torch.cat([xy, xy + wh], -1)
        rmask = torch.ones(batch, regions, dtype=torch.bool)
        if batch > 1:
            rmask[1, regions - 2 :] = False
        inputs.update(region_feats=feats, region_boxes=boxes, region_mask=rmask)
    return inputs


def assert_input_refused(preset: str, name: str, corrupt, message: str) -> None:
    """The ``preset`` model on ``make_inputs`` with input ``name`` replaced by ``corrupt(input)`` fails
    with a clear error matching ``message`` (before any index error deep inside)."""
    import pytest

    import mmbert

    model = mmbert.build_model(preset).eval()
    inputs = make_inputs(model.config)
    inputs[name] = corrupt(inputs[name])
    with pytest.raises((ValueError, TypeError), match=message):
        model(**inputs)


def layer_run_order(model, stacks: dict) -> list[str]:
    """The order in which ``model``'s layers run on ``make_inputs``: ``<prefix><index>`` per call, for each
    ``prefix -> layer list`` in ``stacks``."""
    calls: list[str] = []
    for prefix, layers in stacks.items():
        for i, layer in enumerate(layers):
            layer.register_forward_hook(lambda *_, name=f"{prefix}{i}": calls.append(name))
    with torch.no_grad():
        model(**make_inputs(model.config))
    return calls


def encode_with_maps(model, inputs: dict, atol: float = 1e-5, rtol: float = 0.0):
    """``model`` on ``inputs`` with attention maps and without: (with, without). Maps are off by default,
    and asking for them (the slow path) leaves the real tokens' states as they are."""
    with torch.no_grad():
        plain = model(**inputs)
        enc = model(**inputs, output_attentions=True)
    assert plain.attentions is None
    m = inputs["text_mask"]  # real tokens: the fast path skips padding (zeros there)
    torch.testing.assert_close(enc.text[m], plain.text[m], atol=atol, rtol=rtol)
    return enc, plain


def one_masked_region(config, example: int, region: int) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """``make_inputs(config)``, a ``region_masked`` input flagging one region, and ``region_feats`` with
    that region's feature zeroed (what the masked-region models feed in its place, before any learned
    vector)."""
    inputs = make_inputs(config)
    masked = torch.zeros(inputs["region_feats"].shape[:2], dtype=torch.bool)
    masked[example, region] = True
    zeroed = inputs["region_feats"].clone()
    zeroed[example, region] = 0
    return inputs, masked, zeroed


def make_kind_inputs(config, kind: str = "pair", **kwargs) -> dict:
    """``make_inputs`` for one input kind: "pair" (text + regions where the model has them), "text"
    (no region arguments) or "image" (``text_ids=None``) — the unimodal kinds UNIMO takes."""
    inputs = make_inputs(config, **kwargs)
    if kind == "text":
        return {k: v for k, v in inputs.items() if not k.startswith("region_")}
    if kind == "image":
        return {"text_ids": None, **{k: v for k, v in inputs.items() if k.startswith("region_")}}
    if kind != "pair":
        raise ValueError(f"unknown input kind {kind!r}")
    return inputs


def input_kinds(model_class) -> list[str]:
    """The input kinds a model class takes: pairs, plus what it declares in ``unimodal_inputs``."""
    return ["pair", *getattr(model_class, "unimodal_inputs", ())]


def fixture_dir(name: str):
    """``../shared/fixtures/<name>`` relative to the project root; a missing fixture fails loudly."""
    from pathlib import Path

    path = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / name
    if not path.is_dir():
        raise FileNotFoundError(f"fixture directory {path} is missing (tests read ../shared/fixtures)")
    return path
