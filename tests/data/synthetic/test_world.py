"""The synthetic world: determinism, the real-format readers on what it writes, the detector, the language
(grammatical number swaps, answers that text alone cannot give, captions that name every object)."""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmbert.data import features
from mmbert.data.captions import read_coco_captions, read_karpathy
from mmbert.data.synthetic import COLOURS, DETECTOR_CLASSES, SHAPES, World, WorldConfig, generate
from mmbert.data.synthetic.language import (
    NUMBER_WORDS,
    Phrase,
    Statement,
    caption_inventory,
    plural,
    question,
    statement,
    swap_number,
)
from mmbert.data.synthetic.scenes import rng_for
from mmbert.data.tokenizer import Tokenizer

SMALL = WorldConfig(feat_dim=16)


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world") / "w"
    generate(out, num_images=30, seed=5, config=SMALL, nlvr2_pairs=12)
    return out


def _all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_and_other_seed_differs(world_dir, tmp_path):
    again = tmp_path / "again"
    generate(again, num_images=30, seed=5, config=SMALL, nlvr2_pairs=12)
    first, second = _all_files(world_dir), _all_files(again)
    first = {k: v for k, v in first.items() if not k.endswith(".idx")}  # reader caches, made on first open
    assert first.keys() == second.keys()
    assert [k for k in first if first[k] != second[k]] == []
    other = tmp_path / "other"
    generate(other, num_images=30, seed=6, config=SMALL, nlvr2_pairs=12)
    assert (other / "features.tsv").read_bytes() != first["features.tsv"]
    assert (other / "captions_train.json").read_bytes() != first["captions_train.json"]


def test_an_image_does_not_depend_on_the_world_size(tmp_path):
    a, b = World(seed=2, config=SMALL), World(seed=2, config=SMALL)
    assert a.scene(7) == b.scene(7)
    np.testing.assert_array_equal(a.detect(a.scene(7), 7).record.feats, b.detect(b.scene(7), 7).record.feats)


def test_feature_store_reads_back_with_detector_outputs(world_dir):
    manifest = json.loads((world_dir / "manifest.json").read_text())
    scenes = json.loads((world_dir / "scenes.json").read_text())["images"]
    with features.open(world_dir / "features.tsv") as store:
        assert len(store) == manifest["num_images"] == 30
        for s in scenes:
            rec = store[str(s["image_id"])]
            r = rec.num_regions
            assert len(s["objects"]) + 1 <= r <= 36
            assert rec.feats.shape == (r, 16) and rec.boxes.shape == (r, 4)
            assert rec.image_size == (s["height"], s["width"])
            assert rec.cls_prob.shape == (r, len(DETECTOR_CLASSES))
            np.testing.assert_allclose(rec.cls_prob.sum(1), 1.0, atol=1e-5)
            assert rec.obj_id.shape == rec.attr_id.shape == rec.obj_conf.shape == (r,)
            assert (rec.boxes[:, 2:] > rec.boxes[:, :2]).all() and rec.boxes.min() >= 0
            assert len(s["region_object"]) == r
    with features.open(world_dir / "nlvr2" / "features.tsv") as pairs:
        assert "train-0-0-img0" in pairs and "train-0-0-img1" in pairs


def test_detector_is_mostly_right_and_its_feature_encodes_the_object():
    world = World(seed=0, config=WorldConfig(feat_dim=32))
    right = total = 0
    for i in range(60):
        scene = world.scene(i)
        det = world.detect(scene, i)
        for r, o in enumerate(det.region_object.tolist()):
            if o >= 0 and not det.partial[r]:
                total += 1
                right += DETECTOR_CLASSES[det.record.obj_id[r]] == scene.objects[o].shape
                code = world.detector.code(
                    scene.objects[o].shape, scene.objects[o].colour, scene.objects[o].size
                )
                # the feature is the projection of the object's code plus noise: least squares recovers it
                est = np.linalg.lstsq(world.detector.projection.T, det.record.feats[r], rcond=None)[0]
                assert np.abs(est - code).max() < 0.6
    assert 0.8 < right / total < 0.98  # right usually, not always


def test_images_are_real_pngs(world_dir):
    scenes = json.loads((world_dir / "scenes.json").read_text())["images"]
    with Image.open(world_dir / "images" / scenes[0]["file_name"]) as im:
        assert im.format == "PNG" and im.size == (scenes[0]["width"], scenes[0]["height"])
        assert len(im.convert("RGB").getcolors(4096)) > 2  # shapes drawn on the background


