"""PSNR and SSIM on image tensors, batched, on any device, with the conventions of SR papers.

``psnr`` and ``ssim`` take ``(B, C, H, W)`` floating point images in ``[0, data_range]`` and
return one value per image (``reduction="none"``) or their batch mean or sum. Both compute in
float64, as BasicSR's ``calculate_psnr_pt``/``calculate_ssim_pt`` do, and are differentiable.

- ``crop_border=N`` removes ``N`` pixels on every side first (BasicSR's ``crop_border``, the SR
  scale in most papers).
- ``y_channel=True`` compares BT.601 luma of 3-channel inputs, ``Y = (65.481 R + 128.553 G +
  24.966 B) / 255 + 16 / 255`` for RGB in ``[0, 1]`` (BasicSR's ``rgb2ycbcr_pt(..., y_only=True)``
  and ``to_y_channel``, MATLAB's ``rgb2ycbcr`` without its rounding); 1-channel inputs are taken
  as luma already, as BasicSR's ``calculate_psnr``/``calculate_ssim`` do for gray images.
- SSIM is Wang et al.'s, with an 11x11 Gaussian window (sigma 1.5) over the region where the
  window fits ("valid"), ``K1 = 0.01``, ``K2 = 0.03``, averaged over positions and channels:
  BasicSR's ``_ssim``/``_ssim_pth`` and scikit-image's ``structural_similarity(...,
  gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``.

On CPU, when no gradient is needed, the Gaussian window runs as a separable float64 filter in
OpenCV (when installed) or SciPy, several times faster than a float64 ``conv2d``; elsewhere it is
two 1-D ``conv2d`` passes. The two paths agree to float64 rounding.
"""

from __future__ import annotations

from typing import Optional, cast

import torch
import torch.nn.functional as F

from featx._checks import check_bool, check_int, check_number
from featx.errors import FeatxTypeError, FeatxValueError
from featx.losses._features import check_reduction, reduce_batch
from featx.metrics._filters import separable_valid

__all__ = ["BT601_Y", "SSIM_K1", "SSIM_K2", "SSIM_SIGMA", "SSIM_WINDOW", "gaussian_window", "psnr", "rgb_to_y", "ssim"]

BT601_Y: tuple[float, float, float] = (65.481, 128.553, 24.966)
"""BT.601 luma weights of R, G, B (per 255) for RGB in ``[0, 1]``; the offset is ``16 / 255``."""

SSIM_WINDOW = 11
"""Side of SSIM's Gaussian window; also the smallest image side SSIM accepts."""

SSIM_SIGMA = 1.5
"""Standard deviation of SSIM's Gaussian window, in pixels."""

SSIM_K1, SSIM_K2 = 0.01, 0.03
"""SSIM's stabilising constants: ``C1 = (K1 L)^2``, ``C2 = (K2 L)^2`` for ``L = data_range``."""


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """The normalised 1-D Gaussian of SSIM, float64 (OpenCV's ``getGaussianKernel(size, sigma)``).

    Example:
        >>> w = gaussian_window()
        >>> w.shape, round(float(w.sum()), 12), bool(w[5] == w.max())
        (torch.Size([11]), 1.0, True)
    """
    offsets = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    window = torch.exp(-(offsets**2) / (2 * sigma**2))
    return window / window.sum()


