"""Caption metrics: mmbert's wrapper equals pycocoevalcap's COCOEvalCap on tricky cases; readers name bad records."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mmbert.tasks import caption_metrics as cm
from mmbert.tasks.base import TaskDataError

# punctuation, repeated n-grams, an empty prediction, references of different lengths and numbers
ANNOTATIONS = {
    "info": {"description": "tricky cases"},
    "images": [{"id": i, "file_name": f"{i}.jpg"} for i in (1, 2, 3, 4, 5)],
    "annotations": [
        {"id": 1, "image_id": 1, "caption": "A man, riding a horse!"},
        {"id": 2, "image_id": 1, "caption": "a man rides a brown horse on the beach ."},
        {"id": 3, "image_id": 1, "caption": "Man on horse."},
        {"id": 4, "image_id": 2, "caption": "two dogs play in the snow"},
        {"id": 5, "image_id": 3, "caption": "a cat a cat a cat"},
        {"id": 6, "image_id": 3, "caption": "A cat sits on a mat; it's sleepy..."},
        {"id": 7, "image_id": 4, "caption": "a plate of food (pasta) with a fork"},
        {"id": 8, "image_id": 4, "caption": "food"},
        {
            "id": 9,
            "image_id": 4,
            "caption": "A white plate holding a big pile of pasta next to a silver fork and a glass.",
        },
        {"id": 10, "image_id": 4, "caption": "pasta on a plate"},
        {"id": 11, "image_id": 5, "caption": "a red bus driving down a city street"},
    ],
}
RESULTS = [
    {"image_id": 1, "caption": "a man riding a horse."},
    {"image_id": 2, "caption": ""},
    {"image_id": 3, "caption": "a cat a cat a cat a cat a cat"},
    {"image_id": 4, "caption": "a plate of pasta , with a fork !!"},
    {"image_id": 5, "caption": "A red bus driving down a city street"},
]
OFFICIAL_NAMES = {"bleu_1": "Bleu_1", "bleu_2": "Bleu_2", "bleu_3": "Bleu_3", "bleu_4": "Bleu_4",
                  "meteor": "METEOR", "rouge_l": "ROUGE_L", "cider": "CIDEr"}  # fmt: skip


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("captions")
    (d / "captions_val.json").write_text(json.dumps(ANNOTATIONS))
    (d / "results.json").write_text(json.dumps(RESULTS))
    return d / "results.json", d / "captions_val.json"


@pytest.fixture(scope="module")
def official(files):
    """pycocoevalcap's own pipeline (pycocotools COCO + loadRes + COCOEvalCap.evaluate). Only SPICE is
    replaced by a stand-in: it downloads CoreNLP on first use, which cannot happen offline. METEOR runs in
    the JVM mmbert keeps (the same jar and protocol; starting a second one would only cost seconds)."""
    import pycocoevalcap.eval as official_eval
    from pycocotools.coco import COCO

    class NoSpice:
        def compute_score(self, gts, res):
            return 0.0, [0.0] * len(gts)

        def method(self):
            return "SPICE"

    results, annotations = files
    saved = official_eval.Spice, official_eval.Meteor
    official_eval.Spice, official_eval.Meteor = NoSpice, cm.meteor_scorer
    try:
        coco = COCO(str(annotations))
        evaluator = official_eval.COCOEvalCap(coco, coco.loadRes(str(results)))
        evaluator.evaluate()
    finally:
        official_eval.Spice, official_eval.Meteor = saved
    return evaluator.eval


@pytest.fixture(scope="module")
def ours(files):
    return cm.score_caption_files(*files)


def test_equals_pycocoevalcap_on_tricky_cases(ours, official):
    for name, key in OFFICIAL_NAMES.items():
        assert ours[name] == pytest.approx(official[key], abs=1e-12), name
    assert ours["num_images"] == 5 and ours["tokenizer"] == "ptb"
    assert 0 < ours["bleu_4"] < ours["bleu_1"] < 1 and ours["cider"] > 0


def test_spice_unavailable_with_its_reason(ours, monkeypatch):
    # SPICE's CoreNLP jars are not installed here (they download at run time): reported, not failed
    monkeypatch.setattr(cm, "SPICE_CORENLP_JAR", "absent-corenlp.jar")
    assert cm.spice_status() is not None and "CoreNLP" in cm.spice_status()
    if ours["spice"] is None:
        assert "CoreNLP" in ours["unavailable"]["spice"]
    assert set(cm.METRICS) <= set(ours)


def test_without_java(files, monkeypatch):
    """tokenizer='simple': BLEU, ROUGE-L and CIDEr-D run without Java; METEOR and SPICE say why not."""
    monkeypatch.setattr(cm, "java_available", lambda: False)
    with pytest.raises(cm.MetricUnavailable, match="Java"):
        cm.score_caption_files(*files, metrics=["bleu_1"])
    out = cm.score_caption_files(*files, tokenizer="simple")
    assert out["bleu_4"] > 0 and out["rouge_l"] > 0 and out["cider"] > 0
    assert out["meteor"] is None and "Java" in out["unavailable"]["meteor"]
    assert out["spice"] is None and "Java" in out["unavailable"]["spice"]
    assert cm.simple_tokenize("A man, riding a horse!") == "a man riding a horse"


def test_missing_and_unknown_predictions():
    refs = {"1": ["a cat"], "2": ["a dog"]}
    with pytest.raises(TaskDataError, match="no predicted caption"):
        cm.score_captions({"1": "a cat"}, refs, metrics=["bleu_1"], tokenizer="simple")
    one = cm.score_captions({"1": "a cat"}, refs, metrics=["bleu_1"], tokenizer="simple", allow_missing=True)
    assert one["num_images"] == 1 and one["num_missing"] == 1 and one["bleu_1"] == pytest.approx(1.0)
    with pytest.raises(TaskDataError, match="no reference"):
        cm.score_captions({"1": "a", "2": "b", "3": "c"}, refs, tokenizer="simple")
    with pytest.raises(ValueError, match="unknown caption metrics"):
        cm.score_captions({"1": "a"}, {"1": ["a"]}, metrics=["bleu"])


def test_readers_name_the_bad_record(tmp_path):
    bad = tmp_path / "results.json"
    bad.write_text(
        json.dumps([{"image_id": 1, "caption": "a"}, {"image_id": 2, "caption": "b"}, {"image_id": 3}])
    )
    with pytest.raises(TaskDataError, match=r"results.json\[2\].*caption"):
        cm.read_caption_results(bad)
    bad.write_text(json.dumps([{"image_id": 1, "caption": "a"}, {"image_id": 1, "caption": "b"}]))
    with pytest.raises(TaskDataError, match=r"\[1\]: image_id 1 has a second caption"):
        cm.read_caption_results(bad)
    bad.write_text(json.dumps({"image_id": 1}))
    with pytest.raises(TaskDataError, match="JSON list"):
        cm.read_caption_results(bad)
    ann = tmp_path / "captions.json"
    ann.write_text(
        json.dumps({"images": [{"id": 1}], "annotations": [{"image_id": 1, "caption": "x"}, {"image_id": 1}]})
    )
    with pytest.raises(TaskDataError, match=r"captions.json: annotations\[1\].*caption"):
        cm.read_caption_annotations(ann)
    ann.write_text(
        json.dumps({"images": [{"id": 1}, {"id": 2}], "annotations": [{"image_id": 1, "caption": "x"}]})
    )
    with pytest.raises(TaskDataError, match="no reference caption"):
        cm.read_caption_annotations(ann)
    ann.write_text(json.dumps({"images": [{"id": 1}], "annotations": [{"image_id": 7, "caption": "x"}]}))
    with pytest.raises(TaskDataError, match=r"annotations\[0\]: image_id 7 is not in"):
        cm.read_caption_annotations(ann)


def test_score_command(files, tmp_path):
    results, annotations = files
    out = tmp_path / "metrics.json"
    proc = subprocess.run([sys.executable, "-m", "mmbert", "score", "--task", "caption", "--predictions", str(results),
                           "--annotations", str(annotations), "--metrics", "bleu_1,bleu_4,rouge_l,cider",
                           "--out", str(out)], capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    written = json.loads(out.read_text())
    assert set(written) >= {"bleu_1", "bleu_4", "rouge_l", "cider"} and "meteor" not in written
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == written
