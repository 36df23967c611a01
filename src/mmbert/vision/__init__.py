"""Region-feature extraction from images (the optional ``vision`` extra: ``pip install mmbert[vision]``).

``mmbert.vision.butd`` is the bottom-up-attention detector, ``mmbert.vision.torchvision_detectors``
torchvision's Faster R-CNNs and grid features, ``mmbert.vision.extract`` the batched, resumable,
sharded extraction behind ``mmbert extract``. Importing a submodule needs torchvision.
"""

from __future__ import annotations

INSTALL_HINT = (
    "region-feature extraction needs the vision extra: pip install 'mmbert[vision]' "
    "(torchvision built for your torch, e.g. torch==2.14.1 with torchvision==0.29.1, and PyYAML)"
)


def require_vision() -> None:
    """Raise ImportError with the install command when torchvision (or PyYAML) cannot be imported."""
    try:
        import torchvision  # noqa: F401
        import yaml  # noqa: F401
    except Exception as e:  # a torchvision built for another torch fails with RuntimeError / OSError too
        raise ImportError(f"{INSTALL_HINT} ({type(e).__name__}: {e})") from e
