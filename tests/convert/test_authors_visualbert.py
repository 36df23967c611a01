"""The original VisualBERT (uclanlp) checkpoint exported to Hugging Face: ``VisualBertForPreTraining``
loads it and, on default inputs, reproduces the authors' fixture outputs, although Hugging Face gives
regions visual token type 1 where the original gives 0 (the two rows of the visual token-type table are
swapped in the written file); reading the directory back gives the original model exactly."""

from __future__ import annotations

import pytest
import torch
from authors_fixtures import TOLERANCE, fixture_dirs, read_fixture

import mmbert
from mmbert.cli import main
from mmbert.convert import CheckpointError
from mmbert.convert.hf_visualbert import SWAPPED_TYPES_KEY

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.authors

FIXTURES = [f for f in fixture_dirs() if read_fixture(f).meta["source"] == "visualbert"]


@pytest.fixture(scope="module", params=FIXTURES, ids=lambda f: f.name)
def exported(request, tmp_path_factory):
    fx = read_fixture(request.param)
    dst = tmp_path_factory.mktemp("hf") / "visualbert"
    assert main(["convert", str(fx.checkpoint), str(dst), "--config", str(fx.config), "--to", "hf"]) == 0
    return fx, dst


def _hf_forward(hf, x: dict, **extra):
    return hf(
        input_ids=x["text_ids"],
        attention_mask=x["text_mask"].long(),
        token_type_ids=x["segment_ids"],
        visual_embeds=x["region_feats"],
        visual_attention_mask=x["region_mask"].long(),
        output_hidden_states=True,
        **extra,
    )


def _real(t: torch.Tensor, x: dict) -> torch.Tensor:
    """(B, T + R, ...) -> the real text positions, then the real regions."""
    tm, rm = x["text_mask"], x["region_mask"]
    n = tm.shape[1]
    return torch.cat([t[:, :n][tm], t[:, n:][rm]])


@torch.no_grad()
def test_hugging_face_reproduces_the_authors_outputs(exported):
    fx, dst = exported
    hf = transformers.VisualBertForPreTraining.from_pretrained(dst).eval()
    x, o = fx.inputs, fx.outputs
    diffs = {}
    for prefix in ("", "label_"):
        out = _hf_forward(hf, dict(x, text_ids=x[f"{prefix}text_ids"]))
        diffs[f"{prefix}mlm_logits"] = _real(out.prediction_logits - o[f"{prefix}mlm_logits"], x).abs().max()
        # Hugging Face's sentence-image head: index 0 = matches; the authors' (and mmbert's): index 1
        diffs[f"{prefix}itm_logits"] = (out.seq_relationship_logits.flip(-1) - o[f"{prefix}itm_logits"]).abs().max()
        if not prefix:
            seq = out.hidden_states[-1]
            diffs["sequence_output"] = _real(seq - o["sequence_output"], x).abs().max()
            diffs["pooled"] = (hf.visual_bert.pooler(seq) - o["pooled"]).abs().max()
    worst = {k: float(v) for k, v in diffs.items() if v > TOLERANCE}
    assert not worst, worst
    # the swap is what makes it exact: Hugging Face reading the file's row 0 (the original's row 1) differs
    zeros = torch.zeros_like(x["region_mask"], dtype=torch.long)
    other = _hf_forward(hf, x, visual_token_type_ids=zeros).hidden_states[-1]
    assert _real(other - o["sequence_output"], x).abs().max() > 100 * TOLERANCE


def test_the_file_records_the_swap_and_reads_back_as_the_original(exported):
    fx, dst = exported
    import json

    assert json.loads((dst / "config.json").read_text())[SWAPPED_TYPES_KEY] is True
    original = mmbert.load_pretraining(fx.checkpoint, config=fx.config)
    back = mmbert.load_pretraining(dst)
    assert back.encoder.config.region_segment == original.encoder.config.region_segment == 0
    ours, theirs = original.state_dict(), back.state_dict()
    assert ours.keys() == theirs.keys()
    for k, v in ours.items():
        assert torch.equal(v, theirs[k]), k
    # and again to Hugging Face: the same file content
    again = dst.parent / "again"
    mmbert.export_hf(back, again)
    from safetensors.torch import load_file

    first, second = load_file(dst / "model.safetensors"), load_file(again / "model.safetensors")
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_region_types_hugging_face_cannot_express_are_refused(tmp_path):
    model = mmbert.build_model("visualbert_tiny", type_vocab_size=3, region_segment=2)
    with pytest.raises(CheckpointError, match="region_segment=2 .* has no Hugging Face form"):
        mmbert.export_hf(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()
