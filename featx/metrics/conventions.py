"""How ``featx score`` reads a pair: decoding, gray images, the reference's mod-crop, size checks.

Each setting names the script it reproduces:

- ``gray="keep"`` (default): a 1-channel file stays 1-channel for PSNR and SSIM, as BasicSR's
  ``scripts/metrics/calculate_psnr_ssim.py`` reads it (``cv2.IMREAD_UNCHANGED``; with
  ``y_channel`` the gray values are compared as they are). ``gray="repeat"``: gray is repeated to
  RGB first, as BasicSR's ``test.py`` validation reads images (``cv2.IMREAD_COLOR``); with
  ``y_channel`` the luma of a repeated gray ``g`` is ``219/255 g + 16/255``, which raises PSNR by
  ``20 log10(255/219) = 1.32 dB``. LPIPS and DISTS always see RGB.
- A gray image paired with an RGB one is repeated to RGB (BasicSR's script would stop on the shape
  mismatch); the pair carries a warning.
- ``modcrop=S`` crops the reference's bottom and right edges to a multiple of ``S``, as BasicSR's
  ``mod_crop`` does for references whose size is not a multiple of the scale; the prediction is
  never cropped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Union

import numpy as np
import torch

from featx.errors import FeatxValueError, ImageDecodeError
from featx.io.images import load_pixels, pixels_to_tensor
from featx.io.pillow_settings import open_header

__all__ = [
    "CROP_SCOPES",
    "GRAY_MODES",
    "PAIR_ERRORS",
    "DecodedPair",
    "PixelPair",
    "crop",
    "is_gray_file",
    "read_pair",
    "read_pixel_pair",
]

GRAY_MODES: tuple[str, ...] = ("keep", "repeat")
"""``featx score --gray``: keep 1-channel images for PSNR/SSIM (BasicSR's metrics script), or
repeat them to RGB (BasicSR's ``test.py``)."""

CROP_SCOPES: tuple[str, ...] = ("psnr_ssim", "all")
"""``featx score --crop-scope``: ``crop_border`` applies to PSNR/SSIM only (BasicSR's scripts), or to every metric."""

_GRAY_PIL_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N")
_TIFF_SAMPLES_PER_PIXEL = 277


def is_gray_file(path: Union[str, os.PathLike[str]]) -> bool:
    """Whether an image file stores one channel (gray, or gray with alpha), from its header only.

    Palette images count as colour (they decode to RGB, as OpenCV reads them too).

    Example:
        >>> import tempfile
        >>> from PIL import Image
        >>> with tempfile.TemporaryDirectory() as d:
        ...     Image.new("L", (4, 4)).save(os.path.join(d, "g.png"))
        ...     Image.new("RGB", (4, 4)).save(os.path.join(d, "c.png"))
        ...     is_gray_file(os.path.join(d, "g.png")), is_gray_file(os.path.join(d, "c.png"))
        (True, False)
    """
    try:
        with open_header(path, None) as (image, _):  # a FIFO refused, never a size warning
            if image.format == "TIFF":
                samples = getattr(image, "tag_v2", {}).get(_TIFF_SAMPLES_PER_PIXEL, 1)
                return int(samples) in (1, 2)
            return image.mode in _GRAY_PIL_MODES
    except Exception:  # unreadable headers are load_image's to report
        return False


@dataclass
class DecodedPair:
    """A decoded pair, ready to score.

    Attributes:
        pred: ``(C, H, W)`` float32 in ``[0, 1]``; ``C`` is 1 for a kept gray pair, else 3.
        ref: the reference, same shape (after ``modcrop``).
        warning: a note on the pair (gray against RGB), or ``None``.
    """

    pred: torch.Tensor
    ref: torch.Tensor
    warning: Optional[str] = None

    def rgb(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Both images as ``(3, H, W)`` (gray repeated), for LPIPS and DISTS."""
        return tuple(t.expand(3, -1, -1) if t.shape[0] == 1 else t for t in (self.pred, self.ref))  # type: ignore[return-value]


def crop(image: torch.Tensor, border: int) -> torch.Tensor:
    """``image[..., border:-border, border:-border]`` (the whole image for ``border=0``).

    Example:
        >>> crop(torch.zeros(1, 10, 12), 2).shape
        torch.Size([1, 6, 8])
    """
    return image[..., border:-border, border:-border] if border else image


@dataclass
class PixelPair:
    """A decoded pair as integer pixels (what ``featx score`` scores PSNR/SSIM on, without float copies).

    Attributes:
        pred: ``uint8``/``uint16`` pixels (:func:`featx.io.images.load_pixels`), ``(H, W)`` or ``(H, W, 3)``.
        ref: the reference's, same ``(H, W)`` (after ``modcrop``).
        channels: 1 for a kept gray pair (both sides ``(H, W)``), else 3 (gray sides count as repeated).
        warning: a note on the pair (gray against RGB), or ``None``.
    """

    pred: np.ndarray
    ref: np.ndarray
    channels: int
    warning: Optional[str] = None

    def tensors(self) -> DecodedPair:
        """The pair as :func:`read_pair` gives it: float32 ``(C, H, W)`` in ``[0, 1]``."""
        pred, ref = pixels_to_tensor(self.pred), pixels_to_tensor(self.ref)
        if self.channels == 1:
            pred, ref = pred[:1].contiguous(), ref[:1].contiguous()
        return DecodedPair(pred, ref, self.warning)


def read_pixel_pair(
    pred_path: str, ref_path: str, *, alpha: str = "error", gray: str = "keep", modcrop: Optional[int] = None
) -> PixelPair:
    """Decode a pair to integer pixels by :func:`featx.io.images.load_image`'s rules (``alpha`` for
    both files) and the conventions above.

    Raises:
        ImageDecodeError: a file cannot be decoded (the message names it).
        ValueError: the sizes differ after ``modcrop`` (the message gives both, as ``(H, W)``).
    """
    pred, ref = load_pixels(pred_path, alpha=alpha), load_pixels(ref_path, alpha=alpha)
    if modcrop is not None and modcrop > 1:
        height, width = ref.shape[:2]
        ref = ref[: height - height % modcrop, : width - width % modcrop]
    if pred.shape[:2] != ref.shape[:2]:
        hint = "" if modcrop else "; --modcrop SCALE crops a reference to a multiple of the scale"
        raise _SizeError(f"sizes differ: prediction {tuple(pred.shape[:2])}, reference {tuple(ref.shape[:2])} (H, W){hint}")
    pred_gray, ref_gray = is_gray_file(pred_path), is_gray_file(ref_path)
    warning, channels = None, 3
    if pred_gray != ref_gray:
        which = "prediction" if pred_gray else "reference"
        warning = f"gray {which} against an RGB {'reference' if pred_gray else 'prediction'}: scored as RGB"
    elif gray == "keep" and pred_gray:  # the first channel, as the float path keeps it
        pred, ref = (a if a.ndim == 2 else a[..., 0] for a in (pred, ref))
        channels = 1
    return PixelPair(pred, ref, channels, warning)


def read_pair(
    pred_path: str, ref_path: str, *, alpha: str = "error", gray: str = "keep", modcrop: Optional[int] = None
) -> DecodedPair:
    """Decode a pair by :func:`featx.io.images.load_image`'s rules (``alpha`` for both files) and
    the conventions above, as float32 tensors (:meth:`PixelPair.tensors` of :func:`read_pixel_pair`).

    Raises:
        ImageDecodeError: a file cannot be decoded (the message names it).
        ValueError: the sizes differ after ``modcrop`` (the message gives both, as ``(H, W)``).
    """
    return read_pixel_pair(pred_path, ref_path, alpha=alpha, gray=gray, modcrop=modcrop).tensors()


class _SizeError(FeatxValueError):
    """The two images of a pair differ in size (a per-pair error, never a setup error)."""


PAIR_ERRORS = (ImageDecodeError, _SizeError)
"""The exceptions :func:`read_pair` raises for one pair; their message is the pair's error."""
