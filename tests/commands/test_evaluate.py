"""`mmbert evaluate`: a fine-tuned model on a split (metrics JSON + official prediction file), and
zero-shot retrieval with a pre-trained matching head."""

from __future__ import annotations

import json

import numpy as np
from commands.test_finetune import finetune, setup  # noqa: F401 - the fixture
from commands.test_score import vqa_score_argv
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
    argv = [
        "evaluate",
        "--task",
        "vqa",
        "--checkpoint",
        str(final),
        "--split",
        "minival",
        "--features",
        str(root / "feats.h5"),
        "--data",
        f"questions={files['questions']}",
        f"annotations={files['annotations']}",
    ]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["metrics"] == json.loads((final / "val_metrics.json").read_text())
    written = json.loads((final / "eval" / "minival_metrics.json").read_text())
    assert written["overall"] == out["metrics"]["overall"]
    preds = json.loads((final / "eval" / "minival_vqa_results.json").read_text())
    assert preds == json.loads((final / "val_vqa_results.json").read_text())
    # the official scorer agrees with the evaluation
    assert main(vqa_score_argv(files, final / "eval" / "minival_vqa_results.json")) == 0
    assert json.loads(capsys.readouterr().out)["overall"] == out["metrics"]["overall"]
    # a store whose feature width is not the model's region_feat_dim fails at start-up, naming both
    with features.open(root / "wide.h5", mode="w") as out:
        for rec in make_store([10, 11, 12, 13]).values():
            rec.feats = np.concatenate([rec.feats, rec.feats[:, :8]], axis=1)  # 16 -> 24 wide
            out.write(rec)
    wide = [*argv[: argv.index("--features") + 1], str(root / "wide.h5"), *argv[argv.index("--features") + 2 :]]
    assert main(wide) == 1
    err = capsys.readouterr().err
    assert "features are 24-d" in err and "region_feat_dim is 16" in err and "wide.h5" in err
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
    (tmp_path / "vocab.txt").write_text(
        "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n"
    )
    Tokenizer.from_pretrained(tmp_path).save(ckpt)
    argv = [
        "evaluate",
        "--task",
        "retrieval",
        "--checkpoint",
        str(ckpt),
        "--split",
        "test",
        "--zero-shot",
        "--data",
        f"karpathy={write_karpathy(tmp_path / 'k.json')}",
        "--features",
        str(tmp_path / "feats.h5"),
        "--out",
        str(tmp_path / "eval"),
    ]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["metrics"]["num_images"] == 3 and out["metrics"]["num_captions"] == 6
    assert {"ir_r@1", "tr_r@10"} <= set(out["metrics"])
    rankings = json.loads((tmp_path / "eval" / "test_retrieval_rankings.json").read_text())
    assert len(rankings) == 6 + 3
    # without --zero-shot a pre-trained checkpoint is not a task model
    assert main([a for a in argv if a != "--zero-shot"]) == 1
    assert "not a fine-tuned task model" in capsys.readouterr().err


def test_refexp_several_splits_and_pickle_opt_in(tmp_path, capsys):
    import pickle

    from tasks.test_refexp import write_files

    store = make_store(["1", "2", "3", "4"])
    with features.open(tmp_path / "feats.h5", mode="w") as out:
        for rec in store.values():
            out.write(rec)
    files = write_files(tmp_path, store, suffix=".p")
    # the fixture has train and val refs; add a testA copy of the val ones
    refs = pickle.loads(files["refs"].read_bytes())
    refs += [{**r, "split": "testA", "ref_id": r["ref_id"] + 10_000} for r in refs if r["split"] == "val"]
    files["refs"].write_bytes(pickle.dumps(refs))
    (tmp_path / "vocab.txt").write_text(
        "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n"
    )
    tok = str(tmp_path)
    data = [f"refs={files['refs']}", f"instances={files['instances']}"]
    run = tmp_path / "run"
    common = ["--features", str(tmp_path / "feats.h5")]
    argv = [
        "finetune",
        "--task",
        "refexp",
        "--init",
        vl_tiny_presets()[0],
        "--out",
        str(run),
        "--tokenizer",
        tok,
        *common,
        "--train",
        *data,
        "--max-steps",
        "1",
        "--batch-size",
        "3",
        "model.vocab_size=64",
        "progress=false",
    ]
    assert main(argv) == 1
    assert "--trust-pickle" in capsys.readouterr().err
    assert main([*argv, "--trust-pickle"]) == 0
    capsys.readouterr()
    assert (
        main(
            [
                "evaluate",
                "--task",
                "refexp",
                "--checkpoint",
                str(run / "final"),
                "--split",
                "val,testA",
                "--trust-pickle",
                *common,
                "--data",
                *data,
            ]
        )
        == 0
    )
    lines = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert [x["split"] for x in lines] == ["val", "testA"]
    assert lines[0]["metrics"]["accuracy"] == lines[1]["metrics"]["accuracy"]  # same refs, same model
    assert (run / "final" / "eval" / "testA_refexp_predictions.json").is_file()
