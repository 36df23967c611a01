"""Parity with Hugging Face LXMERT (model, pre-training heads, QA head) on shared weights, several shapes,
padded text and regions; exact round trips HF -> mmbert -> HF."""

from __future__ import annotations

import json

import pytest
import torch
import transformers
from convert.hf_helpers import hf_reference
from safetensors.torch import load_file

import mmbert
from mmbert.convert import CheckpointError
from mmbert.convert.hf_tasks import export_question_answering, load_question_answering
from mmbert.models.lxmert import Lxmert

SHAPES = [
    dict(
        hidden_size=32,
        num_attention_heads=2,
        intermediate_size=64,
        l_layers=2,
        r_layers=1,
        x_layers=2,
        visual_feat_dim=16,
        num_qa_labels=7,
        num_object_labels=9,
        num_attr_labels=5,
        type_vocab_size=2,
    ),
    dict(
        hidden_size=36,
        num_attention_heads=3,
        intermediate_size=50,
        l_layers=1,
        r_layers=3,
        x_layers=1,
        visual_feat_dim=11,
        num_qa_labels=5,
        num_object_labels=4,
        num_attr_labels=3,
        type_vocab_size=3,
    ),
    dict(
        hidden_size=42,
        num_attention_heads=7,
        intermediate_size=17,
        l_layers=3,
        r_layers=0,
        x_layers=3,
        visual_feat_dim=9,
        num_qa_labels=13,
        num_object_labels=6,
        num_attr_labels=2,
        type_vocab_size=1,
    ),
]
VOCAB = 97
ATOL = 1e-5


def shape_id(s: dict) -> str:
    return f"d{s['hidden_size']}-l{s['l_layers']}r{s['r_layers']}x{s['x_layers']}"


def hf_model(cls, path, seed=0, **shape):
    return hf_reference(cls, transformers.LxmertConfig(vocab_size=VOCAB, max_position_embeddings=40, **shape),
                        path, seed)  # fmt: skip


def inputs(shape, batch=3, length=9, regions=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (batch, length), generator=g)
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[1, length - 3 :] = False
    mask[2, 4:] = False
    seg = torch.randint(0, shape["type_vocab_size"], (batch, length), generator=g)
    feats = torch.randn(batch, regions, shape["visual_feat_dim"], generator=g)
    xy = torch.rand(batch, regions, 2, generator=g) * 0.6
    boxes = torch.cat([xy, xy + torch.rand(batch, regions, 2, generator=g) * 0.4], -1)
    rmask = torch.ones(batch, regions, dtype=torch.bool)
    rmask[1, regions - 2 :] = False
    rmask[2, 2:] = False
    return ids, mask, seg, feats, boxes, rmask


def hf_kwargs(ids, mask, seg, feats, boxes, rmask):
    return dict(
        input_ids=ids,
        attention_mask=mask.long(),
        token_type_ids=seg,
        visual_feats=feats,
        visual_pos=boxes,
        visual_attention_mask=rmask.long(),
    )


def close(ours, theirs):
    torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=0)


@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_pretraining_parity(tmp_path, shape):
    ref = hf_model(transformers.LxmertForPreTraining, tmp_path, **shape)
    ours = mmbert.load_pretraining(tmp_path)
    batch = inputs(shape)
    with torch.no_grad():
        r = ref(**hf_kwargs(*batch))
        rm = ref.lxmert(**hf_kwargs(*batch))
        o = ours(*batch)
        robj = ref.obj_predict_head(rm.vision_output)
    # Outputs at padded tokens and regions are meaningless (ours skip the padding and leave zeros there).
    real, tm = batch[-1], batch[1]
    close(o.encoded.text[tm], rm.language_output[tm])
    close(o.encoded.vision[real], rm.vision_output[real])
    close(o.encoded.pooled, rm.pooled_output)
    close(o.mlm_logits[tm], r.prediction_logits[tm])
    close(o.pair_logits, r.cross_relationship_score)  # both: index 1 = matches
    close(o.region_class_logits[real], robj["obj"][real])
    close(o.region_attr_logits[real], robj["attr"][real])
    close(o.region_feat_pred[real], robj["feat"][real])
    close(o.answer_logits, r.question_answering_score)
    # load_model gives the same encoder, heads ignored.
    with torch.no_grad():
        enc = mmbert.load_model(tmp_path)(*batch)
    torch.testing.assert_close(enc.text, o.encoded.text, atol=0, rtol=0)


