"""Parity with Hugging Face BERT on shared weights, checkpoint loading errors, and export back."""

from __future__ import annotations

import json

import pytest
import torch
import transformers
from convert.hf_helpers import assert_export_round_trip, hf_reference
from safetensors.torch import load_file, save_file

import mmbert
from mmbert.convert import CheckpointError

SHAPES = [
    dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, type_vocab_size=2),
    dict(hidden_size=36, num_hidden_layers=3, num_attention_heads=4, intermediate_size=50, type_vocab_size=3),
    dict(hidden_size=42, num_hidden_layers=1, num_attention_heads=7, intermediate_size=17, type_vocab_size=1),
]


def hf_pretraining(tmp_path, seed=0, **shape):
    cfg = transformers.BertConfig(vocab_size=97, max_position_embeddings=160, **shape)
    return hf_reference(transformers.BertForPreTraining, cfg, tmp_path, seed)


def inputs(vocab, types, batch=3, length=130, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch, length), generator=g)
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[1, 90:] = False
    mask[2, 7:] = False
    seg = torch.randint(0, types, (batch, length), generator=g)
    return ids, mask, seg


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"d{s['hidden_size']}-L{s['num_hidden_layers']}")
def test_pretraining_parity(tmp_path, shape):
    ref = hf_pretraining(tmp_path, **shape)
    ours = mmbert.load_pretraining(tmp_path)
    ids, mask, seg = inputs(97, shape["type_vocab_size"])
    with torch.no_grad():
        r = ref(input_ids=ids, attention_mask=mask.long(), token_type_ids=seg, output_hidden_states=True)
        o = ours(ids, mask, seg)
        rb = ref.bert(input_ids=ids, attention_mask=mask.long(), token_type_ids=seg)
    torch.testing.assert_close(o.encoded.text[mask], r.hidden_states[-1][mask], atol=1e-5, rtol=0)
    torch.testing.assert_close(o.encoded.pooled, rb.pooler_output, atol=1e-5, rtol=0)
    torch.testing.assert_close(o.mlm_logits[mask], r.prediction_logits[mask], atol=1e-5, rtol=0)
    # HF's NSP: index 0 = "is next"; ours: index 1.
    torch.testing.assert_close(o.pair_logits, r.seq_relationship_logits.flip(-1), atol=1e-5, rtol=0)
    # load_model gives the same encoder.
    enc = mmbert.load_model(tmp_path)(ids, mask, seg)
    torch.testing.assert_close(enc.text, o.encoded.text, atol=0, rtol=0)


def test_gathered_mlm_equals_full_logits(tmp_path):
    hf_pretraining(tmp_path, **SHAPES[0])
    pt = mmbert.load_pretraining(tmp_path)
    ids, mask, seg = inputs(97, 2, length=20)
    pos = torch.rand(ids.shape) < 0.3
    with torch.no_grad():
        full = pt(ids, mask, seg).mlm_logits
        gathered = pt(ids, mask, seg, mlm_positions=pos).mlm_logits
    torch.testing.assert_close(gathered, full[pos])


def test_real_minilm_checkpoint_matches_transformers(minilm_path):
    ref = transformers.BertModel.from_pretrained(minilm_path).eval()
    ours = mmbert.load_model(minilm_path)
    tok = mmbert.Tokenizer.from_pretrained(minilm_path)
    batch = tok(["A man is playing a guitar on stage.", "Das Wetter ist schön heute!", "短い文"])
    with torch.no_grad():
        r = ref(
            input_ids=batch["text_ids"],
            attention_mask=batch["text_mask"].long(),
            token_type_ids=batch["segment_ids"],
        )
        o = ours(**batch)
    m = batch["text_mask"]
    torch.testing.assert_close(o.text[m], r.last_hidden_state[m], atol=1e-5, rtol=0)
    torch.testing.assert_close(o.pooled, r.pooler_output, atol=1e-5, rtol=0)


