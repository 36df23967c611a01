"""`mmbert finetune`: official files in, the shared trainer, exact resume, final model + val predictions."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from tasks.task_fixtures import WORDS, make_store, vl_tiny_presets
from tasks.test_vqa import write_official

from mmbert.cli import main
from mmbert.data import features


@pytest.fixture
def setup(tmp_path):
    files = write_official(tmp_path)
    with features.open(tmp_path / "feats.h5", mode="w") as out:
        for rec in make_store([10, 11, 12, 13]).values():
            out.write(rec)
    tok = tmp_path / "tok"
    tok.mkdir()
    (tok / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    return tmp_path, files


def vqa_finetune_argv(out) -> list[str]:
    """``mmbert finetune`` on VQA from the first tiny V&L preset into ``out``: how every call here starts."""
    return ["finetune", "--task", "vqa", "--init", vl_tiny_presets()[0], "--out", str(out)]


def finetune(tmp_path, files, out, *extra):
    data = [f"questions={files['questions']}", f"annotations={files['annotations']}"]
    argv = [
        *vqa_finetune_argv(out),
        "--features",
        str(tmp_path / "feats.h5"),
        "--tokenizer",
        str(tmp_path / "tok"),
        "--train",
        *data,
        "--val",
        *data,
        "--batch-size",
        "4",
        "--lr",
        "3e-3",
        "model.vocab_size=64",
        "task.min_answer_count=1",
        "progress=false",
        "schedule=constant",
        "save_every=2",
        "log_every=1",
        *extra,
    ]
    return main(argv)


def test_finetune_writes_final_model_and_val_predictions(setup, capsys):
    tmp_path, files = setup
    assert finetune(tmp_path, files, tmp_path / "run", "--max-steps", "4") == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["step"] == 4 and "overall" in summary["val"]
    final = tmp_path / "run" / "final"
    assert {"config.json", "model.safetensors", "task.json", "vocab.txt"} <= {p.name for p in final.iterdir()}
    task = json.loads((final / "task.json").read_text())
    assert task["task"] == "vqa" and "2" in task["options"]["answer_list"]
    preds = json.loads((final / "val_vqa_results.json").read_text())
    assert len(preds) == 8 and set(preds[0]) == {"question_id", "answer"}
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 4 and all(v == v for v in losses)


def test_resume_gives_the_same_weights(setup, capsys):
    tmp_path, files = setup
    assert finetune(tmp_path, files, tmp_path / "whole", "--max-steps", "4") == 0
    assert finetune(tmp_path, files, tmp_path / "broken", "--max-steps", "2") == 0
    assert finetune(tmp_path, files, tmp_path / "broken", "--max-steps", "4", "--resume") == 0
    a = load_file(tmp_path / "whole" / "final" / "model.safetensors")
    b = load_file(tmp_path / "broken" / "final" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # without --resume an existing run is refused
    assert finetune(tmp_path, files, tmp_path / "whole", "--max-steps", "4") == 1
    assert "already holds checkpoints" in capsys.readouterr().err


def test_bad_arguments(setup, capsys):
    tmp_path, files = setup
    assert (
        main(["finetune", "--task", "nope", "--init", "x", "--out", str(tmp_path / "o"), "--train", "a=b"])
        == 1
    )
    assert "unknown task 'nope'" in capsys.readouterr().err
    assert finetune(tmp_path, files, tmp_path / "o", "task.colour=red") == 1
    assert "its options:" in capsys.readouterr().err
    no_questions = ["--train", f"annotations={files['annotations']}", "model.vocab_size=64"]
    assert main([*vqa_finetune_argv(tmp_path / "o"), "--tokenizer", str(tmp_path / "tok"), *no_questions]) == 1
    assert "needs the file(s) ['questions']" in capsys.readouterr().err


def test_a_feature_width_other_than_region_feat_dim_fails_at_start_naming_both(setup, tmp_path, capsys):
    tmp, files = setup
    assert finetune(tmp, files, tmp_path / "run", "model.region_feat_dim=24") == 1
    err = capsys.readouterr().err
    assert "features are 16-d" in err and "region_feat_dim is 24" in err and "feats.h5" in err
    assert not (tmp_path / "run").exists()


def test_the_task_names_in_help_are_the_registry():
    from mmbert.commands.finetune import TASK_NAMES
    from mmbert.tasks import TASKS

    assert set(TASK_NAMES) == set(TASKS)