def _check_images(pred: object, target: object, metric: str) -> tuple[torch.Tensor, torch.Tensor]:
    for name, value in (("pred", pred), ("target", target)):
        if not isinstance(value, torch.Tensor):
            raise FeatxTypeError(f"{metric}: {name} must be a torch.Tensor (B, C, H, W), got {type(value).__name__}")
        if not value.is_floating_point():
            raise FeatxTypeError(f"{metric}: {name} must be floating point (values in [0, data_range]), got {value.dtype}")
        if value.dim() != 4:
            raise FeatxValueError(f"{metric}: {name} must be 4-D (B, C, H, W), got shape {tuple(value.shape)}")
    pred, target = cast(torch.Tensor, pred), cast(torch.Tensor, target)
    if pred.shape != target.shape:
        raise FeatxValueError(
            f"{metric}: pred and target must have the same shape (B, C, H, W), got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    return pred, target


def rgb_to_y(images: torch.Tensor, *, data_range: float = 1.0, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """BT.601 luma of RGB images in ``[0, data_range]``: ``Y = (65.481 R + 128.553 G + 24.966 B) /
    255 + 16 / 255 * data_range``, in ``[16/255, 235/255] * data_range`` (not rounded).

    Args:
        images: RGB images.
        data_range: the value of white (1 for ``[0, 1]``, 255 for ``[0, 255]``).
        dtype: the dtype to compute and return in (``torch.float64`` for float64 luma of float32
            images); ``None``: the input's.

    Returns:
        The luma.

    Raises:
        TypeError: not a floating point tensor.
        ValueError: not ``(B, 3, H, W)``, or a bad ``data_range``.

    Shape:
        ``(B, 3, H, W) -> (B, 1, H, W)``.

    Example:
        >>> round(rgb_to_y(torch.ones(1, 3, 1, 1), dtype=torch.float64).item() * 255, 9)  # white: 235
        235.0
    """
    _check_images(images, images, "rgb_to_y")
    data_range = check_number("data_range", data_range, positive=True)
    if images.shape[1] != 3:
        raise FeatxValueError(f"rgb_to_y needs 3 channels (RGB), got {images.shape[1]}")
    red, green, blue = (weight / 255.0 for weight in BT601_Y)
    rgb = images.to(dtype or images.dtype)  # every product in the output dtype
    if torch.is_grad_enabled() and rgb.requires_grad:
        return rgb[:, 0:1] * red + rgb[:, 1:2] * green + rgb[:, 2:3] * blue + 16.0 / 255.0 * data_range
    luma = rgb[:, 0:1] * red
    luma.add_(rgb[:, 1:2], alpha=green).add_(rgb[:, 2:3], alpha=blue)
    return luma.add_(16.0 / 255.0 * data_range)


def _prepare(
    pred: object, target: object, metric: str, *, data_range: float, crop_border: int, y_channel: bool, min_side: int
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Check, crop, take luma if asked and convert to float64."""
    pred, target = _check_images(pred, target, metric)
    data_range = check_number("data_range", data_range, positive=True)
    crop_border = check_int("crop_border", crop_border, minimum=0)
    y_channel = check_bool("y_channel", y_channel)
    height, width = pred.shape[-2:]
    left = (height - 2 * crop_border, width - 2 * crop_border)
    if min(left) < min_side:
        need = f"{min_side + 2 * crop_border}x{min_side + 2 * crop_border}"
        raise FeatxValueError(
            f"{metric} needs images of at least {min_side}x{min_side} pixels after crop_border={crop_border} "
            f"(at least {need} before it), got {height}x{width}"
        )
    if crop_border:
        pred = pred[..., crop_border:-crop_border, crop_border:-crop_border]
        target = target[..., crop_border:-crop_border, crop_border:-crop_border]
    pred, target = pred.to(torch.float64), target.to(torch.float64)
    if y_channel and pred.shape[1] == 3:
        pred, target = rgb_to_y(pred, data_range=data_range), rgb_to_y(target, data_range=data_range)
    elif y_channel and pred.shape[1] != 1:
        raise FeatxValueError(f"{metric}: y_channel=True needs 3 (RGB) or 1 (luma) channels, got {pred.shape[1]}")
    return pred, target, data_range


def psnr(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    data_range: float = 1.0,
    crop_border: int = 0,
    y_channel: bool = False,
    reduction: str = "mean",
    eps: float = 0.0,
) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, per image: ``10 log10(L^2 / (MSE + eps))``.

    The MSE of an image is the mean squared difference over its channels and pixels, in float64.
    With the default ``eps=0`` an image equal to its target scores ``inf`` (as BasicSR's
    ``calculate_psnr`` and scikit-image); ``eps=1e-8`` with ``data_range=1`` reproduces BasicSR's
    ``calculate_psnr_pt``, which adds it (identical images then score 80 dB).

    Args:
        pred: images, values in ``[0, data_range]``.
        target: reference images of the same shape.
        data_range: ``L``, the value of white.
        crop_border: pixels removed on every side first.
        y_channel: compare BT.601 luma (:func:`rgb_to_y`) of 3-channel images; 1-channel images
            are compared as they are.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (one value per image).
        eps: added to the MSE.

    Returns:
        float64 PSNR in dB, ``(B,)`` for ``"none"``, else a scalar.

    Raises:
        TypeError: not floating point tensors.
        ValueError: shapes differ or are not 4-D, nothing left after the crop, ``y_channel`` with
            2 or more than 3 channels, a bad ``reduction``, ``data_range`` or ``eps``.

    Shape:
        ``(B, C, H, W)`` twice -> ``(B,)`` or ``()``.

    Example:
        >>> target = torch.full((2, 3, 8, 8), 0.5, dtype=torch.float64)
        >>> pred = target + torch.tensor([0.1, 0.01], dtype=torch.float64).view(2, 1, 1, 1)
        >>> psnr(pred, target, reduction="none").round(decimals=6).tolist()
        [20.0, 40.0]
        >>> psnr(target, target).item()
        inf
    """
    check_reduction(reduction)
    eps = check_number("eps", eps)
    if eps < 0:
        raise FeatxValueError(f"eps must be >= 0, got {eps}")
    pred, target, data_range = _prepare(
        pred, target, "psnr", data_range=data_range, crop_border=crop_border, y_channel=y_channel, min_side=1
    )
    mse = (pred - target).pow(2).mean(dim=(1, 2, 3))
    return reduce_batch(10.0 * torch.log10(data_range**2 / (mse + eps)), reduction)


def _filter(maps: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """The valid region of the separable filter ``window`` on each map of ``(N, K, H, W)``."""
    n, k, height, width = maps.shape
    if maps.device.type == "cpu" and not (torch.is_grad_enabled() and maps.requires_grad):
        arrays = maps.detach().reshape(n * k, height, width).contiguous().numpy()
        filtered = torch.from_numpy(separable_valid(arrays, window.numpy()))
        return filtered.view(n, k, *filtered.shape[-2:])
    kernel = window.to(maps)
    rows = F.conv2d(maps.reshape(n * k, 1, height, width), kernel.view(1, 1, 1, -1))
    filtered = F.conv2d(rows, kernel.view(1, 1, -1, 1))
    return filtered.view(n, k, *filtered.shape[-2:])


def _local_statistics(maps: torch.Tensor) -> torch.Tensor:
    """Gaussian-filtered ``(B, C, 4, H, W)`` maps (valid region)."""
    batch, channels = maps.shape[:2]
    local = _filter(maps.flatten(0, 1), gaussian_window())
    return local.view(batch, channels, *local.shape[1:])


def _ssim_differentiable(pred: torch.Tensor, target: torch.Tensor, c1: float, c2: float) -> torch.Tensor:
    """Per-image SSIM, out of place (autograd records every step)."""
    maps = torch.stack([pred, target, pred * pred + target * target, pred * target], dim=2)
    mu_x, mu_y, second, cross = _local_statistics(maps).unbind(dim=2)
    mu_xy, mu_sq = mu_x * mu_y, mu_x * mu_x + mu_y * mu_y
    structure = (2 * (cross - mu_xy) + c2) / (second - mu_sq + c2)
    return ((2 * mu_xy + c1) / (mu_sq + c1) * structure).mean(dim=(1, 2, 3))


def _ssim_in_place(pred: torch.Tensor, target: torch.Tensor, c1: float, c2: float) -> torch.Tensor:
    """Per-image SSIM without gradients: the same formula, in place (no temporaries; large images)."""
    maps = torch.empty((*pred.shape[:2], 4, *pred.shape[2:]), dtype=pred.dtype, device=pred.device)
    maps[:, :, 0], maps[:, :, 1] = pred, target
    torch.mul(pred, pred, out=maps[:, :, 2])
    maps[:, :, 2].addcmul_(target, target)
    torch.mul(pred, target, out=maps[:, :, 3])
    mu_x, mu_y, second, cross = _local_statistics(maps).unbind(dim=2)
    mu_xy = mu_x * mu_y
    mu_sq = mu_x.square_().add_(mu_y.square_())
    structure = cross.sub_(mu_xy).mul_(2).add_(c2).div_(second.sub_(mu_sq).add_(c2))
    return mu_xy.mul_(2).add_(c1).div_(mu_sq.add_(c1)).mul_(structure).mean(dim=(1, 2, 3))


def ssim(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    data_range: float = 1.0,
    crop_border: int = 0,
    y_channel: bool = False,
    reduction: str = "mean",
) -> torch.Tensor:
    """Structural similarity per image, with an 11x11 Gaussian window (sigma 1.5) over the valid region.

    With ``mu``, ``sigma`` the Gaussian-weighted local means, variances and covariance (float64):

        SSIM = (2 mu_x mu_y + C1) (2 sigma_xy + C2) / ((mu_x^2 + mu_y^2 + C1) (sigma_x^2 + sigma_y^2 + C2))

    with ``C1 = (0.01 L)^2`` and ``C2 = (0.03 L)^2``, averaged over the positions where the window
    fits and over the channels. Equal to BasicSR's ``calculate_ssim_pt`` (and ``calculate_ssim``
    on ``[0, 255]`` arrays) and to scikit-image's ``structural_similarity(...,
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=L)`` averaged over
    channels, to float64 rounding. Differentiable with respect to both inputs.

    Args:
        pred: images, values in ``[0, data_range]``.
        target: reference images of the same shape.
        data_range: ``L``, the value of white.
        crop_border: pixels removed on every side first.
        y_channel: compare BT.601 luma (:func:`rgb_to_y`) of 3-channel images; 1-channel images
            are compared as they are.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (one value per image).

    Returns:
        float64 SSIM, ``(B,)`` for ``"none"``, else a scalar.

    Raises:
        TypeError: not floating point tensors.
        ValueError: shapes differ or are not 4-D, fewer than 11x11 pixels after the crop,
            ``y_channel`` with 2 or more than 3 channels, a bad ``reduction`` or ``data_range``.

    Shape:
        ``(B, C, H, W)`` twice, ``H, W >= 11 + 2 crop_border`` -> ``(B,)`` or ``()``.

    Example:
        >>> x = torch.rand(2, 3, 32, 32)
        >>> ssim(x, x, reduction="none").round(decimals=12).tolist()
        [1.0, 1.0]
        >>> bool(ssim(x, (x + 0.3 * torch.randn_like(x)).clamp(0, 1)) < 0.9)
        True
    """
    check_reduction(reduction)
    pred, target, data_range = _prepare(
        pred, target, "ssim", data_range=data_range, crop_border=crop_border, y_channel=y_channel, min_side=SSIM_WINDOW
    )
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    if torch.is_grad_enabled() and (pred.requires_grad or target.requires_grad):
        value = _ssim_differentiable(pred, target, c1, c2)
    else:
        value = _ssim_in_place(pred, target, c1, c2)
    return reduce_batch(value, reduction)