@pytest.mark.parametrize("shape", SHAPES[:2], ids=shape_id)
def test_model_parity_and_attention_maps(tmp_path, shape):
    ref = hf_model(transformers.LxmertModel, tmp_path, **shape)
    ours = mmbert.load_model(tmp_path)
    batch = inputs(shape, seed=5)
    with torch.no_grad():
        r = ref(**hf_kwargs(*batch), output_attentions=True)
        o = ours(*batch, output_attentions=True)
        plain = ours(*batch)
    real, tm = batch[-1], batch[1]
    close(o.text, r.language_output)
    close(o.vision[real], r.vision_output[real])
    close(o.pooled, r.pooled_output)
    assert plain.attentions is None
    torch.testing.assert_close(plain.text[tm], o.text[tm], atol=1e-5, rtol=0)
    maps = o.attentions
    l, rl, x = shape["l_layers"], shape["r_layers"], shape["x_layers"]
    assert [len(maps[k]) for k in ("text_text", "vision_vision", "text_vision", "vision_text")] == [
        l + x,
        rl + x,
        x,
        x,
    ]
    for ours_map, hf_map in zip(maps["text_text"][:l], r.language_attentions):
        close(ours_map, hf_map)
    for ours_map, hf_map in zip(maps["vision_vision"][:rl], r.vision_attentions):
        close(ours_map.transpose(1, 2)[real], hf_map.transpose(1, 2)[real])  # rows of real queries
    for ours_map, hf_map in zip(maps["text_vision"], r.cross_encoder_attentions):  # HF: language -> vision
        close(ours_map, hf_map)


@pytest.mark.parametrize("shape", SHAPES[1:], ids=shape_id)
def test_question_answering_parity_and_round_trip(tmp_path, shape):
    ref = hf_model(transformers.LxmertForQuestionAnswering, tmp_path / "hf", **shape)
    encoder, head = load_question_answering(tmp_path / "hf")
    assert isinstance(encoder, Lxmert)
    batch = inputs(shape, seed=3)
    with torch.no_grad():
        r = ref(**hf_kwargs(*batch))
        logits = head(encoder(*batch).pooled)
    close(logits, r.question_answering_score)
    export_question_answering(encoder, head, tmp_path / "back")
    assert_same_weights(tmp_path / "hf", tmp_path / "back")
    again = transformers.LxmertForQuestionAnswering.from_pretrained(tmp_path / "back").eval()
    with torch.no_grad():
        torch.testing.assert_close(
            again(**hf_kwargs(*batch)).question_answering_score, r.question_answering_score, atol=0, rtol=0
        )


def test_qa_checkpoint_needs_allow_new_heads_for_pretraining(tmp_path):
    hf_model(transformers.LxmertForQuestionAnswering, tmp_path, **SHAPES[0])
    with pytest.raises(CheckpointError, match="no pre-training head weights"):
        mmbert.load_pretraining(tmp_path)
    pt = mmbert.load_pretraining(tmp_path, allow_new_heads=True)
    assert pt.new_heads == ["mlm", "pair", "region"]


