"""`mmbert score`: official metrics from prediction files, like the official evaluators."""

from __future__ import annotations

import json

from tasks.test_nlvr2 import write_jsonl as write_nlvr2
from tasks.test_vcr import write_jsonl as write_vcr
from tasks.test_vqa import write_official

from mmbert.cli import main


def vqa_score_argv(files: dict, predictions) -> list[str]:
    """``mmbert score`` on VQA predictions against the official files ``write_official`` wrote."""
    official = ["--questions", str(files["questions"]), "--annotations", str(files["annotations"])]
    return ["score", "--task", "vqa", *official, "--predictions", str(predictions)]


def test_vqa_score_hand_computed(tmp_path, capsys):
    files = write_official(tmp_path)
    # q1: red 6/10 -> 1.0; q2: "two" normalised with the 5 "2" -> 1.0 (8 of 10 after normalisation);
    # q3: yes -> 1.0; q4: green 2/10 -> 0.6; the rest wrong -> 0
    preds = [
        {"question_id": 1, "answer": "Red"},
        {"question_id": 2, "answer": "two"},
        {"question_id": 3, "answer": "yes"},
        {"question_id": 4, "answer": "green"},
    ]
    preds += [{"question_id": q, "answer": "purple"} for q in range(5, 9)]
    (tmp_path / "res.json").write_text(json.dumps(preds))
    argv = [*vqa_score_argv(files, tmp_path / "res.json"), "--out", str(tmp_path / "m.json")]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["overall"] == round(100 * 3.6 / 8, 2)
    assert out["perAnswerType"]["yes/no"] == round(100 / 3, 2)
    assert json.loads((tmp_path / "m.json").read_text()) == out
    # a missing prediction is an error unless allowed
    (tmp_path / "res.json").write_text(json.dumps(preds[:4]))
    assert main(argv) == 1
    assert "have no prediction" in capsys.readouterr().err
    assert main([*argv, "--allow-missing"]) == 0
    assert json.loads(capsys.readouterr().out)["overall"] == 90.0


def test_nlvr2_and_vcr_scores(tmp_path, capsys):
    data = write_nlvr2(tmp_path / "dev.json", n_sets=1)  # dev-0-{0,1}-{0,1}; labels False, True, True, False
    (tmp_path / "p.csv").write_text("dev-0-0-0,False\ndev-0-0-1,True\ndev-0-1-0,False\ndev-0-1-1,False\n")
    assert (
        main(["score", "--task", "nlvr2", "--data", str(data), "--predictions", str(tmp_path / "p.csv")]) == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["accuracy"] == 75.0 and out["consistency"] == 50.0
    vcr = write_vcr(tmp_path / "val.jsonl", n=2)  # labels: (0, 0), (3, 1)
    q2a = [
        {"annot_id": "val-0", "probs": [1, 0, 0, 0], "choice": 0},
        {"annot_id": "val-1", "probs": [0, 0, 0, 1], "choice": 3},
    ]
    qa2r = [
        {"annot_id": "val-0", "probs": [0, 1, 0, 0], "choice": 1},
        {"annot_id": "val-1", "probs": [0, 1, 0, 0], "choice": 1},
    ]
    (tmp_path / "a.json").write_text(json.dumps(q2a))
    (tmp_path / "r.json").write_text(json.dumps(qa2r))
    assert (
        main(
            [
                "score",
                "--task",
                "vcr",
                "--data",
                str(vcr),
                "--predictions",
                str(tmp_path / "a.json"),
                "--rationale-predictions",
                str(tmp_path / "r.json"),
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out) == {
        "q2a": 100.0,
        "qa2r": 50.0,
        "q2ar": 50.0,
        "num_examples": 2,
    }
    assert main(["score", "--task", "vcr", "--predictions", str(tmp_path / "a.json")]) == 1
    assert "needs --data --rationale-predictions" in capsys.readouterr().err
