"""UNIMO: the official configs, the three input kinds, the [IMG] token, masks as data, tags, errors."""

from __future__ import annotations

import pytest
import torch
from helpers import fixture_dir, make_inputs

import mmbert
from mmbert.models.unimo import config_from_unimo, unimo_base, unimo_large
from mmbert.nn.masks import captioning_mask, seq2seq_mask


@pytest.fixture
def model():
    torch.manual_seed(0)
    return mmbert.build_model("unimo_tiny").eval()


@pytest.fixture
def inputs(model):
    return make_inputs(model.config, batch=2, text_len=6, regions=4)


def test_official_configs_give_the_presets():
    base = config_from_unimo(fixture_dir("unimo") / "unimo_base_en.json")
    large = config_from_unimo(fixture_dir("unimo") / "unimo_large_en.json")
    assert base == unimo_base() and large == unimo_large()
    assert (base.dim, base.num_layers, base.num_heads, base.ffn_dim) == (768, 12, 12, 3072)
    assert (large.dim, large.num_layers, large.num_heads, large.region_overlap_ratio) == (1024, 24, 16, 0.3)
    assert (base.vocab_size, base.max_positions, base.layer_norm_eps, base.region_overlap_ratio) == (
        50265,
        514,
        1e-5,
        0.4,
    )


def test_official_config_errors_name_the_key(tmp_path):
    bad = tmp_path / "c.json"
    bad.write_text('{"hidden_size": 8, "num_attention_heads": 2, "num_hidden_layers": 1, "warp": 1}')
    with pytest.raises(ValueError, match=r"unknown UNIMO config keys \['warp'\]"):
        config_from_unimo(bad)
    bad.write_text(
        '{"hidden_size": 8, "num_attention_heads": 2, "num_hidden_layers": 1, "type_vocab_size": 2}'
    )
    with pytest.raises(ValueError, match="no segment embeddings"):
        config_from_unimo(bad)


def test_text_only_is_independent_of_the_image_side(model, inputs):
    text = {k: inputs[k] for k in ("text_ids", "text_mask")}
    with torch.no_grad():
        before = model(**text)
        for p in [*model.region_embeddings.parameters(), *model.vision_pooler.parameters()]:
            p.add_(torch.randn_like(p))
        after = model(**text)
        pair = model(**inputs)
    assert before.vision is None and before.pooled_vision is None
    assert torch.equal(before.text, after.text) and torch.equal(before.pooled, after.pooled)
    assert not torch.allclose(pair.text[0], after.text[0], atol=1e-3)  # in a pair the image does count


def test_image_only_is_independent_of_the_words(model, inputs):
    image = {k: inputs[k] for k in ("region_feats", "region_boxes", "region_mask")}
    with torch.no_grad():
        before = model(None, **image)
        model.text_embeddings.word.weight.add_(1.0)
        after = model(None, **image)
    assert before.text is None
    assert torch.equal(before.vision, after.vision)
    assert torch.equal(before.pooled, before.pooled_vision) and torch.equal(before.pooled, after.pooled)


def test_the_first_visual_token_is_the_mean_region_with_the_whole_image_box(model, inputs):
    seen = {}
    model.region_embeddings.register_forward_hook(
        lambda m, args, out: seen.update(feats=args[0], boxes=args[1])
    )
    with torch.no_grad():
        enc = model(**inputs)
    real = inputs["region_mask"]
    for b in range(2):
        mean = inputs["region_feats"][b][real[b]].mean(0)
        torch.testing.assert_close(seen["feats"][b, 0], mean)
    assert torch.equal(seen["boxes"][:, 0], torch.tensor([[0.0, 0, 1, 1]] * 2))
    assert enc.vision.shape[1] == 1 + inputs["region_feats"].shape[1]
    assert model.vision_mask(inputs).tolist()[1] == [False, True, True, False, False]


def test_seq2seq_mask_makes_the_target_causal(model, inputs):
    ids = inputs["text_ids"][:1].clone()
    visible = seq2seq_mask(torch.ones(1, 3, dtype=torch.bool), torch.ones(1, 3, dtype=torch.bool))
    changed = ids.clone()
    changed[0, 4] = (ids[0, 4] + 1) % model.config.vocab_size
    with torch.no_grad():
        a, b = model(ids, attention_mask=visible), model(changed, attention_mask=visible)
        plain = model(changed)
    torch.testing.assert_close(a.text[:, :4], b.text[:, :4], atol=1e-6, rtol=1e-6)
    assert not torch.allclose(a.text[:, 5], b.text[:, 5])
    assert not torch.allclose(a.text[:, 0], plain.text[:, 0])  # without the mask the source sees the target


def test_captioning_with_tags(model, inputs):
    tags = torch.tensor([[5, 6, 7], [8, 9, 1]])
    tag_mask = torch.tensor([[True] * 3, [True, True, False]])
    vis_mask = torch.cat([torch.ones(2, 1, dtype=torch.bool), inputs["region_mask"]], 1)
    visible = captioning_mask(inputs["text_mask"], vis_mask, tag_mask)
    with torch.no_grad():
        enc = model(**inputs, tag_ids=tags, tag_mask=tag_mask, attention_mask=visible)
        no_text = model(None, **{k: inputs[k] for k in ("region_feats", "region_boxes", "region_mask")},
                        tag_ids=tags, tag_mask=tag_mask)  # fmt: skip
    assert enc.text.shape == (2, 6, model.config.dim)
    # the visual tokens see only regions and tags: the same as without any caption
    real = vis_mask
    torch.testing.assert_close(enc.vision[real], no_text.vision[real], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="attention_mask has shape"):
        model(**inputs, tag_ids=tags, attention_mask=visible[:, 1:, 1:])


def test_bad_inputs_are_named(model, inputs):
    with pytest.raises(ValueError, match="needs text_ids, region_feats, or both"):
        model(None)
    with pytest.raises(ValueError, match="need region_feats"):
        model(inputs["text_ids"], region_boxes=inputs["region_boxes"])
    with pytest.raises(ValueError, match="needs region_boxes"):
        model(inputs["text_ids"], region_feats=inputs["region_feats"])
    with torch.no_grad():  # segment ids are ignored, as the official model ignores its sent ids
        a = model(inputs["text_ids"], segment_ids=torch.ones_like(inputs["text_ids"])).text
        assert torch.equal(a, model(inputs["text_ids"]).text)
    with pytest.raises(ValueError, match="segment_ids has shape"):
        model(inputs["text_ids"], segment_ids=inputs["text_ids"][:, 1:])
    with pytest.raises(ValueError, match="need text_ids"):
        model(None, text_mask=inputs["text_mask"], region_feats=inputs["region_feats"])