def assert_same_weights(a, b):
    sa, sb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    sa = {k: v for k, v in sa.items() if not k.startswith("cls.predictions.decoder.")}
    sb = {k: v for k, v in sb.items() if not k.startswith("cls.predictions.decoder.")}
    assert sorted(sa) == sorted(sb)
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize(
    "cls", [transformers.LxmertForPreTraining, transformers.LxmertModel], ids=lambda c: c.__name__
)
def test_round_trip_hf_mmbert_hf_is_exact(tmp_path, cls):
    shape = SHAPES[1]
    ref = hf_model(cls, tmp_path / "hf", **shape)
    if cls is transformers.LxmertForPreTraining:
        ours = mmbert.load_pretraining(tmp_path / "hf")
    else:
        ours = mmbert.load_model(tmp_path / "hf")
    mmbert.export_hf(ours, tmp_path / "back")
    assert_same_weights(tmp_path / "hf", tmp_path / "back")
    back_cfg = json.loads((tmp_path / "back" / "config.json").read_text())
    orig_cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    for key in (
        "l_layers",
        "r_layers",
        "x_layers",
        "hidden_size",
        "num_attention_heads",
        "intermediate_size",
        "visual_feat_dim",
        "num_qa_labels",
        "num_object_labels",
        "num_attr_labels",
        "type_vocab_size",
    ):
        assert back_cfg[key] == orig_cfg[key], key
    again = cls.from_pretrained(tmp_path / "back").eval()
    batch = inputs(shape)
    with torch.no_grad():
        a, b = ref(**hf_kwargs(*batch)), again(**hf_kwargs(*batch))
    key = "prediction_logits" if cls is transformers.LxmertForPreTraining else "language_output"
    torch.testing.assert_close(getattr(b, key), getattr(a, key), atol=0, rtol=0)


def test_export_of_a_fresh_model_loads_in_transformers(tmp_path):
    torch.manual_seed(0)
    pt = mmbert.PretrainingModel(mmbert.build_model("lxmert_tiny")).eval()
    mmbert.export_hf(pt, tmp_path)
    ref = transformers.LxmertForPreTraining.from_pretrained(tmp_path).eval()
    shape = dict(visual_feat_dim=pt.config.region_feat_dim, type_vocab_size=pt.config.type_vocab_size)
    batch = inputs(shape)
    batch = (batch[0] % pt.config.vocab_size, *batch[1:])
    with torch.no_grad():
        o, r = pt(*batch), ref(**hf_kwargs(*batch))
    tm = batch[1]  # real tokens: ours leave zeros at padding
    close(o.mlm_logits[tm], r.prediction_logits[tm])
    close(o.answer_logits, r.question_answering_score)


def test_disabled_hf_heads_are_absent(tmp_path):
    shape = dict(SHAPES[0], task_qa=False, visual_attr_loss=False)
    ref = hf_model(transformers.LxmertForPreTraining, tmp_path / "hf", **shape)
    pt = mmbert.load_pretraining(tmp_path / "hf")
    assert pt.heads.answer is None
    assert sorted(pt.heads.region.decoders) == ["class", "feat"]
    batch = inputs(shape)
    with torch.no_grad():
        o, r = pt(*batch), ref(**hf_kwargs(*batch))
    tm = batch[1]  # real tokens: ours leave zeros at padding
    close(o.mlm_logits[tm], r.prediction_logits[tm])
    assert o.answer_logits is None and o.region_attr_logits is None
    mmbert.export_hf(pt, tmp_path / "back")
    assert_same_weights(tmp_path / "hf", tmp_path / "back")


def test_unsupported_hf_config_is_refused(tmp_path):
    hf_model(transformers.LxmertModel, tmp_path, **dict(SHAPES[0], visual_pos_dim=5))
    with pytest.raises(CheckpointError, match="visual_pos_dim 5"):
        mmbert.load_model(tmp_path)


def test_missing_encoder_weight_is_named(tmp_path):
    hf_model(transformers.LxmertModel, tmp_path, **SHAPES[0])
    state = load_file(str(tmp_path / "model.safetensors"))
    del state["encoder.x_layers.1.visual_attention.att.key.weight"]
    from safetensors.torch import save_file

    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"x_layers\.1\.visual_attention\.att\.key\.weight"):
        mmbert.load_model(tmp_path)
