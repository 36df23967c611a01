"""NLVR2: identifiers -> image pairs, paired head, falling loss, official CSV, bad input."""

from __future__ import annotations

import json

import pytest
from tasks.task_fixtures import make_store, tiny_task_model, train_steps

from mmbert.tasks.base import TaskDataError
from mmbert.tasks.nlvr2 import NLVR2Task, image_ids, read_predictions

SENTENCES = [
    "both images contain a dog",
    "at least one image contains a red car",
    "there are two animals",
    "the left image contains a person",
]


def examples(n_sets):
    lines = []
    for s in range(n_sets):
        for pair in range(2):
            for k, sent in enumerate(SENTENCES[:2]):
                lines.append(
                    {
                        "identifier": f"dev-{s}-{pair}-{k}",
                        "sentence": sent,
                        "label": "True" if (s + pair + k) % 2 else "False",
                        "left_url": "x",
                        "right_url": "y",
                    }
                )
    return lines


def write_jsonl(path, n_sets=3, bad=None, learnable=False):
    lines = examples(n_sets)
    if learnable:  # the label follows the sentence: a tiny model fits it in a few steps
        for x in lines:
            x["label"] = "True" if x["identifier"].endswith("-1") else "False"
    if bad:
        lines[1].update(bad)
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return path


def all_images(n_sets=3):
    return [i for s in range(n_sets) for p in range(2) for i in image_ids(f"dev-{s}-{p}-0")]


def test_image_ids_from_identifier():
    assert image_ids("train-10171-0-0") == ("train-10171-0-img0", "train-10171-0-img1")
    with pytest.raises(ValueError, match="malformed"):
        image_ids("train-10171-0")


def test_nlvr2_finetunes_and_writes_official_csv(tmp_path, tokenizer):
    store = make_store(all_images())
    task = NLVR2Task(dropout=0.0)
    ds = task.load({"data": write_jsonl(tmp_path / "dev.json", learnable=True)}, tokenizer, store)
    assert len(ds) == 12 and len(ds[0].views) == 2
    model = tiny_task_model(task)
    losses = train_steps(task, model, ds, steps=24, batch_size=4, lr=3e-3)
    assert sum(losses[-3:]) < 0.7 * sum(losses[:3])
    metrics, preds = task.evaluate(model, ds, batch_size=5)
    assert set(metrics) >= {"accuracy", "consistency"} and metrics["num_sentences"] == 6
    path = task.write_predictions(preds, tmp_path / task.prediction_file)
    lines = path.read_text().splitlines()
    assert len(lines) == 12 and all(line.split(",")[1] in ("True", "False") for line in lines)
    back = read_predictions(path)
    assert back == {p["identifier"]: p["prediction"] for p in preds}


def test_bad_input(tmp_path, tokenizer):
    store = make_store(all_images())
    with pytest.raises(TaskDataError, match=r"dev.json:2: malformed NLVR2 identifier 'dev-0-x'"):
        NLVR2Task().load(
            {"data": write_jsonl(tmp_path / "dev.json", bad={"identifier": "dev-0-x"})}, tokenizer, store
        )
    with pytest.raises(TaskDataError, match="label must be 'True' or 'False'"):
        NLVR2Task().load(
            {"data": write_jsonl(tmp_path / "dev.json", bad={"label": "maybe"})}, tokenizer, store
        )
    bad = write_jsonl(tmp_path / "dev.json")
    rows = bad.read_text().splitlines()
    rows[0] = json.dumps({"identifier": "dev-0-0-0", "label": "True"})
    bad.write_text("\n".join(rows))
    with pytest.raises(TaskDataError, match=r"dev.json:1: missing field\(s\) \['sentence'\]"):
        NLVR2Task().load({"data": bad}, tokenizer, store)
    partial = {k: v for k, v in store.items() if k != "dev-2-1-img1"}
    ds = NLVR2Task().load({"data": write_jsonl(tmp_path / "dev.json")}, tokenizer, partial)
    assert len(ds) == 10 and ds.report.counts == {
        "records whose image is absent from the feature store (nlvr2)": 1
    }
