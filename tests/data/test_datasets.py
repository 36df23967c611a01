"""Caption dataset + collate: shapes, padding, region limiting, box normalisation, targets, workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from data.feature_fixtures import FEAT_DIM, NUM_CLASSES, make_region_record
from torch.utils.data import DataLoader

from mmbert.data import features
from mmbert.data.batch import Batch, CaptionExample
from mmbert.data.captions import Caption
from mmbert.data.collate import collate_captions
from mmbert.data.datasets import CaptionDataset, prepare_regions, select_regions

CAPTIONS = [
    "a dog on the red mat",
    "a cat",
    "the man with a red hat sits on the mat .",
    "a dog runs",
    "a red cat on a mat",
]


def make_store(tmp_path, records, name="feats.h5"):
    path = tmp_path / name
    with features.open(path, "w") as out:
        for r in records:
            out.write(r)
    return path


@pytest.fixture
def captions(feature_records):
    return [Caption(r.image_id, text) for r, text in zip(feature_records, CAPTIONS)]


def test_example_and_batch_shapes_and_padding(tmp_path, feature_records, captions, tiny_tokenizer):
    data = CaptionDataset(captions, make_store(tmp_path, feature_records), tiny_tokenizer, max_text_length=8,
                          max_regions=5)  # fmt: skip
    assert len(data) == 5 and not data.missing
    ex = data[2]
    assert isinstance(ex, CaptionExample) and ex.image_id == feature_records[2].image_id
    assert (
        ex.text_ids.shape == (8,)
        and ex.text_ids[0] == tiny_tokenizer.cls_id
        and ex.text_ids[-1] == tiny_tokenizer.sep_id
    )
    assert ex.regions.feats.shape == (5, FEAT_DIM) and ex.regions.boxes.shape == (5, 4)
    assert len(ex.word_ids) == 8 and ex.word_ids[0] is None

    batch = data.collate([data[i] for i in range(5)])
    assert isinstance(batch, Batch)
    lengths = [len(tiny_tokenizer.encode(c, max_length=8).ids) for c in CAPTIONS]
    regions = [min(r.num_regions, 5) for r in feature_records]
    assert batch.text_ids.shape == (5, max(lengths))  # padded to the longest in the batch, not a global max
    assert batch.region_feats.shape == (5, max(regions), FEAT_DIM)
    assert batch.text_mask.dtype == torch.bool and batch.region_mask.dtype == torch.bool
    assert batch.text_mask.sum(1).tolist() == lengths
    assert batch.region_mask.sum(1).tolist() == regions
    assert (batch.text_ids[~batch.text_mask] == tiny_tokenizer.pad_id).all()
    assert (batch.region_feats[~batch.region_mask] == 0).all() and (
        batch.region_boxes[~batch.region_mask] == 0
    ).all()
    assert batch.region_cls_prob.shape == (5, max(regions), NUM_CLASSES)
    assert (batch.region_labels[~batch.region_mask] == -100).all()
    assert (batch.region_attr_labels[~batch.region_mask] == -100).all()
    assert batch.region_labels.dtype == torch.long and batch.region_obj_conf.dtype == torch.float32
    assert batch.meta["image_ids"] == [r.image_id for r in feature_records]
    # boxes normalised once, by width and height
    rec = feature_records[0]
    h, w = rec.image_size
    expected = torch.from_numpy(rec.boxes) / torch.tensor([w, h, w, h])
    assert torch.allclose(batch.region_boxes[0, : rec.num_regions], expected)
    assert ((batch.region_boxes >= 0) & (batch.region_boxes <= 1)).all()
    assert set(batch.model_inputs()) == {"text_ids", "text_mask", "segment_ids", "region_feats", "region_boxes",
                                         "region_mask"}  # fmt: skip


def test_region_limit_keeps_most_confident_in_stored_order(feature_records):
    rec = feature_records[4]  # 7 regions
    rec.obj_conf = np.array([0.1, 0.9, 0.3, 0.8, 0.05, 0.7, 0.2], dtype=np.float32)
    keep = select_regions(rec, 3)
    assert keep.tolist() == [1, 3, 5]
    regions = prepare_regions(rec, 3)
    assert torch.equal(regions.feats, torch.from_numpy(rec.feats[[1, 3, 5]]))
    assert regions.labels.tolist() == rec.obj_id[[1, 3, 5]].tolist()
    # no obj_conf: the best non-background class probability decides
    rec.obj_conf = None
    probs = np.full((7, 3), 0.1, dtype=np.float32)
    probs[:, 0] = 0.99  # background never counts
    probs[[6, 2, 0], 1] = [0.9, 0.8, 0.7]
    rec.cls_prob = probs
    assert select_regions(rec, 3).tolist() == [0, 2, 6]
    # no confidences at all: the first ones
    rec.cls_prob = None
    assert select_regions(rec, 3).tolist() == [0, 1, 2]
    assert select_regions(rec, 10) is None


def test_missing_images_are_counted_and_reported(tmp_path, feature_records, captions, tiny_tokenizer):
    extra = [
        Caption("COCO_gone_1", "a dog"),
        Caption("COCO_gone_1", "a cat"),
        Caption("COCO_gone_2", "a mat"),
    ]
    with pytest.warns(UserWarning, match="3 of 8 captions skipped"):
        data = CaptionDataset(captions + extra, make_store(tmp_path, feature_records), tiny_tokenizer)
    assert len(data) == 5
    assert data.missing.num_captions == 3 and data.missing.num_images == 2
    assert data.missing.examples == ["COCO_gone_1", "COCO_gone_2"]


def test_collate_carries_optional_targets(tmp_path, feature_records, captions, tiny_tokenizer):
    data = CaptionDataset(captions, make_store(tmp_path, feature_records), tiny_tokenizer, max_regions=None)
    examples = [data[i] for i in range(3)]
    for e in examples:
        e.mlm_labels = torch.full_like(e.text_ids, -100)
        e.mlm_labels[1] = e.text_ids[1]
        e.pair_label = 1
        e.region_targets = e.regions.feats.clone()
        e.region_target_mask = torch.zeros(e.regions.num_regions, dtype=torch.bool)
        e.region_target_mask[0] = True
    batch = collate_captions(examples, pad_token_id=tiny_tokenizer.pad_id)
    assert (
        batch.mlm_labels.shape == batch.text_ids.shape and (batch.mlm_labels[~batch.text_mask] == -100).all()
    )
    assert batch.pair_labels.tolist() == [1, 1, 1]
    assert batch.region_targets.shape == batch.region_feats.shape
    assert batch.region_target_mask.dtype == torch.bool and batch.region_target_mask.sum() == 3
    examples[1].pair_label = None
    with pytest.raises(ValueError, match="pair_label is set on 2 of 3"):
        collate_captions(examples)


def test_collate_rejects_mixed_target_presence(tmp_path, feature_records, captions, tiny_tokenizer):
    data = CaptionDataset(captions, make_store(tmp_path, feature_records), tiny_tokenizer)
    examples = [data[0], data[1]]
    examples[1].regions.cls_prob = None
    with pytest.raises(ValueError, match="cls_prob is present for 1 of 2"):
        collate_captions(examples)


def test_region_fields_limit_what_is_read(tmp_path, feature_records, captions, tiny_tokenizer):
    data = CaptionDataset(captions, make_store(tmp_path, feature_records), tiny_tokenizer, region_fields=(),
                          max_regions=3)  # fmt: skip
    batch = data.collate([data[4], data[1]])
    assert batch.region_cls_prob is None and batch.region_labels is None and batch.region_obj_conf is None
    # the confidences are still read to choose the regions kept
    rec = feature_records[4]
    keep = np.sort(np.argsort(-rec.obj_conf)[:3])
    assert torch.equal(batch.region_feats[0], torch.from_numpy(rec.feats[keep]))


def test_pin_memory_keeps_every_field(tmp_path, feature_records, captions, tiny_tokenizer, monkeypatch):
    data = CaptionDataset(captions, make_store(tmp_path, feature_records), tiny_tokenizer)
    batch = data.collate([data[0], data[1]])
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda t: t.clone())  # no accelerator on the test machine
    pinned = batch.pin_memory()
    assert isinstance(pinned, Batch) and pinned.meta == batch.meta
    assert (
        torch.equal(pinned.region_feats, batch.region_feats) and pinned.region_feats is not batch.region_feats
    )
    assert torch.equal(pinned.region_attr_conf, batch.region_attr_conf)


@pytest.mark.parametrize("name", ["feats.tsv", "feats.h5", "feats.lmdb", "feats_npz"])
def test_dataloader_with_two_workers(tmp_path, feature_records, captions, tiny_tokenizer, name):
    records = feature_records + [make_region_record(f"img{i}", 4, seed=10 + i) for i in range(7)]
    caps = captions + [Caption(f"img{i}", CAPTIONS[i % 5]) for i in range(7)]
    data = CaptionDataset(caps, make_store(tmp_path, records, name), tiny_tokenizer, max_regions=4)
    data[0]  # the parent reads too: its open handle must not leak into (or block) the workers
    loader = DataLoader(data, batch_size=4, shuffle=False, num_workers=2, collate_fn=data.collate)
    batches = list(loader)
    assert [b.size for b in batches] == [4, 4, 4]
    got = [i for b in batches for i in b.meta["image_ids"]]
    assert got == [c.image_id for c in caps]
    single = data.collate([data[i] for i in range(4, 8)])
    assert torch.equal(batches[1].region_feats, single.region_feats)
    assert torch.equal(batches[1].text_ids, single.text_ids)
    assert [b.size for b in DataLoader(data, batch_size=6, num_workers=2, collate_fn=data.collate)] == [6, 6]


def test_batch_subclasses_survive_to_and_pin_memory(monkeypatch):
    from dataclasses import dataclass

    @dataclass
    class Extended(Batch):
        extra: torch.Tensor | None = None

    b = Extended(text_ids=torch.ones(1, 2, dtype=torch.long), text_mask=torch.ones(1, 2, dtype=torch.bool),
                 segment_ids=torch.zeros(1, 2, dtype=torch.long), extra=torch.ones(3))  # fmt: skip
    moved = b.to("cpu")
    assert type(moved) is Extended and torch.equal(moved.extra, b.extra)
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda t: t.clone())
    assert type(b.pin_memory()) is Extended
