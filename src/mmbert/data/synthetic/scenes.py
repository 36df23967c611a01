"""Scenes of the synthetic world: 2-8 coloured shapes of two sizes at free positions on a plain canvas.

The world is symmetric under any permutation of the colours and of the shapes (each is drawn uniformly
and independently), which is what lets the question generator balance answers per question type without
the question text giving the answer away. Every random draw comes from a ``numpy.random.Generator``
derived from (seed, image index, stream), so an image never depends on how many others are generated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SHAPES = ("circle", "square", "triangle", "star", "cross")
COLOURS = ("red", "green", "blue", "yellow", "purple")
SIZES = ("small", "large")
RGB = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 30),
    "purple": (150, 50, 190),
}
RADIUS = {"small": 9, "large": 16}  # pixels on the default 128 x 128 canvas
BACKGROUND_RGB = (235, 235, 228)

# Spatial relations: name -> (axis, sign). "left of B" means a smaller x centre than B's.
RELATIONS = {"left of": (0, -1), "right of": (0, 1), "above": (1, -1), "below": (1, 1)}
OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
RELATION_MARGIN = 0.08  # fraction of the canvas: closer centres stand in no relation (no ambiguous truths)


@dataclass(frozen=True)
class WorldConfig:
    """Everything that shapes a world. ``feat_dim`` is the simulated detector's feature width (2048 as a
    Faster R-CNN; the demo uses a narrower one for speed)."""

    image_size: int = 128
    min_objects: int = 2
    max_objects: int = 8
    feat_dim: int = 2048
    max_regions: int = 36
    min_extra_regions: int = 1  # background and partial-object boxes besides one per object
    max_extra_regions: int = 4
    feature_noise: float = 0.35
    detector_accuracy: float = 0.9  # how often the detector's top class is the right one
    detector_seed: int = 1234  # the fixed random projection: the same "detector" for every world seed
    questions_per_image: int = 5

    def __post_init__(self) -> None:
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError(
                f"need 1 <= min_objects <= max_objects, got {self.min_objects}, {self.max_objects}"
            )
        if self.max_objects + self.min_extra_regions > self.max_regions:
            raise ValueError("max_regions must leave room for every object and the minimum extra regions")
        if self.min_extra_regions > self.max_extra_regions:
            raise ValueError("min_extra_regions must not exceed max_extra_regions")
        if self.feat_dim < 8:
            raise ValueError(f"feat_dim must be at least 8, got {self.feat_dim}")
        if self.image_size < 64:
            raise ValueError(f"image_size must be at least 64 pixels, got {self.image_size}")


@dataclass(frozen=True)
class SceneObject:
    shape: str
    colour: str
    size: str
    x: float  # centre, pixels
    y: float
    radius: float

    @property
    def box(self) -> tuple[float, float, float, float]:
        """The true box (x1, y1, x2, y2) in pixels."""
        return (self.x - self.radius, self.y - self.radius, self.x + self.radius, self.y + self.radius)


@dataclass(frozen=True)
class Scene:
    image_id: int
    width: int
    height: int
    objects: tuple[SceneObject, ...]

    def relation(self, a: int, b: int) -> str | None:
        """The dominant spatial relation of object ``a`` to object ``b`` ("left of" ...), or None when
        their centres are too close along the dominant axis to say."""
        oa, ob = self.objects[a], self.objects[b]
        dx, dy = (oa.x - ob.x) / self.width, (oa.y - ob.y) / self.height
        if max(abs(dx), abs(dy)) < RELATION_MARGIN or abs(abs(dx) - abs(dy)) < RELATION_MARGIN / 2:
            return None
        if abs(dx) > abs(dy):
            return "left of" if dx < 0 else "right of"
        return "above" if dy < 0 else "below"

    def holds(self, a: int, rel: str, b: int) -> bool | None:
        """Whether "a rel b" is true (None when ambiguous: too close to call)."""
        axis, sign = RELATIONS[rel]
        oa, ob = self.objects[a], self.objects[b]
        d = ((oa.x - ob.x) / self.width) if axis == 0 else ((oa.y - ob.y) / self.height)
        if abs(d) < RELATION_MARGIN:
            return None
        return (d > 0) == (sign > 0)

    def count(self, shape: str | None = None, colour: str | None = None, size: str | None = None) -> int:
        return sum(
            (shape is None or o.shape == shape)
            and (colour is None or o.colour == colour)
            and (size is None or o.size == size)
            for o in self.objects
        )


def rng_for(seed: int, index: int, stream: int) -> np.random.Generator:
    """An independent generator per (world seed, image index, stream)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index), int(stream)]))


def sample_scene(image_id: int, rng: np.random.Generator, config: WorldConfig) -> Scene:
    """Objects with uniform shape, colour and size at non-overlapping positions."""
    scale = config.image_size / 128.0
    n = int(rng.integers(config.min_objects, config.max_objects + 1))
    objects: list[SceneObject] = []
    for _ in range(n):
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        colour = COLOURS[int(rng.integers(len(COLOURS)))]
        size = SIZES[int(rng.integers(len(SIZES)))]
        radius = RADIUS[size] * scale + float(rng.uniform(-1.0, 1.0)) * scale
        for _attempt in range(200):
            x = float(rng.uniform(radius + 2, config.image_size - radius - 2))
            y = float(rng.uniform(radius + 2, config.image_size - radius - 2))
            if all((x - o.x) ** 2 + (y - o.y) ** 2 > (radius + o.radius + 3 * scale) ** 2 for o in objects):
                break
        else:  # the canvas is full: the scene keeps the objects placed so far
            break
        objects.append(SceneObject(shape, colour, size, round(x, 2), round(y, 2), round(radius, 2)))
    return Scene(image_id, config.image_size, config.image_size, tuple(objects))
