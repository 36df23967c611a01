"""``mmbert pretrain``: a short run end to end, and each bad input refused with a clear error up front."""

from __future__ import annotations

import json

import pytest

from mmbert.cli import main
from mmbert.data.synthetic.generate import generate
from mmbert.data.synthetic.scenes import WorldConfig


def vocab_arg(world) -> str:
    """The setting that sizes the model's vocabulary to the world's tokenizer (vocab.txt, one token a line)."""
    return f"model.vocab_size={len((world / 'vocab.txt').read_text().splitlines())}"


# Tiny models: one intra-op thread is much faster than two on a loaded 2-core machine.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    generate(root, num_images=12, seed=0, config=WorldConfig(feat_dim=16, max_objects=3), render_images=False,
             nlvr2_pairs=0)  # fmt: skip
    return root


def pretrain(world, out, *extra: str) -> list[str]:
    """The command line; options first, then the key=value settings (argparse wants them last)."""
    options = [a for a in extra if a.startswith("--") or "=" not in a]
    settings = [a for a in extra if a not in options]
    return ["pretrain", "--model", "uniter_tiny", "--captions", str(world / "captions_train.json"),
            "--features", str(world / "features.tsv"), "--tokenizer", str(world), "--out", str(out),
            "--batch-size", "4", *options,
            "progress=false", "log_every=1", vocab_arg(world), "model.num_region_classes=6", *settings]  # fmt: skip


def error_of(argv, capsys) -> str:
    assert main(argv) == 1
    return capsys.readouterr().err


def test_a_short_run_writes_run_json_metrics_checkpoints_and_the_final_model(world, tmp_path, capsys):
    out = tmp_path / "run"
    eval_captions = ["--eval-captions", str(world / "captions_train.json"), "eval_every=2", "eval_batches=4"]
    assert main(pretrain(world, out, "--max-steps", "3", *eval_captions, "save_every=2", "lr=1e-3")) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["step"] == 3
    run = json.loads((out / "run.json").read_text())
    assert run["model"] == "uniter_tiny" and run["objectives"] == ["itm_wra", "mlm", "mrfr", "mrckl"]
    assert run["train"]["lr"] == 1e-3 and f"model.vocab_size={run['model_config']['vocab_size']}" == vocab_arg(world)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3]
    assert [r["step"] for r in records if "eval_loss" in r] == [2, 3]
    # UNITER's recipe: one task per step by 2:2:1:1, the evaluation cycles through all four tasks
    assert run["recipe"]["mix_ratio"] == {"itm_wra": 2, "mlm": 2, "mrfr": 1, "mrckl": 1}
    assert run["recipe"]["negative"] == "image" and run["recipe"]["region_rule"] == "uniter"
    assert {"loss", "mlm_loss", "itm_loss", "itm_ot_loss", "mrfr_loss", "mrckl_loss"} <= set(summary["eval"])
    assert all(sum(f"{t}_loss" in r for t in ("itm", "mlm", "mrfr", "mrckl")) == 1 for r in records if "loss" in r)
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == ["best.pt", "step-00000002.pt", "step-00000003.pt"]  # the first evaluation is a best
    assert (out / "final" / "model.safetensors").exists() and (out / "final" / "vocab.txt").exists()
    # continuing the finished run to more steps
    assert main(pretrain(world, out, "--max-steps", "4", "--resume", "save_every=2", "lr=1e-3")) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["step"] == 4
    # the same directory without --resume is refused rather than overwritten
    assert "already holds checkpoints" in error_of(pretrain(world, out, "--max-steps", "2"), capsys)


