"""VL-BERT specifics: whole-image feature on text, shared region position, segment 2, [END], masking."""

from __future__ import annotations

import pytest
import torch
from helpers import make_inputs

import mmbert
from mmbert.models.base import ModelInputs
from mmbert.models.vl_bert import VLBertConfig

# The paper's visual LayerNorm gains start at 0, which hides the visual feature embeddings at init; the
# structural tests open them (gain 1) to see where those embeddings go.
OPEN_VISUAL = {"visual_scale_init": 1.0}


@pytest.fixture
def tiny():
    model = mmbert.build_model("vl_bert_tiny", **OPEN_VISUAL).eval()
    return model, make_inputs(model.config)


def embed(model, x, **extra):
    with torch.no_grad():
        return model.embed(ModelInputs(**x), **extra)


def test_text_tokens_see_the_whole_image(tiny):
    model, x = tiny
    other = dict(x, region_feats=x["region_feats"] + 1.0)
    (a, _), (b, _) = embed(model, x), embed(model, other)
    assert not torch.allclose(a[:, :7], b[:, :7])  # text embeddings depend on the image
    uniter = mmbert.build_model("uniter_tiny").eval()
    (c, _), (d, _) = embed(uniter, x), embed(uniter, other)
    torch.testing.assert_close(c[:, :7], d[:, :7])  # ... unlike UNITER's


def test_sequence_layout_positions_and_segments(tiny):
    model, x = tiny
    joint, mask = embed(model, x)
    assert joint.shape == (2, 7 + 1 + 5 + 1, 32)  # text, whole image (first), regions, [END]
    assert mask[:, -1].all() and mask[:, 7].all() and mask[1, 7 + 1 + 3 :].tolist() == [False, False, True]
    e = model.embeddings
    with torch.no_grad():
        e.text.norm.weight.fill_(1.0)
        e.text.norm.bias.zero_()
        e.end_token.zero_()
        joint, _ = embed(model, x)
        # [END] of example 1 (4 real tokens) = LN(position 5 + segment 2)
        want = e.text.norm(e.text.position.weight[5] + e.text.segment.weight[2])
    torch.testing.assert_close(joint[1, -1], want)


def test_masked_regions_use_their_own_token_and_feature(tiny):
    model, x = tiny
    masked = torch.zeros(2, 5, dtype=torch.bool)
    masked[0, 0] = True
    (a, _), (b, _) = embed(model, x), embed(model, x, region_masked=masked)
    assert not torch.allclose(a[0, 8], b[0, 8])
    torch.testing.assert_close(a[1], b[1])
    e = mmbert.build_model("vl_bert_base", num_layers=0).embeddings
    assert e.masked_feature.abs().max() == 0 and e.visual_object_norm.weight.abs().max() == 0  # paper's init


def test_vision_has_end_element_and_mask(tiny):
    model, x = tiny
    enc = model(**x)
    assert enc.vision.shape == (2, 7, 32)
    assert model.vision_mask(x).tolist()[1] == [False, True, True, True, False, False, False]


def test_text_too_long_for_the_region_positions():
    model = mmbert.build_model("vl_bert_tiny", max_positions=8).eval()
    x = make_inputs(model.config, text_len=7)
    with pytest.raises(ValueError, match="7 tokens need 9 positions, the model has 8"):
        model(**x)


def test_config_and_heads():
    with pytest.raises(ValueError, match="type_vocab_size must be >= 3"):
        VLBertConfig(type_vocab_size=2)
    heads = mmbert.build_model("vl_bert_tiny").build_pretraining_heads()
    assert heads.pair is None and heads.mlm is not None and heads.region.decoders["class"].out_features == 11


def test_init_text_from_bert_fills_the_first_two_segment_rows(tmp_path):
    bert = mmbert.build_model("bert_tiny")
    bert.save(tmp_path / "bert")
    model = mmbert.build_model("vl_bert_tiny", init_text_from=tmp_path / "bert")
    assert "embeddings.text.segment" not in model.init_report.new  # VL-BERT copies BERT's rows 0 and 1
    assert torch.equal(model.embeddings.text.segment.weight[:2], bert.embeddings.segment.weight)


