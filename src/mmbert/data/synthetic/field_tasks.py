"""The synthetic world's data for GQA, SNLI-VE and Flickr30K Entities, in the official formats.

- GQA: compositional questions with their programs (GQA's ``semantic`` steps: select / relate / filter /
  query / verify / exist / and / choose / same), answers balanced per structural type; written as the
  official ``{split}_balanced_questions.json`` and as LXMERT's JSON (``train.json``, ``valid.json``,
  ``testdev.json``) with ``trainval_ans2label.json``.
- SNLI-VE: per image one hypothesis of each label — entailment (a true fact about counts, colours or
  relations), contradiction (the same kinds of fact made false: text alone cannot tell those two apart),
  neutral (a property the picture cannot show: material, weight, age) — as ``snli_ve_{train,dev,test}.jsonl``.
- Flickr30K Entities: captions with ``[/EN#id/type phrase]`` markup over the objects (single objects,
  groups with several boxes, and a scene phrase without a box), ``Annotations/<id>.xml`` with the true
  boxes, and ``train.txt`` / ``val.txt`` / ``test.txt``.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from mmbert.atomic import atomic_write_text
from mmbert.data.synthetic.language import (
    RELATION_WORDS,
    Phrase,
    _choice,
    _relation_pairs,
    capitalise,
    describe,
    plural,
)
from mmbert.data.synthetic.scenes import COLOURS, OPPOSITE, SHAPES, Scene

GQA_SPLITS = {"train": "train", "val": "valid", "test": "testdev"}
GQA_FILES = {"train": "train", "val": "val", "test": "testdev"}
SNLI_VE_SPLITS = {"train": "train", "val": "dev", "test": "test"}
STRUCTURAL = ("query", "verify", "logical", "choose", "compare")
NEUTRAL_PROPERTIES = (
    "is made of wood",
    "is made of plastic",
    "is very heavy",
    "is very old",
    "was drawn first",
    "belongs to a child",
    "is cold to the touch",
    "was painted yesterday",
)
CHOICE_WORDS = {"left of": "left", "right of": "right", "above": "above", "below": "below"}


def _ref(scene: Scene, i: int) -> str:
    d = describe(scene, i)
    return f"{d.text()} ({i})" if d is not None else f"object ({i})"


# ------------------------------------------------------------------------------------------- GQA --
def _record(question: str, answer: str, full: str, program: list[tuple[str, list[int], str]], types) -> dict:
    """One GQA question in the official layout: texts, its program as (operation, dependencies, argument)
    steps, and its (structural, semantic, detailed) types."""
    return {
        "question": capitalise(question),
        "answer": answer,
        "fullAnswer": capitalise(full),
        "semantic": [{"operation": o, "dependencies": d, "argument": a} for o, d, a in program],
        "types": dict(zip(("structural", "semantic", "detailed"), types)),
    }


def _exists_related(scene: Scene, colour: str, shape: str, rel: str, b: int) -> bool | None:
    """Whether an object other than ``b`` of ``colour`` and ``shape`` stands in ``rel`` to ``b``; None when
    the relation is undecided for one of them (the question is then skipped)."""
    truths = [
        scene.holds(k, rel, b)
        for k, o in enumerate(scene.objects)
        if k != b and o.colour == colour and o.shape == shape
    ]
    if any(t is None for t in truths):
        return None
    return any(truths)


def gqa_question(scene: Scene, structural: str, rng: np.random.Generator) -> dict | None:
    """One question of a structural type with its program; None when the scene offers none."""
    n = len(scene.objects)
    descs = [describe(scene, i) for i in range(n)]
    if structural == "query":  # the colour of the <shape> <rel> the <anchor>: select -> relate -> query
        options = []
        for a, rel, b in _relation_pairs(scene):
            if descs[b] is None:
                continue
            shape = scene.objects[a].shape
            same = [
                k for k in range(n) if k != b and scene.objects[k].shape == shape and scene.holds(k, rel, b)
            ]
            if same == [a]:
                options.append((a, rel, b))
        if not options:
            return None
        a, rel, b = _choice(rng, options)
        shape, words = scene.objects[a].shape, _choice(rng, list(RELATION_WORDS[rel]))
        answer = scene.objects[a].colour
        program = [("select", [], _ref(scene, b)), ("relate", [0], f"{shape},{rel},s ({a})"), ("query", [1], "color")]
        return _record(f"what colour is the {shape} {words} {descs[b].text()}?", answer, f"the {shape} is {answer}.",
                       program, ("query", "rel", "relS"))  # fmt: skip
    if structural == "verify":  # is there a <colour> <shape> <rel> the <anchor>?  select -> relate -> verify
        anchors = [b for b in range(n) if descs[b] is not None]
        if not anchors:
            return None
        want = bool(rng.random() < 0.5)
        for _ in range(30):
            b = _choice(rng, anchors)
            rel = _choice(rng, list(RELATION_WORDS))
            colour, shape = _choice(rng, list(COLOURS)), _choice(rng, list(SHAPES))
            truth = _exists_related(scene, colour, shape, rel, b)
            if truth is None:
                continue
            if want and not truth:  # make it true from a real relation when one exists
                pairs = [(a, r) for a, r, bb in _relation_pairs(scene) if bb == b]
                if not pairs:
                    continue
                a, rel = _choice(rng, pairs)
                colour, shape = scene.objects[a].colour, scene.objects[a].shape
                truth = _exists_related(scene, colour, shape, rel, b)
                if truth is None:
                    continue
            if truth != want:
                continue
            words = _choice(rng, list(RELATION_WORDS[rel]))
            answer = "yes" if truth else "no"
            program = [("select", [], _ref(scene, b)), ("relate", [0], f"{shape},{rel},s (-)"),
                       ("filter color", [1], colour), ("exist", [2], "?")]  # fmt: skip
            full = f"{answer}, there is {'a' if truth else 'no'} {colour} {shape}."
            question = f"is there a {colour} {shape} {words} {descs[b].text()}?"
            return _record(question, answer, full, program, ("verify", "rel", "existRelS"))
        return None
    if structural == "logical":  # are there both <c1> <s1>s and <c2> <s2>s?  exist & exist -> and
        want = bool(rng.random() < 0.5)
        for _ in range(30):
            kinds = [(_choice(rng, list(COLOURS)), _choice(rng, list(SHAPES))) for _ in range(2)]
            if want:
                kinds[0] = (scene.objects[0].colour, scene.objects[0].shape)
                o = scene.objects[int(rng.integers(n))]
                kinds[1] = (o.colour, o.shape)
            if kinds[0] == kinds[1]:
                continue
            present = [scene.count(shape=s, colour=c) > 0 for c, s in kinds]
            truth = all(present)
            if truth != want:
                continue
            (c1, s1), (c2, s2) = kinds
            answer = "yes" if truth else "no"
            program = [("select", [], f"{s1} (-)"), ("filter color", [0], c1), ("exist", [1], "?"),
                       ("select", [], f"{s2} (-)"), ("filter color", [3], c2), ("exist", [4], "?"),
                       ("and", [2, 5], "")]  # fmt: skip
            question = f"are there both {c1} {plural(s1)} and {c2} {plural(s2)}?"
            full = f"{answer}, there are {'both' if truth else 'not both'}."
            return _record(question, answer, full, program, ("logical", "obj", "existAnd"))
        return None
    if structural == "choose":  # is the <a> <rel> or <opposite> the <b>?  select, select -> choose rel
        pairs = [
            (a, rel, b)
            for a, rel, b in _relation_pairs(scene)
            if descs[a] is not None and descs[b] is not None
        ]
        if not pairs:
            return None
        a, rel, b = _choice(rng, pairs)
        options = [rel, OPPOSITE[rel]]
        rng.shuffle(options)
        answer = CHOICE_WORDS[rel]
        program = [("select", [], _ref(scene, a)), ("select", [], _ref(scene, b)),
                   ("choose rel", [0, 1], "|".join(options))]  # fmt: skip
        question = f"is {descs[a].text()} {options[0]} or {options[1]} {descs[b].text()}?"
        full = f"{descs[a].text()} is {rel} {descs[b].text()}."
        return _record(question, answer, full, program, ("choose", "rel", "positionChoose"))
    if structural == "compare":  # do the <a> and the <b> have the same colour?  select, select -> same color
        unique = [i for i in range(n) if describe(scene, i, ("shape", "size")) is not None]
        if len(unique) < 2:
            return None
        want = bool(rng.random() < 0.5)
        pairs = [
            (a, b)
            for a in unique
            for b in unique
            if a < b and (scene.objects[a].colour == scene.objects[b].colour) == want
        ]
        if not pairs:
            pairs = [(a, b) for a in unique for b in unique if a < b]
        a, b = _choice(rng, pairs)
        da, db = describe(scene, a, ("shape", "size")), describe(scene, b, ("shape", "size"))
        same = scene.objects[a].colour == scene.objects[b].colour
        answer = "yes" if same else "no"
        program = [("select", [], _ref(scene, a)), ("select", [], _ref(scene, b)), ("same color", [0, 1], "")]
        question = f"do {da.text()} and {db.text()} have the same colour?"
        full = f"{answer}, they are {'both ' + scene.objects[a].colour if same else 'not'}."
        return _record(question, answer, full, program, ("compare", "attr", "sameColor"))
    raise ValueError(f"unknown structural type {structural!r}; choose from {STRUCTURAL}")


def semantic_str(semantic: list[dict]) -> str:
    return " ".join(f"{s['operation']}: {s['argument']}" for s in semantic)


def gqa_questions(scene: Scene, rng: np.random.Generator, per_image: int = 5) -> list[dict]:
    out = []
    for k in range(per_image):
        q = gqa_question(scene, STRUCTURAL[k % len(STRUCTURAL)], rng)
        if q is not None:
            out.append(q)
    return out


# --------------------------------------------------------------------------------------- SNLI-VE --
def _facts(scene: Scene, truth: bool, rng: np.random.Generator) -> str | None:
    """A statement of a random kind, true or false as asked (same templates either way)."""
    kind = _choice(rng, ["count", "colour", "relation", "exist"])
    n = len(scene.objects)
    if kind == "count":
        o = scene.objects[int(rng.integers(n))]
        k = scene.count(shape=o.shape, colour=o.colour)
        k = k if truth else (k + 1 if k == 1 or rng.random() < 0.5 else k - 1)
        return capitalise(
            f"there {'is' if k == 1 else 'are'} {Phrase(k, shape=o.shape, colour=o.colour, number_as_word=True).text()}"
            " in the picture."
        )
    if kind == "colour":
        options = [(i, d) for i in range(n) if (d := describe(scene, i, ("shape", "size"))) is not None]
        if not options:
            return None
        i, d = _choice(rng, options)
        colour = (
            scene.objects[i].colour
            if truth
            else _choice(rng, [c for c in COLOURS if c != scene.objects[i].colour])
        )
        return capitalise(f"{d.text()} is {colour}.")
    if kind == "relation":
        pairs = [
            (a, rel, b)
            for a, rel, b in _relation_pairs(scene)
            if describe(scene, a) is not None and describe(scene, b) is not None
        ]
        if not pairs:
            return None
        a, rel, b = _choice(rng, pairs)
        rel = rel if truth else OPPOSITE[rel]
        return capitalise(
            f"{describe(scene, a).text()} is {_choice(rng, list(RELATION_WORDS[rel]))} "
            f"{describe(scene, b).text()}."
        )
    colour, shape = _choice(rng, list(COLOURS)), _choice(rng, list(SHAPES))
    for _ in range(30):
        if (scene.count(shape=shape, colour=colour) > 0) == truth:
            break
        colour, shape = _choice(rng, list(COLOURS)), _choice(rng, list(SHAPES))
    else:
        return None
    return capitalise(f"the picture shows {'a' if colour[0] not in 'aeiou' else 'an'} {colour} {shape}.")


def snli_ve_hypotheses(scene: Scene, rng: np.random.Generator) -> list[tuple[str, str]]:
    """(hypothesis, gold label) — one entailment, one contradiction, one neutral."""
    out = []
    for label, truth in (("entailment", True), ("contradiction", False)):
        for _ in range(20):
            text = _facts(scene, truth, rng)
            if text is not None:
                out.append((text, label))
                break
    i = int(rng.integers(len(scene.objects)))
    o = scene.objects[i]
    d = describe(scene, i) or Phrase(None, shape=o.shape, colour=o.colour)
    out.append((capitalise(f"{d.text()} {_choice(rng, list(NEUTRAL_PROPERTIES))}."), "neutral"))
    return out


# --------------------------------------------------------------------------- Flickr30K Entities --
def flickr_sentences(
    scene: Scene, rng: np.random.Generator, first_id: int
) -> tuple[list[str], dict[int, list[int]], int]:
    """Captions with [/EN#id/type phrase] markup; entity id -> object indices (empty: the scene, no box)."""
    entities: dict[int, list[int]] = {}
    next_id = first_id

    def entity(objects: list[int]) -> int:
        nonlocal next_id
        entities[next_id] = objects
        next_id += 1
        return next_id - 1

    def mark(eid: int, kind: str, text: str) -> str:
        return f"[/EN#{eid}/{kind} {text}]"

    lines = []
    pairs = [(a, rel, b) for a, rel, b in _relation_pairs(scene)]
    if pairs:
        a, rel, b = _choice(rng, pairs)
        oa, ob = scene.objects[a], scene.objects[b]
        pa = Phrase(1, shape=oa.shape, colour=oa.colour).text()
        pb = Phrase(1, shape=ob.shape, colour=ob.colour).text()
        lines.append(
            f"{mark(entity([a]), 'other', capitalise(pa))} is {_choice(rng, list(RELATION_WORDS[rel]))} "
            f"{mark(entity([b]), 'other', pb)} ."
        )
    groups = Counter((o.colour, o.shape) for o in scene.objects)
    parts = []
    for (c, s), k in sorted(groups.items(), key=lambda kv: (SHAPES.index(kv[0][1]), COLOURS.index(kv[0][0]))):
        members = [i for i, o in enumerate(scene.objects) if (o.colour, o.shape) == (c, s)]
        parts.append(mark(entity(members), "other", Phrase(k, shape=s, colour=c).text()))
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    lines.append(f"{listed} on {mark(entity([]), 'scene', 'a plain background')} .")
    singles = [i for i in range(len(scene.objects)) if describe(scene, i) is not None]
    if singles:
        i = _choice(rng, singles)
        lines.append(
            f"{mark(entity([i]), 'other', capitalise(describe(scene, i).text()))} is {scene.objects[i].size} ."
        )
    return lines, entities, next_id


def flickr_xml(image_id: int, scene: Scene, entities: dict[int, list[int]]) -> str:
    rows = [
        f"<annotation>\n<filename>{image_id}.jpg</filename>",
        f"<size>\n<width>{scene.width}</width>\n<height>{scene.height}</height>\n<depth>3</depth>\n</size>",
    ]
    for eid, objects in entities.items():
        if not objects:
            rows.append(f"<object>\n<name>{eid}</name>\n<nobndbox>1</nobndbox>\n<scene>1</scene>\n</object>")
        for i in objects:
            x1, y1, x2, y2 = (round(v) for v in scene.objects[i].box)
            rows.append(
                f"<object>\n<name>{eid}</name>\n<bndbox>\n<xmin>{x1}</xmin>\n<ymin>{y1}</ymin>\n"
                f"<xmax>{x2}</xmax>\n<ymax>{y2}</ymax>\n</bndbox>\n</object>"
            )
    rows.append("</annotation>\n")
    return "\n".join(rows)


def field_texts(scene: Scene, rng: np.random.Generator) -> list[str]:
    """Every text these generators make for a scene (for the world's vocabulary)."""
    texts = [t for q in gqa_questions(scene, rng) for t in (q["question"], q["answer"])]
    texts += [h for h, _ in snli_ve_hypotheses(scene, rng)]
    lines, _, _ = flickr_sentences(scene, rng, 0)
    texts += [line.replace("[", " ").replace("]", " ") for line in lines]
    texts += [*NEUTRAL_PROPERTIES, *CHOICE_WORDS.values(), "both same or"]
    return texts


# ----------------------------------------------------------------------------------------- write --
def write_field_tasks(out: Path, scenes: list[tuple[int, str, Scene, str]], seed: int, rng_for) -> dict:
    """Write the three tasks for (image id, split, scene, first caption) records; returns their counts."""
    gqa_official = {s: {} for s in GQA_SPLITS}
    gqa_lxmert = {s: [] for s in GQA_SPLITS}
    snli = {s: [] for s in SNLI_VE_SPLITS}
    flickr_ids = {s: [] for s in ("train", "val", "test")}
    (out / "flickr30k_entities" / "Sentences").mkdir(parents=True, exist_ok=True)
    (out / "flickr30k_entities" / "Annotations").mkdir(parents=True, exist_ok=True)
    for image_id, split, scene, caption in scenes:
        rng = rng_for(seed, image_id - 1, 20)
        for k, q in enumerate(gqa_questions(scene, rng)):
            qid = f"{image_id:07d}{k}"
            gqa_official[split][qid] = {
                "imageId": str(image_id),
                "question": q["question"],
                "answer": q["answer"],
                "fullAnswer": q["fullAnswer"],
                "isBalanced": True,
                "groups": {"global": None, "local": None},
                "equivalent": [qid],
                "entailed": [],
                "annotations": {"question": {}, "answer": {}, "fullAnswer": {}},
                "semantic": q["semantic"],
                "semanticStr": semantic_str(q["semantic"]),
                "types": q["types"],
            }
            gqa_lxmert[split].append(
                {
                    "img_id": str(image_id),
                    "label": {q["answer"]: 1.0},
                    "question_id": qid,
                    "sent": q["question"],
                }
            )
        for k, (hyp, label) in enumerate(snli_ve_hypotheses(scene, rng_for(seed, image_id - 1, 21))):
            snli[split].append(
                {
                    "Flickr30K_ID": str(image_id),
                    "captionID": f"{image_id}.jpg#0",
                    "pairID": f"{image_id}.jpg#0r{k}{label[0]}",
                    "sentence1": caption,
                    "sentence2": hyp,
                    "gold_label": label,
                    "annotator_labels": [label],
                }
            )
        lines, entities, _ = flickr_sentences(scene, rng_for(seed, image_id - 1, 22), 1)
        atomic_write_text(
            out / "flickr30k_entities" / "Sentences" / f"{image_id}.txt", "\n".join(lines) + "\n"
        )
        atomic_write_text(
            out / "flickr30k_entities" / "Annotations" / f"{image_id}.xml",
            flickr_xml(image_id, scene, entities),
        )
        flickr_ids[split].append(str(image_id))
    answers = sorted({q["answer"] for s in gqa_official.values() for q in s.values()})
    for s, name in GQA_SPLITS.items():
        _write(out / "gqa" / f"{name}.json", gqa_lxmert[s])
        _write(out / "gqa" / f"{GQA_FILES[s]}_balanced_questions.json", gqa_official[s])
    _write(out / "gqa" / "trainval_ans2label.json", {a: i for i, a in enumerate(answers)})
    for s, name in SNLI_VE_SPLITS.items():
        path = out / "snli_ve" / f"snli_ve_{name}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in snli[s]))
    for s, ids in flickr_ids.items():
        atomic_write_text(out / "flickr30k_entities" / f"{s}.txt", "".join(i + "\n" for i in ids))
    return {
        "gqa": {GQA_SPLITS[s]: len(v) for s, v in gqa_lxmert.items()},
        "snli_ve": {SNLI_VE_SPLITS[s]: len(v) for s, v in snli.items()},
        "flickr30k_entities_images": {s: len(v) for s, v in flickr_ids.items()},
    }


def _write(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(obj, separators=(",", ":")) + "\n")
