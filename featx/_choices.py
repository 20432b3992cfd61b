"""Named choices that the command line needs when its modules are imported, kept where nothing
heavy is imported (no torch, numpy or Pillow), so ``featx --help`` stays instant.

Each constant is documented and re-exported by the module that owns it: :data:`ALPHA_MODES` by
:mod:`featx.io.images`, :data:`METRICS` and :data:`PAIR_BY` by :mod:`featx.metrics.score`.
"""

from __future__ import annotations

__all__ = ["ALPHA_MODES", "METRICS", "PAIR_BY"]

ALPHA_MODES: tuple[str, ...] = ("error", "drop")
"""What :func:`featx.io.images.load_image` does with an alpha channel: refuse the image, or discard alpha."""

METRICS: tuple[str, ...] = ("psnr", "ssim", "lpips", "dists")
"""Metrics :func:`featx.metrics.score.score_folders` computes (higher is better for psnr/ssim, lower for lpips/dists)."""

PAIR_BY: tuple[str, ...] = ("path", "stem")
"""Pairing rules of ``featx score``: the relative path, or the relative path without its extension."""
