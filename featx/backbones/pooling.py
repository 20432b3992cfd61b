"""The pooling layers a VGG backbone can use in place of torchvision's 2x2 max pool
(:data:`featx.backbones.vgg.layers.POOLINGS`), and the L2 pooling of DISTS."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from featx._checks import check_choice, check_int
from featx.backbones.vgg.layers import POOLINGS

__all__ = ["L2Pool2d", "make_pool"]


class L2Pool2d(nn.Module):
    r"""L2 pooling (Ding et al., DISTS, 2020): :math:`\sqrt{g * x^2 + 10^{-12}}` at stride 2.

    ``g`` is the outer product of the 5-point Hann window without its zero ends, ``[1/2, 1, 1/2]``,
    normalised to sum 1 (a 3x3 filter), applied per channel with zero padding 1; the output has
    ``ceil(H / 2) x ceil(W / 2)`` positions. The filter is a non-persistent buffer, so a backbone
    with L2 pooling has the state-dict keys of torchvision's VGG.

    Args:
        channels: number of channels (the filter is applied to each).

    Shape:
        ``(B, channels, H, W) -> (B, channels, ceil(H / 2), ceil(W / 2))``.

    Example:
        >>> pool = L2Pool2d(2)
        >>> pool(torch.ones(1, 2, 4, 4))[0, 0]  # interior 1; borders see the zero padding
        tensor([[0.7500, 0.8660],
                [0.8660, 1.0000]])
    """

    filter: torch.Tensor

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = check_int("channels", channels)
        window = torch.hann_window(5, periodic=False, dtype=torch.float64)[1:-1]
        kernel = torch.outer(window, window)
        kernel = (kernel / kernel.sum()).to(torch.get_default_dtype())
        self.register_buffer("filter", kernel.expand(channels, 1, 3, 3).clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.conv2d(x * x, self.filter.to(x.dtype), stride=2, padding=1, groups=self.channels)
        return torch.sqrt(pooled + 1e-12)

    def extra_repr(self) -> str:
        return f"channels={self.channels}"


def make_pool(pooling: str, channels: int) -> nn.Module:
    """The layer that takes a VGG pooling position for ``pooling``.

    ``"max"``/``"avg"``: 2x2 at stride 2 (torchvision, Gatys); ``"blur"``: kornia's anti-aliased
    ``MaxBlurPool2D(3)``; ``"conv"``: a learnable 3x3 stride-2 convolution; ``"l2"``:
    :class:`L2Pool2d` (DISTS); ``"none"``: identity.

    Example:
        >>> make_pool("l2", 64)
        L2Pool2d(channels=64)
    """
    check_choice("pooling", pooling, POOLINGS)
    if pooling == "max":
        return nn.MaxPool2d(kernel_size=2, stride=2)
    if pooling == "avg":
        return nn.AvgPool2d(kernel_size=2, stride=2)
    if pooling == "blur":
        import kornia

        pool: nn.Module = kornia.filters.MaxBlurPool2D(kernel_size=3)
        return pool
    if pooling == "conv":
        return nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=1)
    if pooling == "l2":
        return L2Pool2d(channels)
    return nn.Identity()
