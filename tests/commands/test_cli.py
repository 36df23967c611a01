from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import transformers

import mmbert
from mmbert.cli import main


def test_help_everywhere(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    for command in ("models", "inspect", "convert", "demo"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert command in capsys.readouterr().out


def test_models_lists_presets_with_counts(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "bert_base" in out and "109,482,240" in out


def test_inspect_preset_and_directory(capsys, tmp_path):
    assert main(["inspect", "bert_tiny", "--shapes"]) == 0
    out = capsys.readouterr().out
    assert "layers.1: Block" in out and "total" in out and "embeddings.word.weight" in out
    mmbert.build_model("bert_tiny").save(tmp_path / "m")
    assert main(["inspect", str(tmp_path / "m")]) == 0
    assert main(["inspect", "no_such_model"]) == 1
    assert "neither a directory nor a preset" in capsys.readouterr().err


def test_convert_to_hf_and_back(tmp_path, capsys):
    torch.manual_seed(0)
    cfg = transformers.BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=20
    )
    transformers.BertForPreTraining(cfg).save_pretrained(tmp_path / "hf")
    assert main(["convert", str(tmp_path / "hf"), str(tmp_path / "ours")]) == 0
    assert "encoder + pre-training heads" in capsys.readouterr().out
    assert main(["convert", str(tmp_path / "ours"), str(tmp_path / "hf2"), "--to", "hf"]) == 0
    ref = transformers.BertForPreTraining.from_pretrained(tmp_path / "hf").eval()
    back = transformers.BertForPreTraining.from_pretrained(tmp_path / "hf2").eval()
    ids = torch.randint(0, 50, (2, 6))
    with torch.no_grad():
        assert torch.equal(ref(ids).prediction_logits, back(ids).prediction_logits)
    assert main(["convert", str(tmp_path / "missing"), str(tmp_path / "x")]) == 1
    assert "not a directory" in capsys.readouterr().err


def test_demo_quick_runs_end_to_end(tmp_path):
    """`mmbert demo --quick`: the whole pipeline (world, pre-training, fine-tuning, retrieval, report) as
    `make demo` runs it, on a seconds-long budget; prints the results table."""
    out = subprocess.run(
        [sys.executable, "-m", "mmbert", "demo", "--quick", "--out", str(tmp_path / "demo"),
         "--cache", str(tmp_path / "cache")],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "| VQA (val, official accuracy) | mean % | per seed |" in out
    assert "text -> image" in out and "pre-trained" in out
    for name in ("results.json", "report.md", "pretrain_curves.png", "vqa_curves.png"):
        assert (tmp_path / "demo" / name).exists()