def test_a_text_only_example_runs_with_its_own_visual_embedding():
    torch.manual_seed(0)
    model = mmbert.build_model("vl_bert_tiny", **OPEN_VISUAL).eval()
    ids = torch.tensor([[2, 10, 11, 3, 0], [2, 12, 3, 0, 0]])
    mask = ids > 0
    enc = model(ids, text_mask=mask)
    assert enc.text.shape == (2, 5, model.config.dim) and enc.vision.shape == (2, 1, model.config.dim)  # [END]
    with torch.no_grad():
        model.embeddings.text_only_visual.add_(1.0)
    assert not torch.allclose(model(ids, text_mask=mask).text[mask], enc.text[mask])  # it is used
    padded = model(torch.cat([ids, torch.zeros(2, 2, dtype=torch.long)], 1),
                   text_mask=torch.cat([mask, torch.zeros(2, 2, dtype=torch.bool)], 1))  # fmt: skip
    torch.testing.assert_close(padded.text[:, :5][mask], model(ids, text_mask=mask).text[mask], atol=1e-6, rtol=1e-6)


def volta_tiny(shift: bool = False, slots: int = 6) -> VLBertConfig:
    """``ctrl_vl_bert``'s options (VOLTA's controlled VL-BERT) at the tiny sizes; ``slots``: make_inputs'
    5 regions + the whole image (the preset's are VOLTA's 36 + 1)."""
    base = mmbert.MODELS["ctrl_vl_bert"]()
    return mmbert.MODELS["vl_bert_tiny"]().replace(
        **OPEN_VISUAL,
        global_region=base.global_region,
        embeddings=base.embeddings,
        volta_position_shift=shift,
        volta_region_slots=slots,
        pooling=base.pooling,
        pooled_dim=24,
    )


def test_volta_embeddings_end_on_the_last_slot_text_sees_it():
    """VOLTA's layout: [text ; whole image, regions], no [END] element of its own; the last vision slot
    carries [END]'s token at position n + 1 and is the text tokens' visual feature; regions at n, type 2."""
    torch.manual_seed(0)
    model = mmbert.models.vl_bert.VLBert(volta_tiny()).eval()
    x = make_inputs(model.config)
    e = model.embeddings
    joint, mask = embed(model, x)
    b, t = x["text_ids"].shape
    r = x["region_feats"].shape[1]
    assert joint.shape == (b, t + r + 1, model.config.dim)
    assert torch.equal(mask, torch.cat([x["text_mask"], torch.ones(b, 1, dtype=torch.bool), x["region_mask"]], 1))
    feats = torch.cat([x["region_feats"].mean(1, keepdim=True), x["region_feats"]], 1)[:1]
    boxes = torch.cat([torch.tensor([[[0.0, 0.0, 1.0, 1.0]]]), x["region_boxes"][:1]], 1)
    with torch.no_grad():
        reps = e.visual(feats, boxes)
        text_visual, slot_visual = e.visual_norms(reps[:, -1:], reps)
        n = int(x["text_mask"][0].sum())
        pos, seg = e.text.position.weight, e.text.segment.weight
        text = e.text.summed(x["text_ids"][:1], x["segment_ids"][:1]) + text_visual
        last = e.end_token + slot_visual[0, -1] + pos[n + 1] + seg[2]
        first = e.image_token + slot_visual[0, 0] + pos[n] + seg[2]
        want = e.text.norm(torch.cat([text[0], first[None], last[None]]))
    torch.testing.assert_close(joint[0, :t], want[:t])
    torch.testing.assert_close(joint[0, t], want[t])
    torch.testing.assert_close(joint[0, -1], want[-1])
    assert model.vision_mask(x).shape == (b, r + 1) and model.num_trailing_elements == 0


