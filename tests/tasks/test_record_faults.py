"""Issue 12, task records (items 6, 9, 10, 11): wrong types and repeats are refused at loading, naming
the file, the record and the field, instead of passing and failing later (or silently scoring wrong)."""

from __future__ import annotations

import json

import pytest
from tasks.task_fixtures import make_store
from tasks.test_refexp import write_files as write_refexp
from tasks.test_vcr import write_jsonl as write_vcr
from tasks.test_vqa import write_official

from mmbert.cli import main
from mmbert.data.captions import CaptionFormatError, read_captions
from mmbert.tasks.base import TaskDataError
from mmbert.tasks.refexp import RefExpTask
from mmbert.tasks.vcr import VCRTask
from mmbert.tasks.vqa import VQATask, read_answer_vocab, read_official_annotations


def _edit(path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_a_duplicate_vqa_question_id_is_refused_naming_both_records(tmp_path):
    """Item 6: before, the second question replaced the first and one question silently left scoring."""
    files = write_official(tmp_path)
    _edit(files["questions"], lambda d: d["questions"][2].update(question_id=d["questions"][0]["question_id"]))
    with pytest.raises(TaskDataError, match=r"questions\[2\]: question_id 1 repeats .*questions\[0\]"):
        read_official_annotations(files["questions"], files["annotations"])
    files = write_official(tmp_path)
    _edit(files["annotations"], lambda d: d["annotations"][3].update(question_id=2))
    with pytest.raises(TaskDataError, match=r"annotations\[3\]: question_id 2 repeats"):
        read_official_annotations(files["questions"], files["annotations"])


@pytest.mark.parametrize(("where", "value", "phrase"), [
    ("answer", 2, r"answers\[0\]: 'answer' must be a string, got int"),
    ("question", 7, r"questions\[1\]: 'question' must be a string, got int"),
    ("question", None, r"'question' must be a string, got NoneType"),
])  # fmt: skip
def test_vqa_ints_and_nulls_are_refused_at_loading(tmp_path, where, value, phrase):
    """Items 9 and 10: an int answer was a traceback in `score`; an int or null question passed loading."""
    files = write_official(tmp_path)
    if where == "answer":
        _edit(files["annotations"], lambda d: d["annotations"][1]["answers"][0].update(answer=value))
    else:
        _edit(files["questions"], lambda d: d["questions"][1].update(question=value))
    with pytest.raises(TaskDataError, match=phrase):
        read_official_annotations(files["questions"], files["annotations"])


def test_score_reports_an_int_answer_in_one_line(tmp_path, capsys):
    files = write_official(tmp_path)
    _edit(files["annotations"], lambda d: d["annotations"][0]["answers"][0].update(answer=3))
    (tmp_path / "res.json").write_text(json.dumps([{"question_id": 1, "answer": "red"}]))
    argv = ["score", "--task", "vqa", "--questions", str(files["questions"]), "--annotations",
            str(files["annotations"]), "--predictions", str(tmp_path / "res.json"), "--allow-missing"]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "must be a string" in err and "Traceback" not in err and len(err.splitlines()) == 1


@pytest.mark.parametrize(("content", "phrase"), [
    ([], "is empty"), ({}, "is empty"), (["yes", 2], "entry 1 is int"), ({"yes": 0, "no": "1"}, "must be integers"),
])  # fmt: skip
def test_answer_vocabularies_with_non_string_labels_or_empty_are_refused(tmp_path, content, phrase):
    """Item 10."""
    (tmp_path / "vocab.json").write_text(json.dumps(content))
    with pytest.raises(TaskDataError, match=phrase):
        read_answer_vocab(tmp_path / "vocab.json")


def test_non_utf8_annotation_and_caption_files_are_named(tmp_path, tokenizer):
    """Item 10: the decoder's own error names no file."""
    files = write_official(tmp_path)
    files["questions"].write_bytes(files["questions"].read_bytes().replace(b"color", b"col\xffor"))
    with pytest.raises(TaskDataError, match=r"q\.json: not UTF-8 text"):
        VQATask(min_answer_count=1).load(files, tokenizer, make_store([10, 11, 12, 13]))
    (tmp_path / "c.jsonl").write_bytes(b'{"image_id": "1", "caption": "a d\xe9g"}\n')
    with pytest.raises(CaptionFormatError, match=r"c\.jsonl: not UTF-8 text"):
        list(read_captions(tmp_path / "c.jsonl"))


@pytest.mark.parametrize(("line", "phrase"), [
    ('{"image_id": "1", "caption": 42}', "must be a string, got int"),
    ('{"image_id": "1", "caption": null}', "must be a string, got NoneType"),
])  # fmt: skip
def test_int_or_null_captions_are_refused(tmp_path, line, phrase):
    (tmp_path / "c.jsonl").write_text(line + "\n")
    with pytest.raises(CaptionFormatError, match=phrase):
        list(read_captions(tmp_path / "c.jsonl"))
    (tmp_path / "c.json").write_text(json.dumps({"annotations": [{"image_id": 1, "id": 1,
                                                                  "caption": json.loads(line)["caption"]}]}))
    with pytest.raises(CaptionFormatError, match=phrase):
        list(read_captions(tmp_path / "c.json"))


@pytest.mark.parametrize(("bbox", "phrase"), [
    (["1", "2", "3", "4"], "four numbers"), ([1, 2], "four numbers"), ([-5, 2, 10, 10], "negative corner"),
    ([1, 2, 0, 10], "non-positive size"),
])  # fmt: skip
def test_refcoco_boxes_as_strings_two_values_or_negative_are_refused(tmp_path, tokenizer, bbox, phrase):
    """Items 10 and 11."""
    store = make_store(["1", "2", "3"])
    files = write_refexp(tmp_path, store)
    _edit(files["instances"], lambda d: d["annotations"][1].update(bbox=bbox))
    with pytest.raises(TaskDataError, match=rf"instances\.json: annotations\[1\]: 'bbox' .*{phrase}"):
        RefExpTask(split="train").load(files, tokenizer, store)


def test_a_vcr_question_given_as_a_plain_string_is_refused(tmp_path, tokenizer):
    """Item 11: it was rendered character by character."""
    path = write_vcr(tmp_path / "val.jsonl", bad={"question": "why is he standing?"})
    with pytest.raises(TaskDataError, match=r"val\.jsonl:3: 'question' must be a list of tokens"):
        VCRTask().load({"data": path}, tokenizer, make_store(["val-0", "val-1", "val-2"]))


def test_a_bad_region_record_names_the_store_and_the_image(tmp_path, tokenizer):
    """Item 10 (fine-tuning side): NaN features found while building a batch name the image."""
    import numpy as np

    files = write_official(tmp_path)
    store = make_store([10, 11, 12, 13])
    store["12"].feats[1, 3] = np.nan
    ds = VQATask(min_answer_count=1).load(files, tokenizer, store)
    with pytest.raises(TaskDataError, match=r"image '12': features contain NaN or inf in region 1"):
        [ds[i] for i in range(len(ds))]


@pytest.mark.parametrize("value", [0, -3, "36", True])
def test_task_size_options_must_be_positive_integers(value):
    """Item 11: max_regions <= 0 was accepted."""
    with pytest.raises(TaskDataError, match="'max_regions' must be a positive integer"):
        VQATask(max_regions=value)
