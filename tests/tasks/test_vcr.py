"""VCR: object references, Q->A and QA->R, falling loss, joint Q->AR, leaderboard CSV, bad input."""

from __future__ import annotations

import csv
import json

import pytest
from tasks.task_fixtures import make_store, tiny_task_model, train_steps

from mmbert.tasks.base import TaskDataError
from mmbert.tasks.vcr import VCRTask, read_predictions, render, vcr_joint, write_leaderboard_csv

ANSWERS = [["he", "wants", "rain"], ["it", "is", "sunny"], [[0], "is", "sitting"], ["two", "dogs"]]
RATIONALES = [["because", [1], "is", "holding", "an", "umbrella"], ["there", "are", "two"], ["no"], ["yes"]]


def write_jsonl(path, n=6, bad=None):
    lines = []
    for i in range(n):
        lines.append(
            {
                "annot_id": f"val-{i}",
                "img_id": f"val-{i % 3}",
                "img_fn": f"movie/{i % 3}.jpg",
                "objects": ["person", "person", "umbrella"],
                "question": ["why", "is", [0, 1], "standing", "?"],
                "answer_choices": ANSWERS[i % 4 :] + ANSWERS[: i % 4],
                "answer_label": (4 - i % 4) % 4,
                "rationale_choices": RATIONALES,
                "rationale_label": i % 2,
            }
        )
    if bad:
        lines[2].update(bad)
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return path


@pytest.fixture
def store():
    return make_store([f"val-{i}" for i in range(3)])


def test_object_references_render_as_class_names():
    assert (
        render(["why", "is", [0, 1], "here", "?"], ["person", "dog"], "x") == "why is person and dog here ?"
    )
    with pytest.raises(TaskDataError, match=r"object reference \[5\] outside the 2 objects"):
        render([[5]], ["person", "dog"], "x")


@pytest.mark.parametrize("mode", ["q2a", "qa2r"])
def test_vcr_finetunes(tmp_path, tokenizer, store, mode):
    task = VCRTask(mode=mode)
    ds = task.load({"data": write_jsonl(tmp_path / "val.jsonl")}, tokenizer, store)
    assert len(ds) == 6 and len(ds[0].views) == 4
    model = tiny_task_model(task)
    losses = train_steps(task, model, ds, steps=12, batch_size=3, lr=3e-3)
    assert sum(losses[-2:]) < 0.7 * sum(losses[:2])
    metrics, preds = task.evaluate(model, ds, batch_size=4)
    assert metrics["mode"] == mode and metrics["num_examples"] == 6
    path = task.write_predictions(preds, tmp_path / f"{mode}.json")
    back = read_predictions(path)
    assert len(back) == 6 and all(len(p["probs"]) == 4 for p in back)


def test_joint_accuracy_and_leaderboard_csv(tmp_path, tokenizer, store):
    data = write_jsonl(tmp_path / "val.jsonl", n=2)
    # labels: val-0 answer 0 rationale 0; val-1 answer 3 rationale 1
    q2a = [
        {"annot_id": "val-0", "probs": [0.7, 0.1, 0.1, 0.1], "choice": 0},
        {"annot_id": "val-1", "probs": [0.7, 0.1, 0.1, 0.1], "choice": 0},
    ]
    qa2r = [
        {"annot_id": "val-0", "probs": [0.6, 0.2, 0.1, 0.1], "choice": 0},
        {"annot_id": "val-1", "probs": [0.1, 0.6, 0.2, 0.1], "choice": 1},
    ]
    assert vcr_joint(q2a, qa2r, data) == {"q2a": 50.0, "qa2r": 100.0, "q2ar": 50.0, "num_examples": 2}
    with pytest.raises(ValueError, match="lack a Q->A or QA->R prediction"):
        vcr_joint(q2a[:1], qa2r, data)
    # the leaderboard needs rationales scored with every answer
    task = VCRTask(mode="qa2r", condition_on="all")
    ds = task.load({"data": data}, tokenizer, store)
    assert len(ds) == 8  # 2 questions x 4 answers to condition on
    _, preds = task.evaluate(tiny_task_model(task), ds)
    path = write_leaderboard_csv(q2a, preds, tmp_path / "submission.csv")
    rows = list(csv.reader(path.open()))
    assert rows[0][:2] == ["annot_id", "answer_0"] and rows[0][-1] == "rationale_conditioned_on_a3_3"
    assert len(rows) == 3 and all(len(r) == 21 for r in rows)
    with pytest.raises(ValueError, match="conditioned on every answer"):
        write_leaderboard_csv(q2a, qa2r, tmp_path / "x.csv")


def test_bad_input(tmp_path, tokenizer, store):
    with pytest.raises(TaskDataError, match=r"val.jsonl:3: missing field\(s\) \['question'\]"):
        bad = write_jsonl(tmp_path / "val.jsonl")
        rows = [json.loads(x) for x in bad.read_text().splitlines()]
        del rows[2]["question"]
        bad.write_text("\n".join(json.dumps(r) for r in rows))
        VCRTask().load({"data": bad}, tokenizer, store)
    with pytest.raises(TaskDataError, match="answer_label 7 is not 0..3"):
        VCRTask().load(
            {"data": write_jsonl(tmp_path / "val.jsonl", bad={"answer_label": 7})}, tokenizer, store
        )
    partial = {k: v for k, v in store.items() if k != "val-1"}
    ds = VCRTask().load({"data": write_jsonl(tmp_path / "val.jsonl")}, tokenizer, partial)
    assert len(ds) == 4 and ds.report.counts == {
        "records whose image is absent from the feature store (vcr)": 1
    }
