"""Generate a synthetic world and write it in the real corpora's formats.

``generate(out_dir, num_images, seed)`` writes (all byte-identical for the same arguments)::

    vocab.txt                         WordPiece vocabulary of the world's language (+ BERT's special tokens)
    manifest.json                     the config, counts, splits and every file below
    scenes.json                       ground truth: objects per image and which object each region shows
    images/<id>.png                   rendered scenes (COCO-style: file_name, integer image_id)
    features.tsv                      region features, bottom-up-attention TSV (LXMERT's 10 fields + cls_prob)
    captions_{train,val,test}.json    COCO captions JSON
    dataset_synthetic.json            Karpathy-split JSON (5 sentences per image; train/val/test)
    vqa/v2_OpenEnded_synthetic_{split}_questions.json, vqa/v2_synthetic_{split}_annotations.json
    vqa/answers.json                  the answer vocabulary (every answer the world can give)
    nlvr2/{train,dev,test1}.json      NLVR2 JSONL (identifier, sentence, label "True"/"False")
    nlvr2/features.tsv, nlvr2/images/ the pair images "<split>-<k>-0-img0/1"
    refcoco/refs.json, refcoco/instances.json   RefCOCO refs (the refs(unc).p list as JSON) + COCO instances
    vcr/{train,val,test}.jsonl        VCR-style multiple choice (objects = detected regions, by index)
    gqa/{train,valid,testdev}.json    GQA in LXMERT's JSON (+ trainval_ans2label.json); the official
    gqa/*_balanced_questions.json     balanced-questions files with each question's program
    snli_ve/snli_ve_{train,dev,test}.jsonl     SNLI-VE (entailment / neutral / contradiction hypotheses)
    flickr30k_entities/Sentences/<id>.txt, Annotations/<id>.xml, {train,val,test}.txt   phrase boxes

Image ids are integers (store keys ``str(id)``, VOLTA's convention); the three splits are cut from the
image order (10 % val, 10 % test). Each image draws from its own (seed, index, stream) generator.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from mmbert.atomic import atomic_write_text
from mmbert.data import features as feature_stores
from mmbert.data.synthetic.detector import ATTRIBUTES, DETECTOR_CLASSES, Detections, Detector
from mmbert.data.synthetic.field_tasks import field_texts, write_field_tasks
from mmbert.data.synthetic.language import (
    ANSWER_TYPES,
    NUMBER_WORDS,
    QUESTION_TYPES,
    captions,
    majority_answer,
    plural,
    question,
    referring_expressions,
    statement,
    vcr_item,
)
from mmbert.data.synthetic.render import png_bytes, render
from mmbert.data.synthetic.scenes import COLOURS, SHAPES, SIZES, Scene, WorldConfig, rng_for, sample_scene

SPLITS = ("train", "val", "test")
NLVR2_SPLITS = {"train": "train", "val": "dev", "test": "test1"}
REFCOCO_SPLITS = {"train": "train", "val": "val", "test": "testB"}
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# streams of the per-image generators
_SCENE, _DETECT, _CAPTION, _QUESTION, _REF, _VCR, _NLVR2 = range(7)
_FIELD_PROBE = 23  # the vocabulary probe's stream for the GQA / SNLI-VE / Flickr30K Entities language
_NLVR2_OFFSET = 10_000_000  # scene indices of NLVR2 pair images, apart from the main images


def split_of(index: int, num_images: int) -> str:
    n_eval = max(1, num_images // 10) if num_images >= 3 else 0
    if index >= num_images - n_eval:
        return "test"
    if index >= num_images - 2 * n_eval:
        return "val"
    return "train"


def file_name(image_id: int) -> str:
    return f"synthetic_{image_id:06d}.png"


def words(text: str) -> list[str]:
    """BERT's basic pre-tokenisation, enough for our ASCII language: lower-case words and punctuation."""
    return re.findall(r"[a-z0-9]+|[^a-z0-9\s]", text.lower())


