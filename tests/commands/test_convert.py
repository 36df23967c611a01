"""``mmbert convert --to hf`` on every authors' fixture that loads: a directory that ``transformers`` loads
with every weight in place (what it computes is checked per source in tests/convert/test_authors*.py), or a
one-line refusal that says why Hugging Face cannot hold the model, with nothing written."""

from __future__ import annotations

import json

import pytest
from authors_fixtures import fixture_dirs, load_options, read_fixture

from mmbert.cli import main

transformers = pytest.importorskip("transformers")

# Hugging Face has these models; the others (ViLBERT, UNITER, VL-BERT, VOLTA's whole-image VisualBERT) must
# be refused
HF_EXPORTS = {"lxmert": "LxmertForPreTraining", "visualbert": "VisualBertForPreTraining"}
FOLDERS = fixture_dirs()  # every fixture loads (VOLTA's five controlled models included)


@pytest.mark.authors
@pytest.mark.parametrize("folder", FOLDERS, ids=lambda f: f"{f.parent.name}/{f.name}")
def test_to_hf_writes_what_transformers_loads_or_says_why_not(folder, tmp_path, capsys):
    fx = read_fixture(folder)
    dst = tmp_path / "hf"
    argv = ["convert", str(fx.checkpoint), str(dst), "--config", str(fx.config), "--to", "hf"]
    for k, v in load_options(fx).items():
        argv += [f"--{k.replace('_', '-')}", str(v)]
    rc = main(argv)
    out = capsys.readouterr()
    arch = HF_EXPORTS.get(fx.meta["source"])
    if arch is None:
        assert rc == 1
        line = out.err.strip()
        assert line.startswith("mmbert convert: error:") and "Hugging Face" in line, line
        assert not (dst / "model.safetensors").exists() and not (dst / "config.json").exists()
        return
    assert rc == 0, out.err
    assert json.loads((dst / "config.json").read_text())["architectures"] == [arch]
    _, info = getattr(transformers, arch).from_pretrained(dst, output_loading_info=True)
    assert info["missing_keys"] in ([], set()) and info["unexpected_keys"] in ([], set()), info
