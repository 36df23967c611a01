"""Flickr30K Entities: the Sentences markup and Annotations XML readers, the KL grounding loss, R@K."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tasks.task_fixtures import FEAT_DIM, tiny_encoder, train_steps

from mmbert.data.batch import RegionFeatures
from mmbert.tasks import TaskModel
from mmbert.tasks.base import TaskDataError, collate
from mmbert.tasks.flickr30k_entities import (
    Flickr30KEntitiesTask,
    chance_recall,
    parse_sentence,
    read_annotation,
    recall_at_k,
)

SENTENCES = {
    "100": [
        "[/EN#1/people A man] is holding [/EN#2/other a red umbrella] next to [/EN#3/animals two dogs] .",
        "[/EN#1/people The man] is sitting on [/EN#4/scene a bench] .",
    ],
    "200": ["[/EN#7/animals A black cat] is left of [/EN#8/notvisual it] ."],
}
BOXES = {
    "100": {"1": [[10, 10, 50, 90]], "2": [[60, 5, 95, 40]], "3": [[0, 60, 30, 95], [70, 60, 98, 95]]},
    "200": {"7": [[20, 20, 60, 60]]},
}


def xml(image: str) -> str:
    objs = []
    for eid, boxes in BOXES[image].items():
        for x1, y1, x2, y2 in boxes:
            objs.append(
                f"<object><name>{eid}</name><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax>"
                f"<ymax>{y2}</ymax></bndbox></object>"
            )
    if image == "100":
        objs.append("<object><name>4</name><nobndbox>1</nobndbox><scene>1</scene></object>")
    return (
        f"<annotation><filename>{image}.jpg</filename><size><width>100</width><height>100</height></size>"
        + "".join(objs)
        + "</annotation>"
    )


def write_files(tmp_path, split=("100", "200")):
    (tmp_path / "Sentences").mkdir(exist_ok=True)
    (tmp_path / "Annotations").mkdir(exist_ok=True)
    for image, lines in SENTENCES.items():
        (tmp_path / "Sentences" / f"{image}.txt").write_text("\n".join(lines) + "\n")
        (tmp_path / "Annotations" / f"{image}.xml").write_text(xml(image))
    (tmp_path / "test.txt").write_text("\n".join(split) + "\n")
    return {
        "sentences": tmp_path / "Sentences",
        "annotations": tmp_path / "Annotations",
        "images": tmp_path / "test.txt",
    }


def store():
    """Regions: the gt boxes themselves (plus the group union) and two background boxes."""
    rng = np.random.default_rng(0)
    out = {}
    for image, ents in BOXES.items():
        boxes = [b for bs in ents.values() for b in bs] + [[0, 0, 100, 100], [40, 40, 45, 45]]
        out[image] = RegionFeatures(
            image,
            rng.normal(size=(len(boxes), FEAT_DIM)).astype(np.float32),
            np.array(boxes, dtype=np.float32),
            (100, 100),
        )
    return out


def test_sentence_markup():
    sentence, phrases = parse_sentence(SENTENCES["100"][0], "x:1")
    assert sentence == "A man is holding a red umbrella next to two dogs ."
    assert [(p.entity_id, p.types, p.text) for p in phrases] == [
        ("1", ["people"], "A man"),
        ("2", ["other"], "a red umbrella"),
        ("3", ["animals"], "two dogs"),
    ]
    assert sentence[phrases[1].start : phrases[1].end] == "a red umbrella"
    _, multi = parse_sentence("[/EN#5/people/other Two kids] play", "x:2")
    assert multi[0].types == ["people", "other"]
    for bad in ("[/EN#1/people A man is here .", "A man] runs", "[/EN#1/people ] runs"):
        with pytest.raises(TaskDataError, match="x:3"):
            parse_sentence(bad, "x:3")


def test_readers_name_the_bad_record(tmp_path, tokenizer):
    files = write_files(tmp_path)
    boxes, no_box = read_annotation(files["annotations"] / "100.xml")
    assert boxes["3"] == BOXES["100"]["3"] and no_box == {"4"}
    (files["sentences"] / "200.txt").write_text("fine line\n[/EN#7/animals A black cat is left .\n")
    with pytest.raises(TaskDataError, match=r"200.txt:2: malformed phrase markup"):
        Flickr30KEntitiesTask().load(files, tokenizer, store())
    files = write_files(tmp_path)
    (files["annotations"] / "100.xml").write_text(xml("100").replace("<xmin>60</xmin>", "<xmin>sixty</xmin>"))
    with pytest.raises(TaskDataError, match=r"100.xml: object 1 \(\['2'\]\): <bndbox> needs numeric"):
        Flickr30KEntitiesTask().load(files, tokenizer, store())
    (files["annotations"] / "100.xml").write_text("<annotation><object>")
    with pytest.raises(TaskDataError, match="100.xml: not valid XML"):
        Flickr30KEntitiesTask().load(files, tokenizer, store())


def test_load_targets_and_report(tmp_path, tokenizer):
    task = Flickr30KEntitiesTask(max_regions=None)
    data = task.load(write_files(tmp_path), tokenizer, store())
    assert (
        len(data) == 5
    )  # man, umbrella, dogs, the man (again), the cat; bench (scene) and "it" not grounded
    reasons = " ".join(data.report.counts)
    assert "no box" in reasons and sum(data.report.counts.values()) >= 2
    dogs = data[2]
    assert dogs.meta["phrase"] == "two dogs"
    # the union of the two dog boxes is no detected region: best IoU is below 0.5 for every region
    assert float(dogs.target.max()) < 0.5
    assert (
        Flickr30KEntitiesTask(gt_boxes="any").load(write_files(tmp_path), tokenizer, store())[2].target.max()
        == 1.0
    )
    ids, span = task._encode(tokenizer, data.records[1])
    assert tokenizer.decode([i for i, s in zip(ids, span) if s]) == "a red umbrella"


def test_kl_loss_by_hand():
    task = Flickr30KEntitiesTask()
    logits = torch.tensor([[2.0, 0.0, 1.0, -10000.0]])
    from mmbert.data.batch import Batch

    batch = Batch(
        text_ids=torch.zeros(1, 2, dtype=torch.long),
        text_mask=torch.ones(1, 2, dtype=torch.bool),
        segment_ids=torch.zeros(1, 2, dtype=torch.long),
        region_mask=torch.tensor([[True, True, True, False]]),
        labels=torch.tensor([[0.7, 0.1, 0.5, 0.9]]),
    )
    p = torch.tensor([2.0, 0.0, 1.0]).softmax(0)
    expected = 0.5 * (math.log(0.5) - math.log(p[0])) + 0.5 * (math.log(0.5) - math.log(p[2]))
    assert float(task.loss(logits, batch).loss) == pytest.approx(expected, rel=1e-6)


def test_recall_and_chance():
    ranked = [[0.6, 0.0], [0.1, 0.7, 0.2], [0.0, 0.0, 0.0]]
    assert recall_at_k(ranked, ks=(1, 5)) == {"r@1": pytest.approx(100 / 3), "r@5": pytest.approx(200 / 3)}
    # one positive among 4 regions: R@1 chance 1/4, R@2 chance 1 - C(3,2)/C(4,2) = 1/2
    assert chance_recall([[0.9, 0, 0, 0]], ks=(1, 2, 10)) == {"r@1": 25.0, "r@2": 50.0, "r@10": 100.0}


@pytest.mark.parametrize("name", ["visualbert_tiny", "lxmert_tiny"])
def test_training_grounds_the_phrases(name, tmp_path, tokenizer):
    task = Flickr30KEntitiesTask(max_regions=None, gt_boxes="any")
    data = task.load(write_files(tmp_path), tokenizer, store())
    model = TaskModel(tiny_encoder(name), None)
    model.head = task.build_head(model.encoder)
    losses = train_steps(task, model, data, steps=30, batch_size=5, lr=1e-2)
    assert losses[-1] < 0.5 * losses[0]
    metrics, predictions = task.evaluate(model, data)
    assert metrics["r@1"] == 100.0 and metrics["chance"]["r@1"] < 50.0
    assert len(predictions[0]["boxes"]) <= 10 and "all_ious" not in predictions[0]
    assert collate([data[0]]).labels.shape[1] == data[0].target.shape[0]
