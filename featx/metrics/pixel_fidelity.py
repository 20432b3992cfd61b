"""PSNR and SSIM of decoded 8- or 16-bit pixel arrays: the fast path of ``featx score``.

``featx score`` decodes each pair to integer pixels (:func:`featx.io.images.load_pixels`) and
scores them here, in float64 numpy, in its decoding threads (numpy and OpenCV release the GIL):
no float32 RGB copies are made, the crop is a view, BT.601 luma is computed straight from the
integers, and SSIM's Gaussian window runs as OpenCV's separable float64 filter. The numbers are
those of :func:`featx.metrics.fidelity.psnr` / :func:`~featx.metrics.fidelity.ssim` on
:func:`featx.io.images.load_image`'s tensors (``data_range=1``), and of BasicSR's
``calculate_psnr``/``calculate_ssim`` as ``scripts/metrics/calculate_psnr_ssim.py`` calls them,
to float64 rounding of the values ``v / 255`` (``v / 65535``) that both compute in different orders
(BasicSR rounds its luma to float32: differences of order 1e-7 dB and 1e-10 in SSIM).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import numpy as np

from featx.io.images import pixels_to_tensor
from featx.metrics._filters import separable_valid_2d
from featx.metrics.fidelity import BT601_Y, SSIM_K1, SSIM_K2, gaussian_window

__all__ = ["fidelity_scores", "pixel_planes"]

_WINDOW = gaussian_window().numpy()
_BAND = 64
"""Output rows of SSIM computed at a time (bands of 2040-pixel rows and their temporaries fit the cache)."""


@functools.lru_cache(maxsize=2)
def _values(dtype: str) -> np.ndarray:
    """float64 of :func:`featx.io.images.load_image`'s float32 value of every ``uint8``/``uint16`` code."""
    codes = np.arange(256 if dtype == "uint8" else 65536, dtype=dtype)[None]
    return pixels_to_tensor(codes)[0, 0].double().numpy()


def pixel_planes(pixels: np.ndarray, *, crop_border: int = 0, y_channel: bool = False, rgb: bool = False) -> np.ndarray:
    """The float64 planes that PSNR and SSIM compare, after ``crop_border``.

    The values are those of :func:`featx.io.images.load_image`'s float32 tensor (``v / 255`` or
    ``v / 65535`` rounded to float32, as BasicSR's script also reads images), in float64; the luma
    is :func:`featx.metrics.fidelity.rgb_to_y` of them in float64, taken from lookup tables.

    Args:
        pixels: ``uint8`` or ``uint16`` ``(H, W)`` (gray) or ``(H, W, 3)`` (RGB) pixels.
        crop_border: pixels removed on every side.
        y_channel: BT.601 luma of RGB; gray is taken as luma.
        rgb: treat gray as RGB (repeated), as for a gray image paired with an RGB one or ``gray="repeat"``.

    Returns:
        ``(1, H', W')`` (luma or gray) or ``(3, H', W')`` float64 planes in ``[0, 1]``.

    Example:
        >>> white = np.full((6, 6, 3), 255, dtype=np.uint8)
        >>> planes = pixel_planes(white, crop_border=1, y_channel=True)
        >>> planes.shape, round(float(planes.max() * 255), 9)
        ((1, 4, 4), 235.0)
    """
    if crop_border:
        pixels = pixels[crop_border:-crop_border, crop_border:-crop_border]
    values = _values("uint16" if pixels.dtype == np.uint16 else "uint8")
    channels = [pixels[..., c] for c in range(3)] if pixels.ndim == 3 else [pixels] * (3 if rgb else 1)
    if y_channel and len(channels) == 3:
        luma = _lookup(values * (BT601_Y[0] / 255.0), channels[0])
        for weight, channel in zip(BT601_Y[1:], channels[1:], strict=True):
            luma += _lookup(values * (weight / 255.0), channel)
        luma += 16.0 / 255.0
        return luma[None]
    return np.stack([_lookup(values, channel) for channel in channels])