class World:
    """The scenes, detections and language of one seed, generated image by image on demand."""

    def __init__(self, seed: int = 0, config: WorldConfig | None = None) -> None:
        self.seed = int(seed)
        self.config = config or WorldConfig()
        self.detector = Detector(self.config)

    def scene(self, index: int, image_id: int | None = None) -> Scene:
        return sample_scene(index + 1 if image_id is None else image_id, rng_for(self.seed, index, _SCENE),
                            self.config)  # fmt: skip

    def detect(self, scene: Scene, index: int) -> Detections:
        return self.detector.detect(scene, rng_for(self.seed, index, _DETECT))

    def captions(self, scene: Scene, index: int) -> list[str]:
        return captions(scene, rng_for(self.seed, index, _CAPTION))

    def questions(self, scene: Scene, index: int) -> list:
        rng = rng_for(self.seed, index, _QUESTION)
        types = list(QUESTION_TYPES)
        out = []
        for k in range(self.config.questions_per_image):
            q = question(scene, types[k % len(types)], rng)
            if q is not None:
                out.append(q)
        return out


def vocabulary(config: WorldConfig | None = None) -> list[str]:
    """Every word the language can produce: read off a fixed probe world plus the closed word lists,
    so the vocabulary does not depend on the seed or size of the world generated."""
    world = World(seed=0, config=config)
    found: set[str] = set()
    for i in range(400):
        scene = world.scene(i)
        det = world.detect(scene, i)
        texts = world.captions(scene, i) + [q.question for q in world.questions(scene, i)]
        rng = rng_for(0, i, _REF)
        for j in range(len(scene.objects)):
            texts += referring_expressions(scene, j, rng)
        other = world.scene(i + 1000)
        texts.append(statement(scene, other, bool(i % 2), rng).text())
        item = vcr_item(scene, det.region_object, rng)
        if item is not None:
            for seq in [item.question, *item.answer_choices, *item.rationale_choices]:
                texts.append(" ".join(t for t in seq if isinstance(t, str)))
        if i < 60:  # their closed word lists are covered by far fewer scenes
            texts += field_texts(scene, rng_for(0, i, _FIELD_PROBE))
        for t in texts:
            found.update(words(t))
    found.update([*SHAPES, *(plural(s) for s in SHAPES), *COLOURS, *SIZES, *NUMBER_WORDS])
    found.update(str(k) for k in range(11))
    found.update(words(" ".join(["yes no object objects colour color shape . , ? !"])))
    return [*SPECIAL_TOKENS, *sorted(found)]


def _dump(obj: object, path: Path) -> None:
    atomic_write_text(path, json.dumps(obj, indent=None, separators=(",", ":")) + "\n")


