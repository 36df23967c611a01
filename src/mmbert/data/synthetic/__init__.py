"""The built-in synthetic world: scenes of coloured shapes, a simulated detector, and language about them
(captions, VQA, NLVR2, retrieval, referring expressions, VCR), written in the real corpora's formats so
that the readers which serve real data serve it too. ``generate(out_dir, num_images, seed)``."""

from mmbert.data.synthetic.detector import ATTRIBUTES, DETECTOR_CLASSES, Detections, Detector
from mmbert.data.synthetic.generate import World, generate, split_of, vocabulary
from mmbert.data.synthetic.render import draw_regions, png_bytes, render
from mmbert.data.synthetic.scenes import COLOURS, SHAPES, SIZES, Scene, SceneObject, WorldConfig, sample_scene

__all__ = [
    "ATTRIBUTES",
    "COLOURS",
    "DETECTOR_CLASSES",
    "SHAPES",
    "SIZES",
    "Detections",
    "Detector",
    "Scene",
    "SceneObject",
    "World",
    "WorldConfig",
    "draw_regions",
    "generate",
    "png_bytes",
    "render",
    "sample_scene",
    "split_of",
    "vocabulary",
]