def test_volta_zero_feature_rows_take_the_masked_feature():
    """VOLTA signals masking by an all-zero feature row: a padding slot or a zeroed region gets the masked
    feature (and keeps [IMG]); region_masked does the same."""
    model = mmbert.models.vl_bert.VLBert(volta_tiny()).eval()
    with torch.no_grad():
        model.embeddings.masked_feature.normal_()
    x = make_inputs(model.config)
    x["region_mask"][:] = True
    zeroed = dict(x, region_feats=x["region_feats"].clone())
    zeroed["region_feats"][0, 1] = 0.0
    flagged = dict(x)
    whole = x["region_feats"].mean(1)  # the same whole-image feature for both
    a, _ = embed(model, zeroed, global_feats=whole)
    m = torch.zeros_like(x["region_mask"])
    m[0, 1] = True
    c, _ = embed(model, flagged, region_masked=m, global_feats=whole)
    torch.testing.assert_close(a, c)
    plain, _ = embed(model, x, global_feats=whole)
    t = x["text_ids"].shape[1]
    assert not torch.allclose(plain[0, t + 2], a[0, t + 2])


def test_volta_position_shift_is_voltas_batch_dependent_positions():
    """Off (default): every row's text is at 0..T-1, whatever the batch. On: from the batch's shortest text
    on, every row's positions are shifted by the number of vision slots (VOLTA's expanded arange), so the
    longer text's real tokens move; a batch of one is unaffected."""
    torch.manual_seed(0)
    right = mmbert.models.vl_bert.VLBert(volta_tiny()).eval()
    volta = mmbert.models.vl_bert.VLBert(volta_tiny(shift=True)).eval()
    volta.load_state_dict(right.state_dict())
    x = make_inputs(right.config)  # row 0: 7 tokens, row 1: 4
    first = {k: v[:1] for k, v in x.items()}
    with torch.no_grad():
        assert torch.equal(embed(volta, first)[0], embed(right, first)[0])  # one text length: no shift on reals
        a, b = embed(right, x)[0], embed(volta, x)[0]
        solo = embed(right, first)[0]
    torch.testing.assert_close(a[0], solo[0])  # mmbert: row 0 does not depend on row 1
    n, t, slots = 4, 7, volta.config.volta_region_slots
    assert torch.equal(a[0, :n], b[0, :n]) and not torch.allclose(a[0, n:t], b[0, n:t])
    # the model's text embeddings against ones built here from the positions VOLTA gives: 0..T-1, plus
    # `slots` from the batch's shortest text (4) on, in both rows; the text's visual feature is the last
    # slot's: the 5th input region of each row (6 slots; embed gets the rows as they are, nothing cleared)
    e = volta.embeddings
    arange = torch.arange(t).expand(2, t)
    with torch.no_grad():
        last = e.visual(x["region_feats"][:, -1:], x["region_boxes"][:, -1:])
        visual = e.visual_norms(last, last)[0]
        for positions, got in ((arange + slots * (arange >= n), b), (arange, a)):
            want = e.text.norm(
                e.text.word(x["text_ids"]) + e.text.position(positions) + e.text.segment(x["segment_ids"]) + visual
            )
            torch.testing.assert_close(got[:, :t], want)


def test_volta_options_are_explicit_and_checked():
    with pytest.raises(ValueError, match="embeddings='volta'"):
        VLBertConfig(volta_position_shift=True)
    with pytest.raises(ValueError, match="embeddings must be"):
        VLBertConfig(embeddings="other")
    model = mmbert.models.vl_bert.VLBert(volta_tiny()).eval()
    x = make_inputs(model.config)
    assert not model.takes_image_size and model.embeddings.masked_token is None
    with pytest.raises(ValueError, match="no image_size"):
        model(**x, image_size=torch.tensor([[480, 640], [375, 500]]))
    with pytest.raises(ValueError, match="no text-only input"):
        model(x["text_ids"], x["text_mask"])
    pt = mmbert.PretrainingModel(model).eval()
    with torch.no_grad():
        out = pt(**x)
    assert out.pair_logits.shape == (2, 2) and out.encoded.pooled.shape == (2, 24)
    assert out.region_class_logits.shape == (2, 6, model.config.num_region_classes)
    assert mmbert.MODELS["vl_bert_base"]().embeddings == "vl_bert"  # mmbert's own positions by default
    assert not mmbert.MODELS["vl_bert_base"]().volta_position_shift


