"""UNIMO's mixed pre-training: data of the three kinds, every objective scored, gradients, seq2seq causality,
and zero-shot retrieval by embeddings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mmbert
from mmbert.data import features
from mmbert.data.datasets import CaptionDataset
from mmbert.data.rewriting import SceneGraphRewriter
from mmbert.data.synthetic.generate import generate
from mmbert.data.synthetic.scenes import WorldConfig
from mmbert.data.tokenizer import Tokenizer
from mmbert.objectives.unimo import UnimoPretraining
from mmbert.tasks.embedding_retrieval import embedding_retrieval, embedding_scores
from mmbert.train.unimo_data import UnimoPretrainingData


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    generate(root, num_images=10, seed=0, config=WorldConfig(feat_dim=16, max_objects=3), render_images=False,
             nlvr2_pairs=0)  # fmt: skip
    tok = Tokenizer.from_pretrained(root)
    caps = CaptionDataset(root / "captions_train.json", features.open(root / "features.tsv"), tok, 40, 36)
    return root, tok, caps


@pytest.fixture
def data(world):
    root, tok, caps = world
    texts = ["a red circle above a blue square", "two green stars"]
    rewriter = SceneGraphRewriter.from_file(root / "scenes.json")
    return UnimoPretrainingData(caps, texts, list(caps.store.keys())[:3], rewriter=rewriter, num_negatives=3)


def build(tok, caps):
    torch.manual_seed(0)
    classes = int(caps.store[next(iter(caps.store.keys()))].cls_prob.shape[1])
    model = mmbert.build_model("unimo_tiny", vocab_size=tok.vocab_size, num_region_classes=classes)
    return mmbert.PretrainingModel(model)


def test_the_three_kinds_and_the_cmcl_variants(data, world):
    _, tok, caps = world
    n = len(caps)
    assert len(data) == n + 2 + 3
    kinds = [data[i].kind for i in (0, n, n + 1, n + 2)]
    assert kinds == ["pair", "text", "text", "image"]
    texts, positive = data.variants(0, np.random.default_rng(0))
    assert positive[0] and not all(positive)
    assert texts[0] == " ".join(caps.captions[0].caption.lower().replace(",", "").replace(".", "").split())
    assert all(t == t.lower() and "." not in t for t in texts)  # normalised alike: no surface shortcut
    text = data[n]
    assert text.source_ids[0] == tok.cls_id and text.target_ids[-1] == tok.sep_id
    assert torch.equal(
        torch.cat([text.source_ids[:-1], text.target_ids[1:]]), torch.tensor(tok.encode(data.texts[0]).ids)
    )
    image = data[n + 2]
    assert image.pretraining.text_ids.numel() == 0 and image.pretraining.region_target_mask is not None


def test_every_objective_scores_and_gradients_reach_the_encoder(data, world):
    _, tok, caps = world
    n = len(caps)
    batch = data.collate([data[i] for i in (0, 1, 2, n, n + 1, n + 2, n + 3)])
    pt = build(tok, caps).train()
    out = UnimoPretraining(pt, temperature=0.1)(batch)
    for key in ("pair_mlm_loss", "text_mlm_loss", "pair_mrfr_loss", "image_mrc_kl_loss", "cmcl_loss",
                "caption_seq2seq_loss", "text_seq2seq_loss"):  # fmt: skip
        assert key in out.metrics and np.isfinite(out.metrics[key]), key
    out.loss.backward()
    enc = pt.encoder
    for p in (
        enc.text_pooler.dense.weight,
        enc.vision_pooler.dense.weight,
        enc.region_embeddings.feat_proj.weight,
    ):
        assert p.grad is not None and float(p.grad.abs().sum()) > 0
    no_cmcl = UnimoPretraining(pt, ["mlm", "mrfr"])(batch)
    assert "cmcl_loss" not in no_cmcl.metrics and "caption_seq2seq_loss" not in no_cmcl.metrics
    with pytest.raises(KeyError, match="unknown UNIMO objectives"):
        UnimoPretraining(pt, ["itm"])


def test_seq2seq_target_positions_do_not_see_later_tokens(data, world):
    """The text seq2seq loss at target position t depends on target tokens <= t only: changing the last
    target input token leaves every earlier prediction alone."""
    _, tok, caps = world
    pt = build(tok, caps).eval()
    task = UnimoPretraining(pt, ["seq2seq"])
    n = len(caps)
    batch = data.collate([data[n + 1]])
    enc = pt.encoder
    seen = []
    handle = pt.heads.mlm.register_forward_hook(lambda m, args, out: seen.append(out.detach()))
    with torch.no_grad():
        task(batch)
        batch.target_ids[0, -2] = (batch.target_ids[0, -2] + 1) % tok.vocab_size
        task(batch)
    handle.remove()
    torch.testing.assert_close(seen[0][:-1], seen[1][:-1])
    assert enc is pt.encoder


def test_embedding_retrieval_scores_are_the_poolers_cosine(world):
    _, tok, caps = world
    model = build(tok, caps).encoder.eval()
    scores, gt = embedding_scores(model, caps)
    c = caps.captions[3]
    image_ids = list(dict.fromkeys(x.image_id for x in caps.captions))
    r = caps.regions(image_ids[gt[3]])
    with torch.no_grad():
        v = model(None, region_feats=r.feats[None], region_boxes=r.boxes[None]).pooled_vision[0]
        t = model(caps.encode_text(c.caption)[0][None]).pooled[0]
    assert float(scores[3, gt[3]]) == pytest.approx(float(torch.cosine_similarity(v, t, 0)), abs=1e-5)
    assert set(embedding_retrieval(model, caps)) >= {"ir_r@1", "tr_r@1"}
    with pytest.raises(ValueError, match="cannot encode an image alone"):
        embedding_scores(mmbert.build_model("uniter_tiny"), caps)
