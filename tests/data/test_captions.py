"""Caption corpora: COCO captions JSON, Conceptual Captions TSV, Karpathy splits, JSONL; missing images."""

from __future__ import annotations

import json

import pytest

from mmbert.data.captions import (
    Caption,
    CaptionFormatError,
    detect_caption_format,
    join_with_store,
    read_captions,
    read_coco_captions,
    read_conceptual_captions,
    read_jsonl,
    read_karpathy,
)

COCO = {
    "info": {},
    "images": [
        {"id": 9, "file_name": "COCO_train2014_000000000009.jpg", "height": 480, "width": 640},
        {"id": 25, "file_name": "COCO_train2014_000000000025.jpg", "height": 426, "width": 640},
    ],
    "annotations": [
        {"image_id": 9, "id": 1, "caption": "A dog on a mat. "},
        {"image_id": 25, "id": 2, "caption": "A giraffe eating."},
        {"image_id": 9, "id": 3, "caption": "A red mat."},
    ],
}

KARPATHY = {
    "dataset": "coco",
    "images": [
        {"filename": "COCO_val2014_000000000042.jpg", "imgid": 0, "split": "train", "cocoid": 42,
         "sentences": [{"raw": "A cat.", "tokens": ["a", "cat"], "imgid": 0, "sentid": 0},
                       {"raw": "A cat sits.", "tokens": ["a", "cat", "sits"], "imgid": 0, "sentid": 1}]},
        {"filename": "COCO_val2014_000000000073.jpg", "imgid": 1, "split": "test", "cocoid": 73,
         "sentences": [{"raw": "A bike.", "tokens": ["a", "bike"], "imgid": 1, "sentid": 2}]},
        {"filename": "COCO_val2014_000000000074.jpg", "imgid": 2, "split": "restval", "cocoid": 74,
         "sentences": [{"raw": "A dog.", "tokens": ["a", "dog"], "imgid": 2, "sentid": 3}]},
    ],
}  # fmt: skip

FLICKR = {
    "dataset": "flickr30k",
    "images": [
        {"filename": "1000092795.jpg", "imgid": 0, "split": "val",
         "sentences": [{"tokens": ["two", "men"], "raw": "Two men.", "imgid": 0, "sentid": 0}]},
        {"filename": "10002456.jpg", "imgid": 1, "split": "train",
         "sentences": [{"tokens": ["a", "man"], "raw": "A man.", "imgid": 1, "sentid": 1}]},
    ],
}  # fmt: skip


def write_json(path, data):
    path.write_text(json.dumps(data))
    return path


def test_coco_captions_by_id_and_file_name(tmp_path):
    path = write_json(tmp_path / "captions_train2014.json", COCO)
    assert list(read_coco_captions(path)) == [
        Caption("9", "A dog on a mat."),
        Caption("25", "A giraffe eating."),
        Caption("9", "A red mat."),
    ]
    by_name = list(read_coco_captions(path, image_key="file_name"))
    assert by_name[1] == Caption("COCO_train2014_000000000025", "A giraffe eating.")
    assert detect_caption_format(path) == "coco"
    assert list(read_captions(path)) == list(read_coco_captions(path))


def test_coco_errors_name_file_and_record(tmp_path):
    bad = dict(COCO, annotations=[{"image_id": 9, "id": 1}])
    path = write_json(tmp_path / "bad.json", bad)
    with pytest.raises(CaptionFormatError, match=r"bad\.json: annotations\[0\]"):
        list(read_coco_captions(path))


def test_conceptual_captions_tsv(tmp_path):
    path = tmp_path / "Train_GCC-training.tsv"
    path.write_text("a very typical bus station\thttp://a/1.jpg\nsierra looked stunning\thttp://b/2.jpg\n")
    assert list(read_conceptual_captions(path)) == [
        Caption("0", "a very typical bus station"),
        Caption("1", "sierra looked stunning"),
    ]
    assert [c.image_id for c in read_conceptual_captions(path, image_key="url")] == [
        "http://a/1.jpg",
        "http://b/2.jpg",
    ]
    assert detect_caption_format(path) == "cc"
    # a header naming the columns (img2dataset style): ids from a named column
    headed = tmp_path / "cc_with_header.tsv"
    headed.write_text('url\tcaption\tkey\nhttp://a/1.jpg\tbus "station"\t000000001\n')
    assert list(read_conceptual_captions(headed, image_key="key")) == [Caption("000000001", 'bus "station"')]
    with pytest.raises(ValueError, match="not a column"):
        list(read_conceptual_captions(headed, image_key="image_id"))


def test_karpathy_split_filtering_coco_and_flickr(tmp_path):
    coco = write_json(tmp_path / "dataset_coco.json", KARPATHY)
    assert list(read_karpathy(coco)) == [
        Caption("42", "A cat."),
        Caption("42", "A cat sits."),
        Caption("74", "A dog."),
    ]
    assert list(read_karpathy(coco, splits=["test"])) == [Caption("73", "A bike.")]
    assert len(list(read_karpathy(coco, splits=None))) == 4
    assert [c.image_id for c in read_karpathy(coco, image_key="filename")][0] == "COCO_val2014_000000000042"
    flickr = write_json(tmp_path / "dataset_flickr30k.json", FLICKR)
    assert list(read_karpathy(flickr, splits=["val"])) == [Caption("1000092795", "Two men.")]
    assert detect_caption_format(flickr) == "karpathy"
    with pytest.raises(ValueError, match="unknown Karpathy splits"):
        list(read_karpathy(flickr, splits=["dev"]))


def test_jsonl(tmp_path):
    path = tmp_path / "pretrain.jsonl"
    path.write_text('{"image_id": 7, "caption": "a dog"}\n\n{"image_id": "x1", "caption": " a cat "}\n')
    assert list(read_jsonl(path)) == [Caption("7", "a dog"), Caption("x1", "a cat")]
    assert list(read_captions(path)) == list(read_jsonl(path))
    path.write_text('{"image_id": 7, "caption": "a dog"}\n{"image": 8}\n')
    with pytest.raises(CaptionFormatError, match="pretrain.jsonl: line 2"):
        list(read_jsonl(path))


def test_unknown_format_is_explained(tmp_path):
    path = write_json(tmp_path / "other.json", {"foo": 1})
    with pytest.raises(CaptionFormatError, match="cannot tell the caption format"):
        read_captions(path)


def test_join_with_store_counts_missing():
    caps = [Caption("1", "a"), Caption("2", "b"), Caption("3", "c"), Caption("3", "d"), Caption("4", "e")]
    kept, missing = join_with_store(caps, {"1", "2"})
    assert kept == caps[:2]
    assert (missing.num_captions, missing.num_images, missing.total_captions) == (3, 2, 5)
    assert missing.examples == ["3", "4"] and "3 of 5 captions skipped" in str(missing)
    _, none = join_with_store(caps[:2], {"1", "2"})
    assert not none and "all 2 captions" in str(none)