def _dump_jsonl(rows: list[dict], path: Path) -> None:
    atomic_write_text(path, "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in rows))


def _write_store(path: Path, records: list) -> None:
    with feature_stores.open(path, "w", format="tsv") as store:
        for record in records:
            store.write(record)
    # the reader's offset index (<file>.idx) is a cache keyed by mtime: leave it to the first reader, so
    # that the written directory is byte-for-byte a function of the seed
    index = path.with_name(path.name + ".idx")
    if index.exists():
        index.unlink()


def generate(
    out_dir: str | Path,
    num_images: int = 1000,
    seed: int = 0,
    config: WorldConfig | None = None,
    nlvr2_pairs: int | None = None,
    render_images: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Generate and write the world; returns the manifest (also written to ``manifest.json``).
    ``nlvr2_pairs`` defaults to a quarter of ``num_images``. ``progress(done, total)`` is called per image."""
    out = Path(out_dir)
    if num_images < 3:
        raise ValueError(f"need at least 3 images (train, val and test), got {num_images}")
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out}: exists and is not empty; choose a new directory")
    world = World(seed, config)
    cfg = world.config
    n_pairs = num_images // 4 if nlvr2_pairs is None else int(nlvr2_pairs)
    total = num_images + 2 * n_pairs
    out.mkdir(parents=True, exist_ok=True)
    vocab = vocabulary(cfg)
    atomic_write_text(out / "vocab.txt", "".join(w + "\n" for w in vocab))

    records, scenes_out = [], []
    coco = {s: {"images": [], "annotations": []} for s in SPLITS}
    karpathy = []
    vqa_q = {s: [] for s in SPLITS}
    vqa_a = {s: [] for s in SPLITS}
    refs, instances = [], {"images": [], "annotations": [], "categories": []}
    instances["categories"] = [{"id": k, "name": name, "supercategory": "shape"}
                               for k, name in enumerate(DETECTOR_CLASSES) if k > 0]  # fmt: skip
    vcr = {s: [] for s in SPLITS}
    sent_id = ref_sent_id = ann_id = 0
    field_scenes = []  # (image id, split, scene, first caption) for GQA, SNLI-VE and Flickr30K Entities
    for index in range(num_images):
        image_id = index + 1
        split = split_of(index, num_images)
        scene = world.scene(index)
        det = world.detect(scene, index)
        records.append(det.record)
        name = file_name(image_id)
        if render_images:
            (out / "images").mkdir(exist_ok=True)
            (out / "images" / name).write_bytes(png_bytes(render(scene)))
        scenes_out.append({"image_id": image_id, "split": split, "file_name": name, "width": scene.width,
                           "height": scene.height, "objects": [asdict(o) for o in scene.objects],
                           "region_object": det.region_object.tolist(),
                           "region_partial": det.partial.astype(int).tolist()})  # fmt: skip
        image_info = {"id": image_id, "file_name": name, "width": scene.width, "height": scene.height}
        # captions: COCO JSON and the Karpathy split
        caps = world.captions(scene, index)
        field_scenes.append((image_id, split, scene, caps[0]))
        coco[split]["images"].append(image_info)
        sentences = []
        for c in caps:
            coco[split]["annotations"].append({"id": sent_id, "image_id": image_id, "caption": c})
            sentences.append({"tokens": [w for w in words(c) if w.isalnum()], "raw": c, "imgid": index,
                              "sentid": sent_id})  # fmt: skip
            sent_id += 1
        karpathy.append({"filepath": "images", "filename": name, "imgid": index, "split": split,
                         "sentids": [s["sentid"] for s in sentences], "sentences": sentences,
                         "cocoid": image_id})  # fmt: skip
        # VQA
        for k, q in enumerate(world.questions(scene, index)):
            qid = image_id * 1000 + k
            vqa_q[split].append({"image_id": image_id, "question": q.question, "question_id": qid})
            vqa_a[split].append({
                "question_id": qid, "image_id": image_id, "question_type": q.qtype,
                "answer_type": ANSWER_TYPES[q.qtype], "multiple_choice_answer": majority_answer(q.answers),
                "answers": [{"answer": a, "answer_confidence": "yes" if a == q.answer else "maybe",
                             "answer_id": j + 1} for j, a in enumerate(q.answers)],
            })  # fmt: skip
        # referring expressions: up to two objects per image, boxes in COCO's [x, y, w, h]
        instances["images"].append(image_info)
        obj_ann = []
        for obj in scene.objects:
            ann_id += 1
            x1, y1, x2, y2 = obj.box
            instances["annotations"].append({"id": ann_id, "image_id": image_id, "category_id":
                                             DETECTOR_CLASSES.index(obj.shape), "bbox": [x1, y1, x2 - x1, y2 - y1],
                                             "area": round((x2 - x1) * (y2 - y1), 2), "iscrowd": 0})  # fmt: skip
            obj_ann.append(ann_id)
        rng = rng_for(seed, index, _REF)
        for j in rng.permutation(len(scene.objects))[:2].tolist():
            exprs = referring_expressions(scene, j, rng)
            if not exprs:
                continue
            sents = []
            for e in exprs:
                sents.append({"tokens": words(e), "raw": e, "sent": e, "sent_id": ref_sent_id})
                ref_sent_id += 1
            refs.append({"ref_id": len(refs), "ann_id": obj_ann[j], "image_id": image_id,
                         "split": REFCOCO_SPLITS[split], "category_id": DETECTOR_CLASSES.index(scene.objects[j].shape),
                         "file_name": name, "sent_ids": [s["sent_id"] for s in sents], "sentences": sents})  # fmt: skip
        # VCR
        item = vcr_item(scene, det.region_object, rng_for(seed, index, _VCR))
        if item is not None:
            objects = [DETECTOR_CLASSES[c] for c in det.record.obj_id.tolist()]
            vcr[split].append({"annot_id": f"{split}-{len(vcr[split])}", "img_id": str(image_id), "img_fn": name,
                               "objects": objects, "question": item.question, "answer_choices": item.answer_choices,
                               "answer_label": item.answer_label, "rationale_choices": item.rationale_choices,
                               "rationale_label": item.rationale_label})  # fmt: skip
        if progress is not None:
            progress(index + 1, total)

    _write_store(out / "features.tsv", records)
    _dump({"images": scenes_out, "detector_classes": list(DETECTOR_CLASSES), "attributes": list(ATTRIBUTES)},
          out / "scenes.json")  # fmt: skip
    for s in SPLITS:
        _dump(
            {"info": {"description": f"mmbert synthetic world, seed {seed}"}, **coco[s]},
            out / f"captions_{s}.json",
        )
        _dump({"info": {"description": f"mmbert synthetic world, seed {seed}"}, "task_type": "Open-Ended",
               "data_type": "synthetic", "data_subtype": s, "questions": vqa_q[s]},
              out / "vqa" / f"v2_OpenEnded_synthetic_{s}_questions.json")  # fmt: skip
        _dump({"info": {"description": f"mmbert synthetic world, seed {seed}"}, "data_type": "synthetic",
               "data_subtype": s, "annotations": vqa_a[s]},
              out / "vqa" / f"v2_synthetic_{s}_annotations.json")  # fmt: skip
        _dump_jsonl(vcr[s], out / "vcr" / f"{s}.jsonl")
    _dump({"images": karpathy, "dataset": "synthetic"}, out / "dataset_synthetic.json")
    answers = [*COLOURS, *SHAPES, *(str(k) for k in range(cfg.max_objects + 2)), "yes", "no"]
    _dump(answers, out / "vqa" / "answers.json")
    field_counts = write_field_tasks(out, field_scenes, seed, rng_for)
    _dump(refs, out / "refcoco" / "refs.json")
    _dump(instances, out / "refcoco" / "instances.json")

    # NLVR2: pairs of fresh scenes, a balanced true/false statement about each pair
    nlvr2 = {s: [] for s in NLVR2_SPLITS.values()}
    pair_records = []
    for k in range(n_pairs):
        split = NLVR2_SPLITS[split_of(k, n_pairs)] if n_pairs >= 3 else "train"
        stem = f"{split}-{len(nlvr2[split])}-0"  # identifier split-set-pair-sentence; images <stem>-img0/1
        pair = []
        for side in (0, 1):
            index = _NLVR2_OFFSET + 2 * k + side
            scene = world.scene(index, image_id=index)
            det = world.detect(scene, index)
            det.record.image_id = f"{stem}-img{side}"
            pair_records.append(det.record)
            pair.append(scene)
            if render_images:
                (out / "nlvr2" / "images").mkdir(parents=True, exist_ok=True)
                (out / "nlvr2" / "images" / f"{stem}-img{side}.png").write_bytes(png_bytes(render(scene)))
            if progress is not None:
                progress(num_images + 2 * k + side + 1, total)
        rng = rng_for(seed, _NLVR2_OFFSET + 2 * k, _NLVR2)
        label = bool(rng.random() < 0.5)
        s = statement(pair[0], pair[1], label, rng)
        nlvr2[split].append({"identifier": f"{stem}-0", "sentence": s.text(), "label": str(label),
                             "left_url": f"images/{stem}-img0.png", "right_url": f"images/{stem}-img1.png",
                             "directory": "images", "synset": "synthetic", "query": s.kind})  # fmt: skip
    for split, rows in nlvr2.items():
        _dump_jsonl(rows, out / "nlvr2" / f"{split}.json")
    if pair_records:
        _write_store(out / "nlvr2" / "features.tsv", pair_records)

    files = sorted(
        str(p.relative_to(out))
        for p in out.rglob("*")
        if p.is_file() and p.parent.name not in ("images", "Sentences", "Annotations")
    )
    manifest = {
        "format": "mmbert-synthetic/1",
        "seed": seed,
        "num_images": num_images,
        "nlvr2_pairs": n_pairs,
        "config": asdict(cfg),
        "splits": {s: sum(1 for i in range(num_images) if split_of(i, num_images) == s) for s in SPLITS},
        "counts": {"captions": sent_id, "vqa_questions": {s: len(v) for s, v in vqa_q.items()}, "refs": len(refs),
                   "vcr": {s: len(v) for s, v in vcr.items()}, "nlvr2": {s: len(v) for s, v in nlvr2.items()}},
        "field_tasks": field_counts,
        "files": [*files, "manifest.json"],
    }  # fmt: skip
    _dump(manifest, out / "manifest.json")
    return manifest