def test_caption_files_read_with_the_caption_readers(world_dir):
    coco = list(read_coco_captions(world_dir / "captions_train.json"))
    karpathy = list(read_karpathy(world_dir / "dataset_synthetic.json", splits=("train",)))
    assert len(coco) == len(karpathy) == 5 * 24
    assert {c.image_id for c in coco} == {c.image_id for c in karpathy}
    tok = Tokenizer.from_pretrained(world_dir)
    for c in coco + list(read_karpathy(world_dir / "dataset_synthetic.json", splits=("val", "test"))):
        assert tok.unk_id not in tok.encode(c.caption).ids, c.caption


def test_vqa_files_read_with_the_vqa_task(world_dir):
    from mmbert.tasks.vqa import VQATask

    tok = Tokenizer.from_pretrained(world_dir)
    task = VQATask()
    vqa = world_dir / "vqa"
    data = task.load(
        {"questions": vqa / "v2_OpenEnded_synthetic_train_questions.json",
         "annotations": vqa / "v2_synthetic_train_annotations.json", "answers": vqa / "answers.json"},
        tok, world_dir / "features.tsv",
    )  # fmt: skip
    assert len(data) >= 4 * 24 and not data.report
    ex = data[0]
    assert ex.target.max() == 1.0 and ex.views[0].regions.feats.shape[1] == 16
    anns = json.loads((vqa / "v2_synthetic_train_annotations.json").read_text())["annotations"]
    assert all(len(a["answers"]) == 10 for a in anns)
    assert {a["question_type"] for a in anns} == {"colour", "shape", "count", "exist", "relation"}
    assert any(len({h["answer"] for h in a["answers"]}) > 1 for a in anns)  # annotators disagree at times


def test_nlvr2_and_retrieval_files_read_with_their_tasks(world_dir):
    from mmbert.tasks.nlvr2 import NLVR2Task
    from mmbert.tasks.retrieval import RetrievalTask

    tok = Tokenizer.from_pretrained(world_dir)
    nlvr2 = NLVR2Task().load(
        {"data": world_dir / "nlvr2" / "train.json"}, tok, world_dir / "nlvr2" / "features.tsv"
    )
    assert len(nlvr2) > 0 and not nlvr2.report and len(nlvr2[0].views) == 2
    ret = RetrievalTask(split="test", image_key="cocoid").load(
        {"karpathy": world_dir / "dataset_synthetic.json"}, tok, world_dir / "features.tsv"
    )
    assert len(ret) == 5 * 3 and not ret.report


def test_refcoco_and_vcr_files(world_dir):
    refs = json.loads((world_dir / "refcoco" / "refs.json").read_text())
    inst = json.loads((world_dir / "refcoco" / "instances.json").read_text())
    anns = {a["id"]: a for a in inst["annotations"]}
    assert refs and {r["split"] for r in refs} <= {"train", "val", "testA", "testB"}
    with features.open(world_dir / "features.tsv") as store:
        for r in refs:
            x, y, w, h = anns[r["ann_id"]]["bbox"]
            boxes = store[str(r["image_id"])].boxes
            # the target is detected: some region overlaps the ground-truth box with IoU >= 0.5
            ix = np.clip(np.minimum(boxes[:, 2], x + w) - np.maximum(boxes[:, 0], x), 0, None)
            iy = np.clip(np.minimum(boxes[:, 3], y + h) - np.maximum(boxes[:, 1], y), 0, None)
            area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
            assert (ix * iy / (area + w * h - ix * iy)).max() >= 0.5
            assert r["sent_ids"] == [s["sent_id"] for s in r["sentences"]]
        rows = [json.loads(line) for line in (world_dir / "vcr" / "train.jsonl").read_text().splitlines()]
        assert rows
        for row in rows:
            n = store[row["img_id"]].num_regions
            assert len(row["objects"]) == n
            assert len(row["answer_choices"]) == len(row["rationale_choices"]) == 4
            assert 0 <= row["answer_label"] < 4 and 0 <= row["rationale_label"] < 4
            refs_in = [
                t[0] for seq in [row["question"], *row["answer_choices"]] for t in seq if isinstance(t, list)
            ]
            assert all(0 <= k < n for k in refs_in)