def test_encoder_only_checkpoint_without_prefix_and_pytorch_bin(tmp_path):
    ref = hf_pretraining(tmp_path / "pt", **SHAPES[1])
    state = {k[len("bert.") :]: v for k, v in ref.state_dict().items() if k.startswith("bert.")}
    (tmp_path / "bin").mkdir()
    torch.save(state, tmp_path / "bin" / "pytorch_model.bin")
    cfg = json.loads((tmp_path / "pt" / "config.json").read_text())
    (tmp_path / "bin" / "config.json").write_text(json.dumps(cfg))
    model = mmbert.load_model(tmp_path / "bin")
    ids, mask, seg = inputs(97, 3, length=12)
    with torch.no_grad():
        torch.testing.assert_close(
            model(ids, mask, seg).text[mask],
            ref.bert(ids, mask.long(), seg).last_hidden_state[mask],
            atol=1e-5,
            rtol=0,
        )
    with pytest.raises(CheckpointError, match="no pre-training head weights"):
        mmbert.load_pretraining(tmp_path / "bin")
    fresh = mmbert.load_pretraining(tmp_path / "bin", allow_new_heads=True)
    assert fresh.new_heads == ["mlm", "pair"]


def test_export_to_hf_and_back_is_exact(tmp_path):
    ref = hf_pretraining(tmp_path / "src", **SHAPES[1])
    ours, again = assert_export_round_trip(ref, tmp_path / "src", tmp_path)
    ids, mask, seg = inputs(97, 3, length=16)
    with torch.no_grad():
        torch.testing.assert_close(
            again(ids, mask.long(), seg).prediction_logits[mask],
            ours(ids, mask, seg).mlm_logits[mask],
            atol=1e-5,
            rtol=0,
        )
    # encoder-only export loads as transformers.BertModel
    mmbert.export_hf(mmbert.load_model(tmp_path / "src"), tmp_path / "enc")
    enc = transformers.BertModel.from_pretrained(tmp_path / "enc").eval()
    with torch.no_grad():
        torch.testing.assert_close(
            enc(ids, mask.long(), seg).last_hidden_state[mask],
            ours.encoder(ids, mask, seg).text[mask],
            atol=1e-5,
            rtol=0,
        )


def test_directory_without_config_names_expected_files(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(
        CheckpointError, match="no config.json; expected config.json plus one of model.safetensors"
    ):
        mmbert.load_model(tmp_path)
    with pytest.raises(CheckpointError, match="not a directory"):
        mmbert.load_model(tmp_path / "nope")


def test_missing_weights_file(tmp_path):
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "bert", "hidden_size": 32, "num_attention_heads": 2})
    )
    with pytest.raises(CheckpointError, match="no weights; expected one of"):
        mmbert.load_model(tmp_path)


def test_missing_unexpected_and_misshapen_keys_are_named(tmp_path):
    hf_pretraining(tmp_path, **SHAPES[0])
    state = load_file(tmp_path / "model.safetensors")
    broken = dict(state)
    del broken["bert.encoder.layer.1.attention.self.key.weight"]
    save_file(broken, tmp_path / "model.safetensors")
    with pytest.raises(
        CheckpointError, match=r"missing keys \['bert.encoder.layer.1.attention.self.key.weight'\]"
    ):
        mmbert.load_model(tmp_path)
    extra = dict(state, **{"bert.encoder.layer.2.output.dense.weight": torch.zeros(3, 3)})
    save_file(extra, tmp_path / "model.safetensors")
    with pytest.raises(
        CheckpointError, match=r"unexpected encoder keys \['bert.encoder.layer.2.output.dense.weight'\]"
    ):
        mmbert.load_model(tmp_path)
    wrong = dict(state, **{"bert.pooler.dense.weight": torch.zeros(32, 31)})
    save_file(wrong, tmp_path / "model.safetensors")
    with pytest.raises(
        CheckpointError, match=r"shape mismatch for pooler.dense.weight: checkpoint has \(32, 31\)"
    ):
        mmbert.load_model(tmp_path)


def test_unsupported_model_type_and_bad_config(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(CheckpointError, match="'gpt2' is not one mmbert converts"):
        mmbert.load_model(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        mmbert.load_model(tmp_path)
