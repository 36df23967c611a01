"""Every authors' fixture (../shared/fixtures/authors/, found by listing) loads through
``mmbert.load_pretraining(checkpoint, config=...)`` and reproduces every stored output within 1e-5;
``mmbert convert`` of the same file gives identical outputs; bad files fail with clear messages."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from authors_fixtures import (
    TOLERANCE,
    compare,
    fixture_dirs,
    load,
    load_options,
    read_fixture,
)

import mmbert
from mmbert.convert import CheckpointError

pytestmark = pytest.mark.authors

FOLDERS = fixture_dirs()
IDS = [str(p.relative_to(p.parents[1] if p.parent.name == "volta" else p.parent)) for p in FOLDERS]


CASES = [pytest.param(f, id=i) for f, i in zip(FOLDERS, IDS)]


@pytest.mark.parametrize("folder", CASES)
def test_fixture_outputs_match_the_authors(folder):
    fx = read_fixture(folder)
    diffs = compare(fx)
    worst = {k: v for k, v in diffs.items() if v > TOLERANCE}
    assert not worst, f"{fx.name}: outputs beyond {TOLERANCE}: {worst}"


@pytest.mark.parametrize("folder", CASES)
def test_detected_source_and_report(folder):
    fx = read_fixture(folder)
    model = load(fx)
    assert model.source == fx.meta["source"].split("/")[0].removesuffix("-multi-task")
    report = model.source_report
    assert report.file == str(fx.checkpoint)
    encoder = mmbert.load_model(fx.checkpoint, config=fx.config, **load_options(fx))
    assert encoder.source == model.source
    for a, b in zip(encoder.state_dict().values(), model.encoder.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("folder", CASES)
def test_convert_command_round_trip(folder, tmp_path):
    fx = read_fixture(folder)
    before = compare(fx)
    dst = tmp_path / "converted"
    cmd = [
        sys.executable,
        "-m",
        "mmbert",
        "convert",
        str(fx.checkpoint),
        str(dst),
        "--config",
        str(fx.config),
    ]
    for k, v in load_options(fx).items():
        cmd += [f"--{k.replace('_', '-')}", str(v).lower() if isinstance(v, bool) else str(v)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "source:" in done.stdout
    converted = mmbert.load_pretraining(dst)
    after = compare(fx, converted)
    assert after == before  # identical, not merely close


def test_unknown_layout_lists_layouts_and_keys(tmp_path):
    f = tmp_path / "pytorch_model_1.bin"
    torch.save({"encoder.blocks.0.weight": torch.zeros(2)}, f)
    with pytest.raises(CheckpointError) as e:
        mmbert.load_model(f)
    msg = str(e.value)
    assert "matches no known checkpoint layout" in msg and "encoder.blocks.0.weight" in msg
    for name in ("vilbert", "uniter", "lxmert"):
        assert name in msg


def test_unexpected_keys_are_named(tmp_path):
    fx = read_fixture(next(f for f in FOLDERS if (f / "Epoch20_LXRT.pth").exists()))
    state = torch.load(fx.checkpoint, weights_only=True)
    state["module.bert.encoder.extra_layer.weight"] = torch.zeros(3)
    f = tmp_path / "Epoch20_LXRT.pth"
    torch.save(state, f)
    with pytest.raises(CheckpointError, match="extra_layer.weight"):
        mmbert.load_pretraining(f, config=fx.config)


def test_missing_weight_is_named(tmp_path):
    fx = read_fixture(next(f for f in FOLDERS if (f / "Epoch20_LXRT.pth").exists()))
    state = torch.load(fx.checkpoint, weights_only=True)
    del state["module.bert.encoder.x_layers.0.visn_output.dense.weight"]
    f = tmp_path / "Epoch20_LXRT.pth"
    torch.save(state, f)
    with pytest.raises(CheckpointError, match="x_layers.0.visn_output.dense.weight"):
        mmbert.load_model(f, config=fx.config)


def test_lxmert_layer_count_option_must_agree():
    fx = read_fixture(next(f for f in FOLDERS if (f / "Epoch20_LXRT.pth").exists()))
    with pytest.raises(CheckpointError, match="--llayers 9"):
        mmbert.load_model(fx.checkpoint, config=fx.config, llayers=9)


def test_config_required_where_the_file_has_none(tmp_path):
    fx = read_fixture(next(f for f in FOLDERS if (f / "Epoch20_LXRT.pth").exists()))
    f = tmp_path / fx.checkpoint.name
    f.write_bytes(fx.checkpoint.read_bytes())
    with pytest.raises(CheckpointError, match="pass config="):
        mmbert.load_model(f)


def test_inspect_shows_the_detected_source():
    fx = read_fixture(next(f for f in FOLDERS if (f / "Epoch20_LXRT.pth").exists()))
    done = subprocess.run(
        [sys.executable, "-m", "mmbert", "inspect", str(fx.checkpoint), "--config", str(fx.config)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "detected source: lxmert" in done.stdout
    assert "'module.' prefix (DataParallel/DDP) stripped" in done.stdout


@pytest.mark.parametrize("model", ["vilbert", "visualbert", "uniter", "lxmert", "vl-bert"])
def test_ctrl_presets_are_voltas_controlled_configs(model):
    """The VOLTA loader reads ctrl_<model>[_base].json's sublayer lists (recorded in the fixture's meta.json)
    at base sizes into exactly the ``ctrl_<model>`` preset."""
    from mmbert.convert import volta
    from mmbert.models import MODELS

    names = (f"volta/ctrl_{model}_base", f"volta/ctrl_{model}")
    fx = read_fixture(next(f for f in FOLDERS if read_fixture(f).meta["source"] in names))
    raw = json.loads(fx.config.read_text())
    raw.update(fx.meta["config"]["original_sublayer_lists"])
    raw.update(
        hidden_size=768,
        num_attention_heads=12,
        intermediate_size=3072,
        v_hidden_size=768,
        v_num_attention_heads=12,
        v_intermediate_size=3072,
        v_feature_size=2048,
        pooler_size=1024,
        v_pooler_size=1024,
        vocab_size=30522,
        max_position_embeddings=512,
    )
    if "v_coordinate_embeddings_dim" in raw:  # VL-BERT's geometry: v_feature_size / 8 (256 in ctrl_vl-bert_base.json)
        raw["v_coordinate_embeddings_dim"] = 256
    config, _ = volta.config_from(raw, {}, f"ctrl_{model}_base.json", {})
    assert config == MODELS[f"ctrl_{model.replace('-', '_')}"]()
