"""GQA (LXMERT's JSON) and SNLI-VE (official jsonl): readers, vocabularies, metrics, submissions, training."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from tasks.task_fixtures import make_store, tiny_encoder, train_steps

from mmbert.tasks import GQATask, SNLIVETask, TaskModel
from mmbert.tasks.base import TaskDataError
from mmbert.tasks.gqa import gqa_accuracy, read_submission
from mmbert.tasks.snli_ve import entailment_accuracy

GQA = [
    {"img_id": "1", "question_id": "0201", "sent": "is the dog left of the cat?", "label": {"yes": 1.0}},
    {"img_id": "2", "question_id": "0202", "sent": "what color is the car?", "label": {"red": 1.0}},
    {"img_id": "3", "question_id": "0203", "sent": "is there a man?", "label": {"no": 1.0}},
    {"img_id": "1", "question_id": "0204", "sent": "what color is the cat?", "label": {"red": 1.0}},
]
SNLI_VE = [
    {"Flickr30K_ID": "1", "pairID": "p1", "captionID": "1.jpg#0", "sentence1": "a dog", "sentence2": "a dog is there",
     "gold_label": "entailment", "annotator_labels": ["entailment"]},
    {"Flickr30K_ID": "2", "pairID": "p2", "captionID": "2.jpg#0", "sentence1": "a car", "sentence2": "the car is blue",
     "gold_label": "contradiction", "annotator_labels": ["contradiction"]},
    {"Flickr30K_ID": "3", "pairID": "p3", "captionID": "3.jpg#0", "sentence1": "a man", "sentence2": "the man is sad",
     "gold_label": "neutral", "annotator_labels": ["neutral"]},
]  # fmt: skip


def test_gqa_reader_vocab_training_and_submission(tmp_path, tokenizer):
    path = tmp_path / "train.json"
    path.write_text(json.dumps(GQA))
    task = GQATask(max_regions=None)
    data = task.load({"lxmert": path}, tokenizer, make_store(["1", "2", "3"]))
    assert task.answers == ["red", "no", "yes"]  # by frequency, ties alphabetical
    model = TaskModel(tiny_encoder("uniter_tiny"), None)
    model.head = task.build_head(model.encoder)
    losses = train_steps(task, model, data, steps=25, batch_size=4, lr=1e-2)
    assert losses[-1] < 0.5 * losses[0]
    metrics, predictions = task.evaluate(model, data, batch_size=2)
    assert metrics["accuracy"] == 100.0 and metrics["num_binary"] == 2
    out = task.write_predictions(predictions, tmp_path / "submission.json")
    written = json.loads(out.read_text())
    assert written[0] == {"questionId": "0201", "prediction": "yes"}  # a string id, leading zero kept
    assert read_submission(out)["0202"] == "red"
    proc = subprocess.run([sys.executable, "-m", "mmbert", "score", "--task", "gqa", "--data", str(path),
                           "--predictions", str(out)], capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["accuracy"] == 100.0


def test_gqa_accuracy_and_errors(tmp_path):
    labels = {"a": {"yes": 1.0}, "b": {"red": 1.0}, "c": {"no": 1.0}, "d": {"blue": 1.0}}
    out = gqa_accuracy({"a": "yes", "b": "blue", "c": "yes", "d": "blue"}, labels)
    assert (out["accuracy"], out["binary"], out["open"]) == (50.0, 50.0, 50.0)
    with pytest.raises(TaskDataError, match="no prediction"):
        gqa_accuracy({"a": "yes"}, labels)
    bad = tmp_path / "train.json"
    bad.write_text(json.dumps([GQA[0], {"img_id": "2", "sent": "what?"}]))
    with pytest.raises(TaskDataError, match=r"train.json\[1\]: missing field\(s\) \['question_id'\]"):
        GQATask().load({"lxmert": bad}, None)
    bad.write_text(json.dumps([GQA[0], {**GQA[1], "label": "red"}]))
    with pytest.raises(TaskDataError, match=r"\[1\]: 'label' must be"):
        GQATask().load({"lxmert": bad}, None)
    sub = tmp_path / "sub.json"
    sub.write_text(json.dumps([{"questionId": 201, "prediction": "yes"}]))
    with pytest.raises(TaskDataError, match=r"sub.json\[0\]: questionId must be a string"):
        read_submission(sub)


def test_snli_ve_reader_training_and_metric(tmp_path, tokenizer):
    path = tmp_path / "snli_ve_train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in SNLI_VE))
    task = SNLIVETask(max_regions=None)
    data = task.load({"jsonl": path}, tokenizer, make_store(["1", "2", "3"]))
    model = TaskModel(tiny_encoder("visualbert_tiny"), None)
    model.head = task.build_head(model.encoder)
    losses = train_steps(task, model, data, steps=25, batch_size=3, lr=1e-2)
    assert losses[-1] < 0.5 * losses[0]
    metrics, predictions = task.evaluate(model, data)
    assert metrics["accuracy"] == 100.0 and metrics["per_class"]["neutral"] == 100.0
    pred_file = task.write_predictions(predictions, tmp_path / "pred.json")
    proc = subprocess.run([sys.executable, "-m", "mmbert", "score", "--task", "snli-ve", "--data", str(path),
                           "--predictions", str(pred_file)], capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["accuracy"] == 100.0
    per = entailment_accuracy(
        {"p1": "entailment", "p2": "neutral", "p3": "neutral"}, {"p1": 0, "p2": 2, "p3": 1}
    )
    assert per["accuracy"] == pytest.approx(200 / 3) and per["per_class"]["contradiction"] == 0.0


def test_snli_ve_malformed_line_is_named(tmp_path):
    path = tmp_path / "snli_ve_dev.jsonl"
    rows = [json.dumps(SNLI_VE[0]), json.dumps({**SNLI_VE[1], "gold_label": "-"}), json.dumps(SNLI_VE[2])]
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(TaskDataError, match=r"snli_ve_dev.jsonl:2: gold_label '-'"):
        SNLIVETask().load({"jsonl": path}, None)
    data = SNLIVETask(skip_unlabelled=True).load({"jsonl": path}, None)
    assert len(data) == 2 and sum(data.report.counts.values()) == 1  # counted, not silently dropped
    path.write_text(
        json.dumps(SNLI_VE[0]) + "\n" + json.dumps({"Flickr30K_ID": "2", "gold_label": "neutral"}) + "\n"
    )
    with pytest.raises(TaskDataError, match=r"snli_ve_dev.jsonl:2: missing field\(s\) \['sentence2'\]"):
        SNLIVETask().load({"jsonl": path}, None)


def test_snli_ve_duplicate_pair_ids_are_refused_naming_both_lines(tmp_path):
    """A repeated pairID would replace the first pair in scoring: refused in the data and the predictions."""
    path = tmp_path / "snli_ve_test.jsonl"
    path.write_text(
        "\n".join(json.dumps(r) for r in [SNLI_VE[0], SNLI_VE[1], {**SNLI_VE[2], "pairID": "p1"}]) + "\n"
    )
    with pytest.raises(
        TaskDataError, match=r"snli_ve_test.jsonl:3: pairID 'p1' repeats .*snli_ve_test.jsonl:1"
    ):
        SNLIVETask().load({"jsonl": path}, None)
    from mmbert.tasks.snli_ve import score_prediction_file

    data = tmp_path / "snli_ve_dev.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in SNLI_VE) + "\n")
    preds = tmp_path / "predictions.json"
    preds.write_text(json.dumps([{"pairID": "p1", "prediction": "entailment"},
                                 {"pairID": "p1", "prediction": "neutral"}]))  # fmt: skip
    with pytest.raises(
        TaskDataError, match=r"predictions.json\[1\]: pairID 'p1' repeats .*predictions.json\[0\]"
    ):
        score_prediction_file(preds, data)