def test_unknown_keys_list_the_valid_ones_and_wrong_types_name_the_key(world, tmp_path, capsys):
    err = error_of(pretrain(world, tmp_path / "a", "warmup_stepz=3"), capsys)
    assert "unknown setting 'warmup_stepz'" in err and "warmup_steps" in err
    assert "'lr'" in error_of(pretrain(world, tmp_path / "b", 'lr="fast"'), capsys)
    assert "whole_word" in error_of(pretrain(world, tmp_path / "c", "whole_word=3"), capsys)
    assert "bogus" in error_of(pretrain(world, tmp_path / "d", "model.bogus=1"), capsys)
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"max_steps": 2, "optimizer": "sgd"}))
    assert "unknown setting 'optimizer'" in error_of(pretrain(world, tmp_path / "e", "--config", str(config)), capsys)
    config.write_text("{not json")
    assert "not valid JSON" in error_of(pretrain(world, tmp_path / "f", "--config", str(config)), capsys)
    assert not any((tmp_path / x).exists() for x in "abcdef")  # nothing was started
    # settings after --objectives are still settings, not objective names
    err = error_of(pretrain(world, tmp_path / "g", "--objectives", "mlm", "bogus", "lr=1e-3"), capsys)
    assert "unknown objectives ['bogus']" in err


def test_missing_or_malformed_captions_and_stores(world, tmp_path, capsys):
    base = pretrain(world, tmp_path / "x")
    missing_captions = [a if a != str(world / "captions_train.json") else str(tmp_path / "nope.json") for a in base]
    assert "nope.json" in error_of(missing_captions, capsys)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"images": []}))
    bad_captions = [a if a != str(world / "captions_train.json") else str(bad) for a in base]
    assert "bad.json" in error_of(bad_captions, capsys)
    missing_store = [a if a != str(world / "features.tsv") else str(tmp_path / "nope.tsv") for a in base]
    assert "nope.tsv" in error_of(missing_store, capsys)
    garbage = tmp_path / "garbage.tsv"
    garbage.write_text("this\tis not\ta feature store\n")
    assert "garbage.tsv" in error_of([a if a != str(world / "features.tsv") else str(garbage) for a in base], capsys)
    wrong_dim = [*base, "model.region_feat_dim=8"]
    assert "region_feat_dim=16" in error_of(wrong_dim, capsys)
    small_vocab = [a for a in base if a != vocab_arg(world)]
    assert vocab_arg(world) in error_of(small_vocab, capsys)


