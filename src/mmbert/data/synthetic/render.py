"""Rendering scenes to images with Pillow (no anti-aliasing, no timestamps: the PNG bytes are a function
of the scene alone), and drawing detector regions on top for pictures."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

from PIL import Image, ImageDraw

from mmbert.data.synthetic.scenes import BACKGROUND_RGB, RGB, Scene, SceneObject


def _polygon(obj: SceneObject) -> list[tuple[float, float]]:
    x, y, r = obj.x, obj.y, obj.radius
    if obj.shape == "square":
        s = r * 0.85
        return [(x - s, y - s), (x + s, y - s), (x + s, y + s), (x - s, y + s)]
    if obj.shape == "triangle":
        return [(x, y - r), (x + r * 0.95, y + r * 0.8), (x - r * 0.95, y + r * 0.8)]
    if obj.shape == "star":
        points = []
        for k in range(10):
            radius = r if k % 2 == 0 else r * 0.45
            angle = -math.pi / 2 + k * math.pi / 5
            points.append((x + radius * math.cos(angle), y + radius * math.sin(angle)))
        return points
    if obj.shape == "cross":
        a, b = r * 0.95, r * 0.35
        corners = [
            (-b, -a),
            (b, -a),
            (b, -b),
            (a, -b),
            (a, b),
            (b, b),
            (b, a),
            (-b, a),
            (-b, b),
            (-a, b),
            (-a, -b),
            (-b, -b),
        ]
        return [(x + u, y + v) for u, v in corners]
    raise ValueError(f"no polygon for shape {obj.shape!r}")


def render(scene: Scene) -> Image.Image:
    """The scene as an RGB image (objects drawn in list order, outlined in dark grey)."""
    image = Image.new("RGB", (scene.width, scene.height), BACKGROUND_RGB)
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        fill = RGB[obj.colour]
        if obj.shape == "circle":
            draw.ellipse(obj.box, fill=fill, outline=(60, 60, 60))
        else:
            draw.polygon(_polygon(obj), fill=fill, outline=(60, 60, 60))
    return image


def png_bytes(image: Image.Image) -> bytes:
    """PNG without metadata chunks: identical bytes for identical pixels."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def draw_regions(
    image: Image.Image,
    boxes: Sequence[Sequence[float]],
    weights: Sequence[float] | None = None,
    labels: Sequence[str] | None = None,
    scale: int = 4,
) -> Image.Image:
    """An enlarged copy of ``image`` with region boxes drawn on it. ``weights`` (e.g. attention from a
    word to each region, any non-negative scale) shade each box's interior and set its line width."""
    big = image.convert("RGBA").resize((image.width * scale, image.height * scale), Image.NEAREST)
    overlay = Image.new("RGBA", big.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    top = max(weights) if weights is not None and len(weights) and max(weights) > 0 else 1.0
    order = range(len(boxes)) if weights is None else sorted(range(len(boxes)), key=lambda i: weights[i])
    for i in order:
        x1, y1, x2, y2 = (float(v) * scale for v in boxes[i])
        w = 1.0 if weights is None else float(weights[i]) / top
        draw.rectangle((x1, y1, x2, y2), fill=(255, 0, 0, int(150 * w)),
                       outline=(200, 0, 0, 90 + int(165 * w)), width=1 + int(4 * w))  # fmt: skip
        if labels is not None:
            draw.text((x1 + 2, y1 + 1), labels[i], fill=(0, 0, 0, 255))
    return Image.alpha_composite(big, overlay).convert("RGB")
