"""The synthetic world's GQA, SNLI-VE and Flickr30K Entities files: read back by the task readers, with
well-formed programs, every SNLI-VE label per image, and phrase boxes that are the objects' true boxes."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import pytest

from mmbert.data.synthetic import World, WorldConfig, generate
from mmbert.data.synthetic.field_tasks import STRUCTURAL, gqa_question
from mmbert.data.synthetic.language import plural
from mmbert.data.synthetic.scenes import rng_for
from mmbert.data.tokenizer import Tokenizer
from mmbert.tasks import Flickr30KEntitiesTask, GQATask, SNLIVETask

SMALL = WorldConfig(feat_dim=16, max_objects=6, max_extra_regions=2)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("field") / "w"
    generate(out, num_images=30, seed=3, config=SMALL, nlvr2_pairs=0, render_images=False)
    return out


def test_gqa_files_and_programs(world):
    tok = Tokenizer.from_pretrained(world)
    task = GQATask(max_regions=None)
    train = task.load(
        {"lxmert": world / "gqa" / "train.json", "answers": world / "gqa" / "trainval_ans2label.json"},
        tok,
        world / "features.tsv",
    )
    testdev = task.load({"lxmert": world / "gqa" / "testdev.json"}, tok, world / "features.tsv")
    assert len(train) > 50 and len(testdev) > 0 and not train.report
    official = json.loads((world / "gqa" / "train_balanced_questions.json").read_text())
    assert set(official) == {r["question_id"] for r in train.records}
    kinds = Counter(q["types"]["structural"] for q in official.values())
    assert set(kinds) == set(STRUCTURAL)
    for qid, q in official.items():
        for k, step in enumerate(q["semantic"]):  # programs: each step depends on earlier ones only
            assert all(0 <= d < k for d in step["dependencies"]), qid
        assert q["answer"] in task.answers and q["semanticStr"]
    yes_no = Counter(
        q["answer"] for q in official.values() if q["types"]["structural"] in ("verify", "logical")
    )
    assert min(yes_no["yes"], yes_no["no"]) > 0.25 * sum(yes_no.values())  # answers balanced per type


def test_gqa_answers_are_true(world):
    w = World(seed=3, config=SMALL)
    for index in range(20):
        scene = w.scene(index)
        q = gqa_question(scene, "query", rng_for(0, index, 99))
        if q is not None:
            assert q["answer"] in {o.colour for o in scene.objects}
        q = gqa_question(scene, "logical", rng_for(0, index, 98))
        if q is not None:
            words = q["question"].rstrip("?").split()
            kinds = ((words[3], words[4]), (words[6], words[7]))  # "are there both <c> <shapes> and <c> <shapes>"
            present = [any(o.colour == c and plural(o.shape) == s for o in scene.objects) for c, s in kinds]
            assert q["answer"] == ("yes" if all(present) else "no"), q["question"]


def test_snli_ve_files(world):
    tok = Tokenizer.from_pretrained(world)
    data = SNLIVETask(max_regions=None).load({"jsonl": world / "snli_ve" / "snli_ve_train.jsonl"}, tok,
                                             world / "features.tsv")  # fmt: skip
    per_image = Counter()
    for r in data.records:
        per_image[(r["image"], r["label"])] += 1
    images = {r["image"] for r in data.records}
    assert all(per_image[(i, label)] == 1 for i in images for label in range(3))
    first = json.loads((world / "snli_ve" / "snli_ve_train.jsonl").read_text().splitlines()[0])
    assert {"Flickr30K_ID", "sentence1", "sentence2", "gold_label", "pairID"} <= set(first)


def test_flickr30k_entities_files(world):
    tok = Tokenizer.from_pretrained(world)
    root = world / "flickr30k_entities"
    files = {
        "sentences": root / "Sentences",
        "annotations": root / "Annotations",
        "images": root / "train.txt",
    }
    data = Flickr30KEntitiesTask(max_regions=None, gt_boxes="any").load(files, tok, world / "features.tsv")
    assert len(data) > 30
    assert any("no box" in reason for reason in data.report.counts)  # the scene phrase, counted
    scenes = {s["image_id"]: s for s in json.loads((world / "scenes.json").read_text())["images"]}
    image = data.records[0]["image"]
    root_xml = ET.parse(root / "Annotations" / f"{image}.xml").getroot()
    boxes = sorted(tuple(float(o.find("bndbox").findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
                   for o in root_xml.iter("object") if o.find("bndbox") is not None)  # fmt: skip
    objects = scenes[int(image)]["objects"]
    truth = {tuple(float(round(o[c] + s * o["radius"])) for s, c in ((-1, "x"), (-1, "y"), (1, "x"), (1, "y")))
             for o in objects}  # fmt: skip
    assert set(boxes) == set(truth)
    hits = sum(float(data[i].target.max()) >= 0.5 for i in range(len(data)))
    assert hits > 0.8 * len(data)  # the detector finds most objects: phrases are groundable