def test_resume_from_a_run_of_another_model_is_refused(world, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(pretrain(world, out, "--max-steps", "1")) == 0
    capsys.readouterr()
    other = [a if a != "uniter_tiny" else "unicoder_vl_tiny" for a in pretrain(world, out, "--max-steps", "2")]
    err = error_of([*other, "--resume"], capsys)
    assert "is a run of 'uniter_tiny'" in err
    resized = pretrain(world, out, "--max-steps", "2", "--resume", "model.dim=64")
    assert "dim" in error_of(resized, capsys)
    assert "no run.json" in error_of(pretrain(world, tmp_path / "new", "--resume"), capsys)


def test_lxmert_pretrains_with_image_qa_when_given_questions(world, tmp_path, capsys):
    vqa = world / "vqa"
    argv = ["pretrain", "--model", "lxmert_tiny", "--captions", str(world / "captions_train.json"),
            "--features", str(world / "features.tsv"), "--tokenizer", str(world), "--out", str(tmp_path / "run"),
            "--batch-size", "4", "--max-steps", "2",
            "--questions", str(vqa / "v2_OpenEnded_synthetic_train_questions.json"),
            "--answers", str(vqa / "v2_synthetic_train_annotations.json")]  # fmt: skip
    settings = ["progress=false", vocab_arg(world), "model.num_object_labels=6", "model.num_attr_labels=7"]
    assert "--answer-vocab" in error_of([*argv, *settings], capsys)
    argv += ["--answer-vocab", str(vqa / "answers.json")]
    n = len(json.loads((vqa / "answers.json").read_text()))
    assert f"model.num_qa_labels={n}" in error_of([*argv, *settings], capsys)
    assert main([*argv, *settings, f"model.num_qa_labels={n}"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert "qa_loss" in summary["metrics"]
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["objectives"] == ["mlm", "obj", "attr", "feat", "itm", "qa"]
    # without questions LXMERT's QA is left out, and asking for it is an error
    no_qa = [a for a in argv[: argv.index("--questions")]] + ["--out", str(tmp_path / "b")]
    assert "needs question-answer data" in error_of([*no_qa, "--objectives", "mlm", "qa", *settings], capsys)


def test_unimo_pretrains_with_text_only_and_image_only_corpora_mixed_in(world, tmp_path, capsys):
    (tmp_path / "texts.txt").write_text("a red circle above a blue square\ntwo green stars\n")
    argv = pretrain(world, tmp_path / "u", "--text-corpus", str(tmp_path / "texts.txt"), "--image-corpus", "all",
                    "--scenes", str(world / "scenes.json"), "max_steps=2", "model.region_feat_dim=16",
                    "cmcl_temperature=0.1")  # fmt: skip
    argv[argv.index("uniter_tiny")] = "unimo_tiny"
    assert main(argv) == 0
    run = json.loads((tmp_path / "u" / "run.json").read_text())
    assert run["objectives"] == ["mlm", "mrfr", "mrc_kl", "cmcl", "seq2seq"]
    rows = [json.loads(line) for line in (tmp_path / "u" / "metrics.jsonl").read_text().splitlines()]
    assert any("cmcl_loss" in r for r in rows)
    assert (tmp_path / "u" / "final" / "config.json").exists()
    capsys.readouterr()
    # (--text-corpus is every model's text-only stream; the image-only corpus is UNIMO's alone)
    err = error_of(pretrain(world, tmp_path / "x", "--image-corpus", "all"), capsys)
    assert "--image-corpus is for UNIMO's mixed pre-training, not uniter_tiny" in err


def test_unimo_retrieved_image_positives_resume_with_the_same_draws(world, tmp_path, capsys):
    def argv(out, steps: int, *extra: str) -> list[str]:
        a = pretrain(world, out, "--image-corpus", "all", "--scenes", str(world / "scenes.json"), "--image-positives",
                     "1", *extra, f"max_steps={steps}", "save_every=2", "model.region_feat_dim=16",
                     "cmcl_image_neighbours=3", "cmcl_temperature=0.1", "schedule=constant")  # fmt: skip
        a[a.index("uniter_tiny")] = "unimo_tiny"
        return a

    def cmcl_rows(out) -> list[tuple]:
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        return [(r["step"], r["cmcl_retrieved_images"], r["cmcl_loss"]) for r in rows if "cmcl_loss" in r]

    straight, split = tmp_path / "straight", tmp_path / "split"
    assert main(argv(straight, 4)) == 0
    assert main(argv(split, 2)) == 0
    index = split / "cmcl_related_images.json"
    written = index.stat().st_mtime_ns
    assert main(argv(split, 4, "--resume")) == 0
    assert index.stat().st_mtime_ns == written  # the cached retrieval is reused, not rebuilt
    assert json.loads(index.read_text())["fingerprint"]["k"] == 3
    want = cmcl_rows(straight)
    assert [r[:2] for r in cmcl_rows(split)] == [r[:2] for r in want] and any(r[1] > 0 for r in want)
    assert [r[2] for r in cmcl_rows(split)] == pytest.approx([r[2] for r in want], rel=1e-5)
    run = json.loads((straight / "run.json").read_text())
    assert run["data"]["cmcl_image_positives"] == 1 and run["data"]["cmcl_image_retrieval"] == "labels"
    capsys.readouterr()
    no_pool = [a for a in argv(tmp_path / "x", 1) if a not in ("--image-corpus", "all")]
    assert "pass --image-corpus" in error_of(no_pool, capsys)
    err = error_of(pretrain(world, tmp_path / "y", "--image-positives", "1"), capsys)
    assert "--image-positives is for UNIMO's mixed pre-training, not uniter_tiny" in err


def write_corpus(path, world) -> None:
    """A plain text corpus from the world's captions: one sentence per line, 4 sentences a document."""
    captions = [c["caption"] for c in json.loads((world / "captions_train.json").read_text())["annotations"]]
    docs = [captions[i : i + 4] for i in range(0, len(captions), 4)]
    path.write_text("\n\n".join("\n".join(d) for d in docs) + "\n")


def test_bert_runs_its_own_recipe_on_a_plain_text_corpus(world, tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    write_corpus(corpus, world)
    out = tmp_path / "bert"
    argv = ["pretrain", "--model", "bert_tiny", "--text-corpus", str(corpus), "--tokenizer", str(world),
            "--out", str(out), "--batch-size", "4", "--max-steps", "2", "progress=false", "log_every=1",
            vocab_arg(world)]  # fmt: skip
    assert main(argv) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["objectives"] == ["mlm", "nsp"] and run["text_corpus"] == str(corpus)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all({"mlm_loss", "nsp_loss"} <= set(r) for r in records) and len(records) == 2
    capsys.readouterr()
    no_corpus = [a for a in argv if a not in ("--text-corpus", str(corpus))]
    assert "pass --text-corpus" in error_of(no_corpus, capsys)
    with_images = [*argv[:3], "--captions", str(world / "captions_train.json"), *argv[3:]]
    assert "text-only model" in error_of(with_images, capsys)
    assert "pass --captions and --features" in error_of(
        ["pretrain", "--model", "uniter_tiny", "--text-corpus", str(corpus), "--out", str(tmp_path / "x")], capsys
    )


def test_recipe_deviations_are_named_settings_written_to_run_json(world, tmp_path, capsys):
    out = tmp_path / "plain"
    argv = pretrain(world, out, "--max-steps", "1", "mix_ratio=[]", "negative=caption", "region_rule=zero",
                    "force_one=false")  # fmt: skip
    assert main(argv) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["recipe"]["mix_ratio"] is None and run["recipe"]["negative"] == "caption"
    assert run["recipe"]["region_rule"] == "zero" and run["recipe"]["force_one"] is False
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert {"itm_loss", "mlm_loss", "mrfr_loss", "mrckl_loss"} <= set(record)  # every objective, every step
    capsys.readouterr()
    assert "not one of" in error_of(pretrain(world, tmp_path / "b", "region_rule=bogus"), capsys)
    assert "one weight per objective" in error_of(pretrain(world, tmp_path / "c", "mix_ratio=1,2"), capsys)
    assert "mix_ratio" in error_of(pretrain(world, tmp_path / "d", 'mix_ratio="x"'), capsys)


def test_vl_bert_mixes_in_a_text_only_stream(world, tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    write_corpus(corpus, world)
    out = tmp_path / "vlbert"
    argv = ["pretrain", "--model", "vl_bert_tiny", "--captions", str(world / "captions_train.json"),
            "--features", str(world / "features.tsv"), "--tokenizer", str(world), "--out", str(out),
            "--text-corpus", str(corpus), "--batch-size", "4", "--max-steps", "2", "progress=false", "log_every=1",
            vocab_arg(world), "model.num_region_classes=6"]  # fmt: skip
    assert main(argv) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["recipe"]["text_ratio"] == 1.0 and run["recipe"]["region_rule"] == "vl_bert"
    assert run["recipe"]["whole_word"] is True and run["objectives"] == ["mlm", "mvrc_soft"]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all({"mlm_loss", "mlm_text_loss", "mvrc_soft_loss"} <= set(r) for r in records)
    capsys.readouterr()
    no_corpus = [a for a in argv if a not in ("--text-corpus", str(corpus))]
    assert main([*no_corpus[:-6], "--out", str(tmp_path / "plain"), *no_corpus[-6:]]) == 0
    assert "text-only corpus stream" in capsys.readouterr().out  # said, not silently dropped


def test_optimizer_in_backward_is_a_setting_refused_with_clipping(world, tmp_path, capsys):
    err = error_of(pretrain(world, tmp_path / "a", "--max-steps", "2", "optimizer_in_backward=true"), capsys)
    assert "optimizer_in_backward=true cannot be combined with max_grad_norm=1.0" in err
    assert not (tmp_path / "a").exists()  # refused before anything started
    out = tmp_path / "b"
    assert main(pretrain(world, out, "--max-steps", "2", "optimizer_in_backward=true", "max_grad_norm=0")) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["train"]["optimizer_in_backward"] is True and run["train"]["max_grad_norm"] == 0
