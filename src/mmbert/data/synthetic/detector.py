"""A simulated Faster R-CNN, so that the synthetic world's features look like bottom-up-attention output.

Per object: one region with a jittered box; a feature that is a fixed random projection of the object's
attributes (shape, colour, size) plus Gaussian noise; a class distribution over ``DETECTOR_CLASSES``
(background + the shapes) whose top class is right with probability ``detector_accuracy``; an attribute
label (usually the colour) with a confidence. Besides these, 1-4 extra regions: background boxes and
partial-object boxes (half an object, a weaker and noisier feature), as a real detector proposes. Regions
are shuffled, so their order tells nothing. The projection comes from ``detector_seed`` alone: worlds of
different seeds share one "detector", as real corpora share one feature extractor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mmbert.data.batch import RegionFeatures
from mmbert.data.synthetic.scenes import COLOURS, SHAPES, SIZES, Scene, WorldConfig

DETECTOR_CLASSES = ("__background__", *SHAPES)  # obj_id / cls_prob index; 0 = background, as in VG's 1601
ATTRIBUTES = (*COLOURS, *SIZES)  # attr_id index
_CODE_DIM = len(SHAPES) + len(COLOURS) + 2  # one-hot shape, one-hot colour, size (+-1), background flag


@dataclass
class Detections:
    """A detector's output for one image: the feature-store record and, for the generator's own use,
    which object each region shows (``-1`` = background) and whether it is a partial view."""

    record: RegionFeatures
    region_object: np.ndarray  # (R,) int
    partial: np.ndarray  # (R,) bool


class Detector:
    def __init__(self, config: WorldConfig) -> None:
        self.config = config
        rng = np.random.default_rng(np.random.SeedSequence([config.detector_seed, 7919]))
        # (K, F): unit-variance features for a one-hot code, whatever F is
        self.projection = rng.standard_normal((_CODE_DIM, config.feat_dim)).astype(np.float64) / np.sqrt(2.0)

    @staticmethod
    def code(shape: str | None, colour: str | None, size: str | None, strength: float = 1.0) -> np.ndarray:
        c = np.zeros(_CODE_DIM)
        if shape is None:
            c[-1] = 1.0
            return c
        c[SHAPES.index(shape)] = strength
        c[len(SHAPES) + COLOURS.index(colour)] = strength
        c[-2] = strength * (1.0 if size == "large" else -1.0)
        return c

    def detect(self, scene: Scene, rng: np.random.Generator) -> Detections:
        cfg = self.config
        w, h = scene.width, scene.height
        codes, boxes, cls_targets, conf_scale, owners, partial = [], [], [], [], [], []
        for i, obj in enumerate(scene.objects):
            jitter = rng.normal(0.0, 0.08 * obj.radius, 4)
            boxes.append(np.add(obj.box, jitter))
            codes.append(self.code(obj.shape, obj.colour, obj.size))
            cls_targets.append(DETECTOR_CLASSES.index(obj.shape))
            conf_scale.append(1.0)
            owners.append(i)
            partial.append(False)
        room = cfg.max_regions - len(scene.objects)
        extra = int(rng.integers(cfg.min_extra_regions, cfg.max_extra_regions + 1))
        for _ in range(min(extra, room)):
            if scene.objects and rng.random() < 0.5:  # half of an object
                i = int(rng.integers(len(scene.objects)))
                obj = scene.objects[i]
                x1, y1, x2, y2 = obj.box
                side = int(rng.integers(4))
                mx, my = (x1 + x2) / 2, (y1 + y2) / 2
                box = [(x1, y1, mx, y2), (mx, y1, x2, y2), (x1, y1, x2, my), (x1, my, x2, y2)][side]
                boxes.append(np.add(box, rng.normal(0.0, 0.05 * obj.radius, 4)))
                codes.append(
                    self.code(obj.shape, obj.colour, obj.size, 0.6) + 0.4 * self.code(None, None, None)
                )
                cls_targets.append(DETECTOR_CLASSES.index(obj.shape))
                conf_scale.append(0.5)
                owners.append(i)
                partial.append(True)
            else:  # background
                bw, bh = rng.uniform(0.15, 0.5) * w, rng.uniform(0.15, 0.5) * h
                x1, y1 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
                boxes.append(np.array([x1, y1, x1 + bw, y1 + bh]))
                codes.append(self.code(None, None, None))
                cls_targets.append(0)
                conf_scale.append(0.8)
                owners.append(-1)
                partial.append(False)
        r = len(boxes)
        order = rng.permutation(r)
        code = np.stack(codes)[order]
        feats = code @ self.projection + rng.normal(0.0, cfg.feature_noise, (r, cfg.feat_dim))
        box = np.stack(boxes)[order]
        box[:, 0::2] = np.clip(box[:, 0::2], 0, w - 1)
        box[:, 1::2] = np.clip(box[:, 1::2], 0, h - 1)
        box[:, 2:] = np.maximum(box[:, 2:], box[:, :2] + 1)
        cls_prob = np.empty((r, len(DETECTOR_CLASSES)))
        attr_id = np.empty(r, dtype=np.int64)
        attr_conf = np.empty(r)
        owners_arr = np.asarray(owners, dtype=np.int64)[order]
        for j, src in enumerate(order):
            target = cls_targets[src]
            if rng.random() >= cfg.detector_accuracy:  # a confusion: the peak lands on a wrong class
                target = int(rng.choice([c for c in range(len(DETECTOR_CLASSES)) if c != target]))
            logits = rng.normal(0.0, 0.7, len(DETECTOR_CLASSES))
            logits[target] += 4.0 * conf_scale[src]
            p = np.exp(logits - logits.max())
            cls_prob[j] = p / p.sum()
            obj = scene.objects[owners[src]] if owners[src] >= 0 else None
            if obj is None:  # background: a weak, random attribute
                attr_id[j] = int(rng.integers(len(ATTRIBUTES)))
                attr_conf[j] = rng.uniform(0.05, 0.3)
            else:
                name = obj.colour if rng.random() < 0.85 else obj.size
                attr_id[j] = ATTRIBUTES.index(name)
                attr_conf[j] = rng.uniform(0.5, 0.95) * conf_scale[src]
        record = RegionFeatures(
            image_id=str(scene.image_id),
            feats=feats.astype(np.float32),
            boxes=np.round(box, 2).astype(np.float32),
            image_size=(h, w),
            cls_prob=cls_prob.astype(np.float32),
            obj_id=cls_prob.argmax(1).astype(np.int64),
            obj_conf=cls_prob.max(1).astype(np.float32),
            attr_id=attr_id,
            attr_conf=attr_conf.astype(np.float32),
        )
        return Detections(record, owners_arr, np.asarray(partial, dtype=bool)[order])
