"""Demo inputs for ``featx extract --sample-images``: scikit-image's bundled pictures (no network) as PNGs."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

from featx.extract.distributed import env_rank
from featx.extract.options import PathLike
from featx.io.atomic import write_atomic

__all__ = ["SAMPLE_IMAGES", "prepare_sample_images", "write_sample_images"]

SAMPLE_IMAGES: tuple[str, ...] = ("astronaut", "coffee", "chelsea", "camera", "brick", "grass", "gravel")
"""scikit-image sample pictures (bundled, no download) used by ``featx extract --sample-images``."""


def write_sample_images(folder: PathLike, *, max_side: int = 256) -> list[Path]:
    """Write scikit-image's bundled sample pictures as PNGs (no network needed).

    The pictures in :data:`SAMPLE_IMAGES` are downscaled (Lanczos) so their longer side is at
    most ``max_side``; gray pictures stay gray. Files already holding the same bytes are left
    alone, so their mtime (and a resumed extraction) is unaffected.

    Returns:
        The PNG paths, sorted.
    """
    import numpy as np
    import skimage.data
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    paths = []
    for name in SAMPLE_IMAGES:
        image = Image.fromarray(np.asarray(getattr(skimage.data, name)()))
        scale = max_side / max(image.size)
        if scale < 1:
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            image = image.resize(size, Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        path = Path(folder, f"{name}.png")
        if not path.exists() or path.read_bytes() != buffer.getvalue():
            write_atomic(path, [buffer.getvalue()])
        paths.append(path)
    return sorted(paths)


def prepare_sample_images(folder: PathLike, *, max_side: int = 256, timeout: float = 60.0) -> list[Path]:
    """:func:`write_sample_images` for one process or a torchrun job: rank 0 writes the pictures,
    the other ranks (``RANK > 0``) wait for them to appear.

    Returns:
        The PNG paths, sorted.

    Raises:
        TimeoutError: a waiting rank did not see every picture within ``timeout`` seconds.
    """
    if env_rank() == 0:
        return write_sample_images(folder, max_side=max_side)
    paths = sorted(Path(folder, f"{name}.png") for name in SAMPLE_IMAGES)
    deadline = time.monotonic() + timeout
    while not all(path.exists() for path in paths):
        if time.monotonic() > deadline:
            raise TimeoutError(f"sample images did not appear in {os.fspath(folder)} (written by rank 0)")
        time.sleep(0.2)
    return paths