def test_volta_outputs_do_not_depend_on_the_batchs_region_padding():
    """VOLTA's loaders pad every image to a fixed slot count (volta_region_slots): the last slot ([END],
    the text's visual feature) and the shift n are those of that count, not of the batch's longest image.
    The same row alone and batched with a row of more regions gives the same outputs (shift off)."""
    torch.manual_seed(0)
    model = mmbert.models.vl_bert.VLBert(volta_tiny()).eval()
    x = make_inputs(model.config)  # row 0: 5 regions, row 1: 3
    alone = {k: v[1:, :3] if k.startswith("region") else v[1:] for k, v in x.items()}
    with torch.no_grad():
        batched, solo = model(**x), model(**alone)
    m = x["text_mask"][1]
    torch.testing.assert_close(batched.text[1][m], solo.text[0][m], atol=1e-5, rtol=1e-5)
    real = model.vision_mask(alone)[0]  # the whole image and its 3 regions: the same slots in both
    real[0] = True
    torch.testing.assert_close(batched.vision[1, : real.numel()][real], solo.vision[0][real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batched.pooled[1], solo.pooled[0], atol=1e-5, rtol=1e-5)


def test_volta_region_slots_pad_the_vision_and_refuse_more():
    """The vision output has volta_region_slots slots (vision_mask says which are input regions); an image
    with more slots than that is refused naming both counts; the preset has VOLTA's pre-training 36 + 1."""
    model = mmbert.models.vl_bert.VLBert(volta_tiny(slots=8)).eval()
    x = make_inputs(model.config)
    with torch.no_grad():
        out = model(**x)
    assert out.vision.shape[1] == 8 and model.vision_mask(x).shape == (2, 8)
    assert torch.equal(model.vision_mask(x)[:, 6:], torch.zeros(2, 2, dtype=torch.bool))
    small = mmbert.models.vl_bert.VLBert(volta_tiny(slots=5)).eval()
    with pytest.raises(ValueError, match=r"6 vision slots .* exceed volta_region_slots = 5"):
        small(**x)
    assert mmbert.MODELS["ctrl_vl_bert"]().volta_region_slots == 37


def test_tiny_text_tokens_stay_apart_at_init():
    """At the paper's gain 0 the whole-image embedding starts at nothing. At gain 1 (the tiny preset's old
    start) it has norm sqrt(dim) on every text token against ~0.3 for word + position + segment, and the
    shared LayerNorm left the tokens of a question 0.999 alike: the question was unreadable."""
    model = mmbert.build_model("vl_bert_tiny").eval()
    x = make_inputs(model.config)
    joint, _ = embed(model, x)
    tokens = torch.nn.functional.normalize(joint[0, :7], dim=-1)
    alike = (tokens @ tokens.T)[~torch.eye(7, dtype=torch.bool)]
    assert float(alike.mean()) < 0.9


def test_tiny_learns_an_answer_read_from_the_question():
    """Overfit 16 examples whose answer is one question word (of 4 classes) from the pooled output: the
    tiny VL-BERT must read its text, as VQA needs (0.035 after 30 steps; 0.26 with the gains at 1)."""
    torch.manual_seed(0)
    model = mmbert.build_model("vl_bert_tiny").train()
    x = make_inputs(model.config, batch=16, text_len=6)
    del x["text_mask"]  # every token real
    labels = x["text_ids"][:, 2] % 4
    head = torch.nn.Linear(model.config.dim, 4)
    opt = torch.optim.Adam([*model.parameters(), *head.parameters()], lr=3e-3)
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(head(model(**x).pooled), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.1
