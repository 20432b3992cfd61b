"""Named choices that the command line needs when its modules are imported, kept where nothing
heavy is imported (no torch, numpy or Pillow), so ``featx --help`` stays instant.

Each constant is documented and re-exported by the module that owns it: :data:`ALPHA_MODES` by
:mod:`featx.images`.
"""

from __future__ import annotations

__all__ = ["ALPHA_MODES"]

ALPHA_MODES: tuple[str, ...] = ("error", "drop")
"""What :func:`featx.images.load_image` does with an alpha channel: refuse the image, or discard alpha."""
