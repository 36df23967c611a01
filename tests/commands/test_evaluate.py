"""`mmbert evaluate`: a fine-tuned model on a split (metrics JSON + official prediction file), and
zero-shot retrieval with a pre-trained matching head."""

from __future__ import annotations

import json

from commands.test_finetune import finetune, setup  # noqa: F401 - the fixture
from tasks.task_fixtures import WORDS, make_store, tiny_encoder, vl_tiny_presets
from tasks.test_retrieval import write_karpathy

from mmbert.cli import main
from mmbert.data import features
from mmbert.data.tokenizer import Tokenizer
from mmbert.models.pretraining import PretrainingModel


def test_evaluate_matches_the_finetune_validation(setup, capsys, tmp_path):  # noqa: F811
    root, files = setup
    assert finetune(root, files, root / "run", "--max-steps", "2") == 0
    capsys.readouterr()
    final = root / "run" / "final"
    argv = ["evaluate", "--task", "vqa", "--checkpoint", str(final), "--split", "minival", "--features",
            str(root / "feats.h5"), "--data", f"questions={files['questions']}", f"annotations={files['annotations']}"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["metrics"] == json.loads((final / "val_metrics.json").read_text())
    written = json.loads((final / "eval" / "minival_metrics.json").read_text())
    assert written["overall"] == out["metrics"]["overall"]
    preds = json.loads((final / "eval" / "minival_vqa_results.json").read_text())
    assert preds == json.loads((final / "val_vqa_results.json").read_text())
    # the official scorer agrees with the evaluation
    assert main(["score", "--task", "vqa", "--questions", str(files["questions"]), "--annotations",
                 str(files["annotations"]), "--predictions", str(final / "eval" / "minival_vqa_results.json")]) == 0
    assert json.loads(capsys.readouterr().out)["overall"] == out["metrics"]["overall"]
    # a wrong task for the checkpoint is refused
    argv[2] = "nlvr2"
    assert main(argv) == 1
    assert "fine-tuned for 'vqa'" in capsys.readouterr().err


def test_zero_shot_retrieval(tmp_path, capsys):
    images = [str(1000 + i) for i in range(8)]
    with features.open(tmp_path / "feats.h5", mode="w") as out:
        for rec in make_store(images).values():
            out.write(rec)
    ckpt = tmp_path / "pretrained"
    PretrainingModel(tiny_encoder(vl_tiny_presets()[0])).save(ckpt)
    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    Tokenizer.from_pretrained(tmp_path).save(ckpt)
    argv = ["evaluate", "--task", "retrieval", "--checkpoint", str(ckpt), "--split", "test", "--zero-shot",
            "--data", f"karpathy={write_karpathy(tmp_path / 'k.json')}", "--features", str(tmp_path / "feats.h5"),
            "--out", str(tmp_path / "eval")]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["metrics"]["num_images"] == 3 and out["metrics"]["num_captions"] == 6
    assert {"ir_r@1", "tr_r@10"} <= set(out["metrics"])
    rankings = json.loads((tmp_path / "eval" / "test_retrieval_rankings.json").read_text())
    assert len(rankings) == 6 + 3
    # without --zero-shot a pre-trained checkpoint is not a task model
    assert main([a for a in argv if a != "--zero-shot"]) == 1
    assert "not a fine-tuned task model" in capsys.readouterr().err