# --------------------------------------------------------------------------------------- language --
def test_number_swaps_stay_grammatical():
    """Trap 2: a swapped number word must agree with its noun, or the text gives the negative away."""
    assert Phrase(1, shape="circle", number_as_word=True).text() == "one circle"
    assert Phrase(2, shape="circle").text() == "two circles"
    assert Phrase(2, shape="cross", colour="red").text() == "two red crosses"
    rng = np.random.default_rng(0)
    s = Statement("side_count", Phrase(1, shape="circle", number_as_word=True))
    assert swap_number(s, rng).text() == "The left image contains exactly two circles."
    world = World(seed=1, config=SMALL)
    bad = re.compile(r"\b(one|a|an) \w* ?\w* ?(" + "|".join(plural(s) for s in SHAPES) + r")\b|\b("
                     + "|".join(NUMBER_WORDS[2:]) + r") (\w+ )?(\w+ )?(" + "|".join(SHAPES) + r")\b")  # fmt: skip
    seen = Counter()
    for i in range(150):
        left, right = world.scene(2 * i), world.scene(2 * i + 1)
        st = statement(left, right, bool(i % 2), np.random.default_rng(i))
        seen[(st.kind, st.truth(left, right))] += 1
        assert st.truth(left, right) == bool(i % 2)
        assert not bad.search(st.text().lower()), st.text()
        for c in world.captions(left, 2 * i):
            assert not bad.search(c.lower()), c
    assert seen[("side_count", False)] + seen[("total_count", False)] > 10  # hard negatives do occur


def test_first_caption_names_every_object():
    """Trap 3: masked-region classification needs context, so captions name the objects' classes."""
    world = World(seed=3, config=SMALL)
    for i in range(40):
        scene = world.scene(i)
        first = world.captions(scene, i)[0].lower()
        for obj in scene.objects:
            assert re.search(rf"\b{obj.colour} ({obj.shape}|{plural(obj.shape)})\b", first), (first, obj)
    assert caption_inventory(world.scene(0), rng_for(0, 0, 0)).endswith(".")


def test_text_alone_cannot_answer_the_questions():
    """Per question type, the best guess from the question's words does about as well as the majority
    answer of the type (the answers are balanced and the world symmetric)."""
    world = World(seed=4, config=SMALL)
    rows = []
    for i in range(700):
        scene = world.scene(i)
        rng = rng_for(4, i, 99)
        for qtype in ("colour", "shape", "count", "exist", "relation"):
            q = question(scene, qtype, rng)
            if q is not None:
                rows.append((qtype, q.question.lower().rstrip("?").split(), q.answer))
    train, test = rows[: len(rows) // 2], rows[len(rows) // 2 :]
    # best answer for each (type, word) and per type; predict by the most confident word's table
    by_word: dict = defaultdict(Counter)
    by_type: dict = defaultdict(Counter)
    for t, ws, a in train:
        by_type[t][a] += 1
        for w in set(ws):
            by_word[(t, w)][a] += 1
    majority = text = 0
    for t, ws, a in test:
        majority += by_type[t].most_common(1)[0][0] == a
        best = max((by_word[(t, w)] for w in set(ws) if by_word[(t, w)]), key=lambda c: c.most_common(1)[0][1] /
                   sum(c.values()))  # fmt: skip
        text += best.most_common(1)[0][0] == a
    assert text / len(test) <= majority / len(test) + 0.05
    for t, counts in by_type.items():  # balanced: no answer dominates its type
        assert counts.most_common(1)[0][1] / sum(counts.values()) < 0.6, (t, counts)
    assert set(by_type["colour"]) == set(COLOURS)


def test_refcoco_and_vcr_files_read_with_their_tasks(world_dir):
    from mmbert.tasks.refexp import RefExpTask
    from mmbert.tasks.vcr import VCRTask

    tok = Tokenizer.from_pretrained(world_dir)
    refs = RefExpTask(split="train").load(
        {"refs": world_dir / "refcoco" / "refs.json", "instances": world_dir / "refcoco" / "instances.json"},
        tok, world_dir / "features.tsv",
    )  # fmt: skip
    assert len(refs) > 0 and not refs.report
    ex = refs[0]
    assert float(ex.target.max()) >= 0.5  # the referred object was detected: some region has IoU >= 0.5
    for mode in ("q2a", "qa2r"):
        vcr = VCRTask(mode=mode).load(
            {"data": world_dir / "vcr" / "train.jsonl"}, tok, world_dir / "features.tsv"
        )
        assert len(vcr) > 0 and not vcr.report and len(vcr[0].views) == 4
        assert all(tok.unk_id not in v.text_ids for v in vcr[0].views)
