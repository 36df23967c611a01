"""Which images to extract (a directory or a list file) and how they are decoded."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


class UnreadableImageError(ValueError):
    """An image file that cannot be decoded; the message names the path."""


def list_images(source: str | os.PathLike) -> list[tuple[str, Path]]:
    """``(image_id, path)`` pairs in a stable (sorted) order. ``source`` is a directory (its image files,
    recursively; the id is the path below the directory without the suffix, ``/`` kept) or a text file
    with one image path per line (relative paths are taken from the list's folder; id = file stem).
    Two files with one id are refused by name."""
    source = Path(source)
    if source.is_dir():
        paths = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        pairs = [(p.relative_to(source).with_suffix("").as_posix(), p) for p in paths]
    elif source.is_file():
        pairs = []
        for line in source.read_text().splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            p = Path(line)
            if not p.is_absolute():
                p = source.parent / p
            pairs.append((p.stem, p))
    else:
        raise FileNotFoundError(f"{source}: no such image directory or list file")
    seen: dict[str, Path] = {}
    for image_id, p in pairs:
        if image_id in seen:
            raise ValueError(f"image id {image_id!r} is given by two files: {seen[image_id]} and {p}")
        seen[image_id] = p
    if not pairs:
        raise ValueError(f"{source}: no images found (suffixes {', '.join(sorted(IMAGE_SUFFIXES))})")
    return pairs


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """(H, W, 3) uint8 RGB with the EXIF orientation applied (as OpenCV's imread does)."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
            array = np.asarray(im.convert("RGB"))
    except FileNotFoundError as e:
        raise UnreadableImageError(f"{path}: file not found") from e
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise UnreadableImageError(f"{path}: cannot decode image: {e}") from e
    if array.ndim != 3 or array.shape[0] < 1 or array.shape[1] < 1:
        raise UnreadableImageError(f"{path}: empty image {array.shape}")
    return array
