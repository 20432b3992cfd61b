"""How DINOv2 inputs become a patch grid, and how the position embeddings follow the grid: the rules of
DINOv2's own code, of timm and of transformers, each reproduced exactly."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from featx.errors import FeatxValueError

__all__ = ["POS_INTERPOLATIONS", "REMAINDERS", "fit_to_patches", "interpolate_pos_embed", "resize_longer_side"]

POS_INTERPOLATIONS: tuple[str, ...] = ("dinov2", "timm", "transformers")
"""How the released 37x37 position embeddings are resampled to another patch grid (bicubic, in float32):

- ``"dinov2"``: DINOv2's ``interpolate_pos_encoding`` (``dinov2/models/vision_transformer.py``) with the
  hub models' settings: ``scale_factor=((h + 0.1) / 37, (w + 0.1) / 37)`` (its ``interpolate_offset``),
  no antialiasing;
- ``"timm"``: timm's ``resample_abs_pos_embed`` (``dynamic_img_size=True``): ``size=(h, w)``, antialiased;
- ``"transformers"``: transformers' ``Dinov2Embeddings.interpolate_pos_encoding``: ``size=(h, w)``, no
  antialiasing.
"""

REMAINDERS: tuple[str, ...] = ("pad", "drop", "error")
"""What happens to the rows and columns of an input beyond the last multiple of 14:

- ``"pad"``: DINOv2's ``CenterPadding`` (``dinov2/hub/utils.py``, the depth and segmentation models):
  zeros are added to the normalised image, half before and half after (the extra one after), up to the
  next multiple of 14;
- ``"drop"``: they are left out, as transformers' stride-14 patch convolution does;
- ``"error"``: refuse, as DINOv2's ``PatchEmbed`` does (and timm's, unless ``dynamic_img_pad`` pads the
  bottom and right).
"""


def fit_to_patches(x: torch.Tensor, patch_size: int, remainder: str) -> torch.Tensor:
    """Make height and width multiples of ``patch_size`` by one of the :data:`REMAINDERS` rules.

    Args:
        x: normalised images.
        patch_size: side of a patch.
        remainder: ``"pad"``, ``"drop"`` or ``"error"``.

    Returns:
        ``x`` itself when both sides are multiples already, else the padded or cropped batch.

    Raises:
        ValueError: ``remainder="error"`` and a side is not a multiple of ``patch_size``.

    Shape:
        ``(B, C, H, W) -> (B, C, H', W')`` with ``H' = ceil(H / p) * p`` (``"pad"``) or ``floor(H / p) * p``
        (``"drop"``), likewise ``W'``.

    Example:
        >>> fit_to_patches(torch.ones(1, 1, 3, 4), 2, "pad")[0, 0]
        tensor([[1., 1., 1., 1.],
                [1., 1., 1., 1.],
                [1., 1., 1., 1.],
                [0., 0., 0., 0.]])
        >>> fit_to_patches(torch.ones(1, 1, 3, 4), 2, "drop").shape
        torch.Size([1, 1, 2, 4])
    """
    height, width = x.shape[-2:]
    extra_h, extra_w = height % patch_size, width % patch_size
    if not extra_h and not extra_w:
        return x
    if remainder == "error":
        raise FeatxValueError(
            f"input of size {height}x{width} is not a multiple of the patch size {patch_size} "
            f"(remainder='error'); pass remainder='pad' to pad it as DINOv2's dense models do, or "
            f"remainder='drop' to leave out the last {extra_h} rows and {extra_w} columns"
        )
    if remainder == "drop":
        return x[..., : height - extra_h, : width - extra_w]
    pad_h = (patch_size - extra_h) % patch_size
    pad_w = (patch_size - extra_w) % patch_size
    return F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))


def resize_longer_side(x: torch.Tensor, max_side: int) -> torch.Tensor:
    """Downscale images whose longer side exceeds ``max_side`` so that it equals ``max_side``.

    The aspect ratio is kept and the new sizes are rounded (``round(H * max_side / max(H, W))``),
    with bicubic interpolation (``align_corners=False``), as dino-perceptual's ``target_size`` does.
    Smaller images are returned unchanged.

    Shape:
        ``(B, C, H, W) -> (B, C, H', W')`` with ``max(H', W') <= max_side``.

    Example:
        >>> resize_longer_side(torch.zeros(1, 3, 100, 40), 50).shape
        torch.Size([1, 3, 50, 20])
    """
    height, width = x.shape[-2:]
    longer = max(height, width)
    if longer <= max_side:
        return x
    scale = max_side / longer
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    return F.interpolate(x, size=size, mode="bicubic", align_corners=False)


def interpolate_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int], *, mode: str) -> torch.Tensor:
    """The position embeddings for a ``grid = (h, w)`` patch grid, by one of the :data:`POS_INTERPOLATIONS`.

    The class token's embedding is kept; the patch embeddings (a square ``M x M`` grid) are resampled
    bicubically in float32 and cast back, as all three reference implementations do. On the grid they
    were trained for (``h = w = M``) they are returned unchanged, as there too.

    Args:
        pos_embed: ``(1, 1 + M * M, C)``, the class token's first.
        grid: the patch grid of the input.
        mode: ``"dinov2"``, ``"timm"`` or ``"transformers"``.

    Returns:
        ``(1, 1 + h * w, C)`` in ``pos_embed``'s dtype.

    Example:
        >>> pos = torch.randn(1, 1 + 4 * 4, 8)
        >>> interpolate_pos_embed(pos, (4, 4), mode="dinov2") is pos
        True
        >>> [tuple(interpolate_pos_embed(pos, (2, 3), mode=m).shape) for m in ("dinov2", "timm", "transformers")]
        [(1, 7, 8), (1, 7, 8), (1, 7, 8)]
    """
    side = round((pos_embed.shape[1] - 1) ** 0.5)
    height, width = grid
    if (height, width) == (side, side):
        return pos_embed
    channels = pos_embed.shape[-1]
    patches = pos_embed[:, 1:].float().reshape(1, side, side, channels).permute(0, 3, 1, 2)
    if mode == "dinov2":
        scale = ((height + 0.1) / side, (width + 0.1) / side)
        patches = F.interpolate(patches, scale_factor=scale, mode="bicubic", antialias=False)
    else:
        patches = F.interpolate(patches, size=(height, width), mode="bicubic", antialias=mode == "timm")
    patches = patches.permute(0, 2, 3, 1).reshape(1, height * width, channels).to(pos_embed.dtype)
    return torch.cat((pos_embed[:, :1], patches), dim=1)
