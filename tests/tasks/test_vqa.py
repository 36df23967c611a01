"""VQA v2: official files in, soft targets, falling loss, official results file out, bad input."""

from __future__ import annotations

import json

import pytest
from tasks.task_fixtures import make_store, tiny_task_model, train_steps

from mmbert.tasks.base import TaskDataError
from mmbert.tasks.vqa import VQATask, read_answer_vocab, read_results

QUESTIONS = [
    (1, 10, "what color is the cat?", ["red"] * 6 + ["blue"] * 4, "other", "what color"),
    (2, 10, "how many dogs are there?", ["two"] * 3 + ["2"] * 5 + ["three"] * 2, "number", "how many"),
    (3, 11, "is the dog sitting?", ["yes"] * 10, "yes/no", "is the"),
    (4, 11, "what color is the car?", ["blue"] * 8 + ["green"] * 2, "other", "what color"),
    (5, 12, "is it sunny?", ["no"] * 9 + ["yes"], "yes/no", "is it"),
    (6, 12, "how many are there?", ["three"] * 10, "number", "how many"),
    (7, 13, "what color is the umbrella?", ["green"] * 7 + ["blue"] * 3, "other", "what color"),
    (8, 13, "is the man holding an umbrella?", ["yes"] * 9 + ["no"], "yes/no", "is the"),
]


def write_official(tmp_path, items=QUESTIONS, drop_field=None):
    qs = {"questions": [{"question_id": q, "image_id": im, "question": t} for q, im, t, *_ in items]}
    anns = {
        "annotations": [
            {
                "question_id": q,
                "image_id": im,
                "question_type": qt,
                "answer_type": at,
                "multiple_choice_answer": ans[0],
                "answers": [
                    {"answer": a, "answer_confidence": "yes", "answer_id": i + 1} for i, a in enumerate(ans)
                ],
            }
            for q, im, _, ans, at, qt in items
        ]
    }
    if drop_field:
        del anns["annotations"][1][drop_field]
    (tmp_path / "q.json").write_text(json.dumps(qs))
    (tmp_path / "a.json").write_text(json.dumps(anns))
    return {"questions": tmp_path / "q.json", "annotations": tmp_path / "a.json"}


@pytest.fixture
def store():
    return make_store([10, 11, 12, 13])


def test_targets_vocab_and_report(tmp_path, tokenizer, store):
    files = write_official(tmp_path)
    task = VQATask(min_answer_count=1)
    ds = task.load(files, tokenizer, store)
    # vocabulary by frequency of the normalised multiple-choice answer ("two" -> "2")
    assert set(task.answers) == {"red", "2", "yes", "blue", "no", "3", "green"}
    ex = ds[1]
    idx = {a: i for i, a in enumerate(task.answers)}
    assert ex.target[idx["2"]] == pytest.approx(1.0)  # 8 of 10 after normalisation
    assert ex.target[idx["3"]] == pytest.approx(0.6)
    assert ex.meta == {"question_id": 2}
    assert not ds.report  # nothing skipped


def test_vqa_finetunes_and_writes_official_results(tmp_path, tokenizer, store):
    files = write_official(tmp_path)
    task = VQATask(min_answer_count=1, dropout=0.0)
    ds = task.load(files, tokenizer, store)
    model = tiny_task_model(task)
    losses = train_steps(task, model, ds, steps=16, batch_size=4)
    assert sum(losses[-2:]) < 0.7 * sum(losses[:2])
    metrics, preds = task.evaluate(model, ds, batch_size=3)
    assert 0.0 <= metrics["overall"] <= 100.0 and metrics["num_questions"] == 8
    path = task.write_predictions(preds, tmp_path / "out" / task.prediction_file)
    back = json.loads(path.read_text())
    assert isinstance(back, list) and {tuple(sorted(r)) for r in back} == {("answer", "question_id")}
    assert read_results(path) == {p["question_id"]: p["answer"] for p in preds}


def test_lxmert_format_and_vocab_file(tmp_path, tokenizer, store):
    items = [
        {
            "answer_type": "other",
            "img_id": "10",
            "label": {"red": 1.0, "blue": 0.9},
            "question_id": 1,
            "question_type": "what color",
            "sent": "what color is the cat?",
        },
        {
            "answer_type": "yes/no",
            "img_id": "11",
            "label": {"maybe": 0.3},
            "question_id": 2,
            "question_type": "is the",
            "sent": "is the dog sitting?",
        },
    ]
    (tmp_path / "lx.json").write_text(json.dumps(items))
    (tmp_path / "ans2label.json").write_text(json.dumps({"red": 0, "blue": 1, "yes": 2}))
    task = VQATask()
    ds = task.load({"lxmert": tmp_path / "lx.json", "answers": tmp_path / "ans2label.json"}, tokenizer, store)
    assert task.answers == ["red", "blue", "yes"]
    assert ds[0].target.tolist() == pytest.approx([1.0, 0.9, 0.0])
    # the answer outside the vocabulary is counted and reported, not dropped silently
    assert ds.report.counts == {
        "human answers outside the answer vocabulary": 1,
        "questions with no answer in the vocabulary (all-zero target)": 1,
    }
    assert "maybe" in ds.report.summary()
    score = task.score([{"question_id": 1, "answer": "blue"}, {"question_id": 2, "answer": "yes"}], ds)
    assert score["overall"] == 45.0


def test_bad_input(tmp_path, tokenizer, store):
    with pytest.raises(TaskDataError, match=r"annotations\[1\]: missing field\(s\) \['answers'\]"):
        VQATask(min_answer_count=1).load(write_official(tmp_path, drop_field="answers"), tokenizer, store)
    # a question whose image is absent from the store is counted and reported
    files = write_official(tmp_path)
    partial = {k: v for k, v in store.items() if k != "13"}
    ds = VQATask(min_answer_count=1).load(files, tokenizer, partial)
    assert len(ds) == 6
    assert ds.report.counts == {"records whose image is absent from the feature store (vqa)": 1}
    with pytest.raises(TaskDataError, match="needs the file"):
        VQATask().load({"annotations": files["annotations"]}, tokenizer, store)
    (tmp_path / "bad.json").write_text(json.dumps({"a": 0, "b": 0}))
    with pytest.raises(TaskDataError, match="without gaps or repeats"):
        read_answer_vocab(tmp_path / "bad.json")
    (tmp_path / "res.json").write_text(json.dumps([{"question_id": 1}]))
    with pytest.raises(TaskDataError, match=r"missing field\(s\) \['answer'\]"):
        read_results(tmp_path / "res.json")


def test_unlabelled_test_split_predicts_without_scoring(tmp_path, tokenizer, store):
    files = write_official(tmp_path)
    task = VQATask(min_answer_count=1)
    task.load(files, tokenizer, store)  # the training split sets the vocabulary
    test = task.load({"questions": files["questions"]}, tokenizer, store)
    assert test[0].target is None
    metrics, preds = task.evaluate(tiny_task_model(task), test, batch_size=8)
    assert metrics == {} and len(preds) == 8 and all(p["answer"] in task.answers for p in preds)
