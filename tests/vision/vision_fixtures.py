"""Shared by the vision tests: the extra's availability, scikit-image's photographs, the tiny detector."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

FIXTURE = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "frcnn"
TINY_CONFIG = Path(__file__).with_name("butd_tiny.yaml")
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


def vision_import_error() -> str | None:
    try:
        import torchvision  # noqa: F401
        import yaml  # noqa: F401
    except Exception as e:  # a torchvision built for another torch raises RuntimeError/OSError as well
        return f"{type(e).__name__}: {e}"
    return None


def require_vision_or_skip() -> None:
    """Skip the calling module where the extra is absent, unless MMBERT_REQUIRE_VISION=1 (`make test`)."""
    error = vision_import_error()
    if error is None:
        return
    if os.environ.get("MMBERT_REQUIRE_VISION") == "1":
        raise RuntimeError(f"MMBERT_REQUIRE_VISION=1 but the vision extra does not import: {error}")
    pytest.skip(f"the vision extra is not installed ({error}); `make test` installs it", allow_module_level=True)


def frcnn_fixture() -> Path:
    if not (FIXTURE / "meta.json").exists():
        raise FileNotFoundError(f"{FIXTURE.resolve()}: the frcnn fixture is missing (../shared/fixtures/frcnn)")
    return FIXTURE.resolve()


def write_photos(folder: Path, names=PHOTOS) -> list[Path]:
    """scikit-image's real photographs as PNG files."""
    import skimage.data
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        image = getattr(skimage.data, name)()
        if image.ndim == 2:
            image = np.stack([image] * 3, -1)
        path = folder / f"{name}.png"
        Image.fromarray(image[..., :3]).save(path)
        paths.append(path)
    return paths
