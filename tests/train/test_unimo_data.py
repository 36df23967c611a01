"""UNIMO's pre-training data with images retrieved from the image-only pool: the draws, their determinism,
and how a batch marks which pair each retrieved image is a positive of."""

from __future__ import annotations

import pytest
import torch

from mmbert.data import features
from mmbert.data.datasets import CaptionDataset
from mmbert.data.related_images import related_images
from mmbert.data.synthetic.generate import generate
from mmbert.data.synthetic.scenes import WorldConfig
from mmbert.data.tokenizer import Tokenizer
from mmbert.train.unimo_data import UnimoPretrainingData


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    generate(root, num_images=12, seed=0, config=WorldConfig(feat_dim=16, max_objects=3), render_images=False,
             nlvr2_pairs=0)  # fmt: skip
    caps = CaptionDataset(root / "captions_train.json", features.open(root / "features.tsv"),
                          Tokenizer.from_pretrained(root), 40, 36)  # fmt: skip
    pool = [str(k) for k in caps.store.keys()]
    related = related_images(caps.regions, [c.image_id for c in caps.captions], pool, k=4)
    return caps, pool, related


def data(world, seed: int = 0, positives: int = 2) -> UnimoPretrainingData:
    caps, pool, related = world
    return UnimoPretrainingData(caps, (), pool, seed=seed, related=related, image_positives=positives)


def test_each_pair_draws_its_positives_from_its_image_neighbours_in_rank_order(world):
    caps, _, related = world
    d = data(world)
    for index in range(len(caps)):
        ex = d[index]
        ranked = [p for p, _ in related[caps.captions[index].image_id]]
        assert len(ex.retrieved_ids) == min(2, len(ranked))
        assert ex.retrieved_ids == [p for p in ranked if p in ex.retrieved_ids]  # a subset, in rank order
        for image_id, r in zip(ex.retrieved_ids, ex.retrieved):
            assert torch.equal(r.feats, caps.regions(image_id).feats)  # clean regions, never masked
    with pytest.raises(ValueError, match="needs the related images"):
        UnimoPretrainingData(caps, (), [], image_positives=1)


def test_draws_depend_on_seed_epoch_and_index_only_so_a_resumed_run_repeats_them(world):
    caps, _, _ = world
    first = data(world)
    epoch0 = [first[i].retrieved_ids for i in range(len(caps))]
    first.set_epoch(1)
    epoch1 = [first[i].retrieved_ids for i in range(len(caps))]
    assert [first[i].retrieved_ids for i in reversed(range(len(caps)))][::-1] == epoch1  # order-free
    resumed = data(world)  # a fresh object, as after --resume, at the same epoch
    resumed.set_epoch(1)
    assert [resumed[i].retrieved_ids for i in range(len(caps))] == epoch1
    assert epoch0 != epoch1  # a new epoch draws anew
    other_seed = data(world, seed=1)
    other_seed.set_epoch(1)
    assert [other_seed[i].retrieved_ids for i in range(len(caps))] != epoch1
    # the text variants are drawn before the images: asking for retrieved images leaves them unchanged
    plain, with_images = data(world, positives=0)[3].variants, data(world)[3].variants
    assert [v.tolist() for v in plain] == [v.tolist() for v in with_images]


def test_a_batch_encodes_each_retrieved_image_once_and_marks_its_pairs(world):
    caps, _, _ = world
    d = data(world)
    examples = [d[i] for i in range(8)]
    batch = d.collate(examples)
    pair_ids = [e.pretraining.image_id for e in examples]
    extra = list(dict.fromkeys(i for e in examples for i in e.retrieved_ids if i not in pair_ids))
    columns = pair_ids + extra
    assert batch.retrieved_feats.shape[0] == len(extra) and batch.retrieved_mask.shape[0] == len(extra)
    for m, image_id in enumerate(extra):
        n = caps.regions(image_id).num_regions
        assert torch.equal(batch.retrieved_feats[m, :n], caps.regions(image_id).feats)
        assert bool(batch.retrieved_mask[m, :n].all()) and not bool(batch.retrieved_mask[m, n:].any())
    assert batch.image_positive.shape == (len(columns), len(examples))
    for r, image_id in enumerate(columns):
        for i, e in enumerate(examples):
            want = image_id == e.pretraining.image_id or image_id in e.retrieved_ids
            assert bool(batch.image_positive[r, i]) == want, (r, i)
    assert any(pair_ids[i] == pair_ids[j] for i in range(8) for j in range(i))  # same-image pairs do occur
    plain = data(world, positives=0)
    no_retrieval = plain.collate([plain[i] for i in range(8)])
    assert no_retrieval.retrieved_feats is None and no_retrieval.image_positive.shape == (8, 8)