def _lookup(table: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """``table[codes]`` (OpenCV's ``LUT`` for 8-bit codes: several times faster than numpy's gather)."""
    if codes.dtype == np.uint8:
        try:
            import cv2  # type: ignore[import-not-found,unused-ignore]
        except ImportError:
            pass
        else:
            return cv2.LUT(np.ascontiguousarray(codes), table)
    return np.take(table, codes)


def _psnr(pred: np.ndarray, ref: np.ndarray) -> float:
    """PSNR in dB of ``[0, 1]`` planes: ``10 log10(1 / MSE)`` (``inf`` for equal planes)."""
    difference = np.subtract(pred, ref)
    mse = float(np.square(difference, out=difference).mean())
    return float(10.0 * np.log10(1.0 / mse)) if mse > 0 else float("inf")


def _ssim(pred: np.ndarray, ref: np.ndarray) -> float:
    """SSIM of ``[0, 1]`` planes (``data_range=1``), the formula of :func:`featx.metrics.fidelity.ssim`,
    averaged over positions and planes; computed in place, in bands of :data:`_BAND` output rows
    whose temporaries stay in the CPU cache (a quarter faster than whole planes at 2040x1356)."""
    pad = (len(_WINDOW) - 1) // 2
    total, count = 0.0, 0
    for x, y in zip(pred, ref, strict=True):
        rows = x.shape[0] - 2 * pad
        for top in range(0, rows, _BAND):
            bottom = min(top + _BAND, rows) + 2 * pad
            ssim_map = _ssim_map(x[top:bottom], y[top:bottom])
            total += float(ssim_map.sum())
            count += ssim_map.size
    return total / count


def _ssim_map(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The SSIM map of two float64 bands over the valid region, in place (``data_range=1``)."""
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    products = np.multiply(x, x)
    products += np.square(y)
    second = separable_valid_2d(products, _WINDOW)
    np.multiply(x, y, out=products)
    cross = separable_valid_2d(products, _WINDOW)
    mu_x, mu_y = separable_valid_2d(x, _WINDOW), separable_valid_2d(y, _WINDOW)
    mu_xy: np.ndarray = mu_x * mu_y
    mu_sq = np.square(mu_x, out=mu_x)
    mu_sq += np.square(mu_y, out=mu_y)
    cross -= mu_xy
    cross *= 2
    cross += c2
    second -= mu_sq
    second += c2
    cross /= second
    mu_xy *= 2
    mu_xy += c1
    mu_sq += c1
    mu_xy /= mu_sq
    mu_xy *= cross
    return mu_xy


def fidelity_scores(
    pred: np.ndarray,
    ref: np.ndarray,
    metrics: Iterable[str],
    *,
    crop_border: int = 0,
    y_channel: bool = False,
    rgb: bool = False,
) -> dict[str, float]:
    """``{"psnr": ..., "ssim": ...}`` (those in ``metrics``) of a decoded pair, luma and crop computed once.

    Args:
        pred: ``uint8``/``uint16`` ``(H, W)`` or ``(H, W, 3)`` pixels (:func:`featx.io.images.load_pixels`).
        ref: the reference's, same ``(H, W)``.
        metrics: names among ``"psnr"``, ``"ssim"``.
        crop_border: pixels removed on every side.
        y_channel: compare BT.601 luma of RGB pairs.
        rgb: score gray ``(H, W)`` sides as RGB (repeated); ``(H, W, 3)`` sides are always RGB.

    Returns:
        float64 PSNR (dB) and SSIM, as :func:`featx.metrics.fidelity.psnr` / ``ssim`` give on the
        tensors of :func:`featx.io.images.load_image` with ``data_range=1``.

    Example:
        >>> ref = (np.arange(30 * 30 * 3).reshape(30, 30, 3) % 256).astype(np.uint8)
        >>> scores = fidelity_scores(ref, ref // 2 * 2, ["psnr", "ssim"], crop_border=2, y_channel=True)
        >>> round(scores["psnr"], 3), scores["ssim"] > 0.99
        (55.344, True)
    """
    rgb = rgb or pred.ndim == 3 or ref.ndim == 3
    pred_planes, ref_planes = (pixel_planes(p, crop_border=crop_border, y_channel=y_channel, rgb=rgb) for p in (pred, ref))
    scores = {}
    if "psnr" in metrics:
        scores["psnr"] = _psnr(pred_planes, ref_planes)
    if "ssim" in metrics:
        scores["ssim"] = _ssim(pred_planes, ref_planes)
    return scores
