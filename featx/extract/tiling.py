"""Exact tiled extraction: the features of an image too large for one pass, computed tile by tile
and stitched so that they equal one untiled pass.

A tile is the core region it contributes plus a halo of context on each side. The halo is at
least the receptive-field radius of the deepest tap, so every kept output sees exactly the
pixels it sees in the untiled pass; tile origins (and halos) are multiples of the deepest tap's
stride, so every pooling window falls on the same grid as in the untiled pass. The network's own
zero padding then only acts at the true image border, as it does untiled. Global descriptors
(``gap``, ``gmp``, ``gram``) are accumulated over the tiles' cores instead of stitching maps.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from featx._checks import check_choice, check_int
from featx.backbones.vgg.layers import layer_specs
from featx.errors import FeatxValueError
from featx.losses._features import autocast_off

if TYPE_CHECKING:
    from featx.backbones.vgg.features import VGGFeatures

__all__ = [
    "TILE_DESCRIPTORS",
    "TileGeometry",
    "pooled_size",
    "tap_sizes",
    "tile_cores",
    "tile_geometry",
    "tile_spans",
    "tiled_features",
]

TILE_DESCRIPTORS: tuple[str, ...] = ("none", "gap", "gmp", "gram")
"""What :func:`tiled_features` returns per tap: the map, or a global descriptor accumulated over tiles."""


@dataclass(frozen=True)
class TileGeometry:
    """How an extractor's input may be cut so that stitched features stay exact.

    Attributes:
        stride: the deepest tap's stride; tile origins and halos are multiples of it.
        radius: receptive-field radius of the deepest tap, in input pixels (an upper bound).
        halo: context added on each side of a tile: ``radius`` rounded up to a multiple of ``stride``.
    """

    stride: int
    radius: int
    halo: int


def tile_geometry(arch: str, deepest_tap: str, *, pooling: str = "max") -> TileGeometry:
    """The alignment and halo that make tiling exact up to ``deepest_tap``.

    Per layer, in the pixels of its input: a 3x3 convolution reaches 1 pixel to each side; a 2x2
    max/avg pool 1 (to one side); the blur pool (``max_pool(2, stride 1)`` then a 3x3 blur at
    stride 2) 2; the strided 3x3 convolution of ``pooling="conv"`` and the 3x3 L2 pool 1. Each reach counts ``stride``
    input pixels, the stride of the layer's input.

    Example:
        >>> tile_geometry("vgg19", "relu3_1")
        TileGeometry(stride=4, radius=13, halo=16)
    """
    specs = layer_specs(arch, pooling=pooling)
    names = [spec.name for spec in specs]
    check_choice("tap", deepest_tap, names, context=f" for {arch}")
    radius, stride = 0, 1
    for spec in specs[: names.index(deepest_tap) + 1]:
        if spec.kind == "conv":
            radius += stride
        elif spec.kind == "pool" and pooling != "none":
            radius += (2 if pooling == "blur" else 1) * stride
            stride *= 2
    return TileGeometry(stride, radius, math.ceil(radius / stride) * stride)


def pooled_size(size: int, pooling: str) -> int:
    """Output length of one pooling layer for an input of ``size``: ``floor(size / 2)`` for the
    2x2 max/avg pools and for the blur pool (``ceil((size - 1) / 2)``, the same number),
    ``ceil(size / 2)`` for the strided convolution and the L2 pool (3x3, stride 2, padding 1),
    ``size`` for ``"none"``.

    Example:
        >>> [pooled_size(9, p) for p in ("max", "avg", "blur", "l2", "conv", "none")]
        [4, 4, 4, 5, 5, 9]
    """
    if pooling in ("conv", "l2"):
        return (size + 1) // 2
    return size if pooling == "none" else size // 2


def tap_sizes(extractor: VGGFeatures, height: int, width: int) -> dict[str, tuple[int, int]]:
    """``(H, W)`` of every tap of ``extractor`` for an input of ``height x width``."""
    sizes, h, w = {}, height, width
    taps = set(extractor.taps)
    for spec in layer_specs(extractor.arch, pooling=extractor.pooling)[: extractor.feature_info[-1].index + 1]:
        if spec.kind == "pool":
            h, w = pooled_size(h, extractor.pooling), pooled_size(w, extractor.pooling)
        if spec.name in taps:
            sizes[spec.name] = (h, w)
    return sizes


def tile_spans(length: int, tile: int, geometry: TileGeometry) -> Iterator[tuple[int, int, int, int]]:
    """Cut ``[0, length)`` into cores of ``tile`` pixels: ``(core_start, core_end, ext_start, ext_end)``.

    The extended span adds ``geometry.halo`` on each side, clipped to ``[0, length)``; starts are
    multiples of ``geometry.stride``.

    Example:
        >>> list(tile_spans(100, 32, TileGeometry(stride=4, radius=6, halo=8)))
        [(0, 32, 0, 40), (32, 64, 24, 72), (64, 96, 56, 100), (96, 100, 88, 100)]
    """
    if tile % geometry.stride:
        raise FeatxValueError(f"tile must be a multiple of the deepest tap's stride {geometry.stride}, got {tile}")
    for start in range(0, length, tile):
        end = min(start + tile, length)
        yield start, end, max(0, start - geometry.halo), min(length, end + geometry.halo)


def tiled_features(extractor: VGGFeatures, image: torch.Tensor, *, tile: int, reduce: str = "none") -> dict[str, torch.Tensor]:
    """``extractor(image)`` computed tile by tile, equal to one untiled pass.

    Peak memory is that of one extended tile's forward pass plus the stitched outputs (for
    ``reduce="none"``) or only the descriptors (``gap``, ``gmp``, ``gram``, accumulated in float32).

    Args:
        extractor: a :class:`~featx.backbones.vgg.features.VGGFeatures` in eval mode (batch norm in training
            mode uses batch statistics, which tiles cannot reproduce).
        image: ``(1, 3, H, W)`` in the extractor's input range.
        tile: core tile side in input pixels, a multiple of the deepest tap's stride.
        reduce: ``"none"`` (the stitched maps), ``"gap"``, ``"gmp"`` or ``"gram"`` (as
            :func:`featx.extract.descriptors.reduce_features` computes them untiled).

    Returns:
        ``{tap: (1, C, h, w)}``, or ``(1, C)`` / ``(1, C, C)`` descriptors.

    Raises:
        ValueError: a batch of more than one image, a bad ``tile`` or ``reduce``, a training-mode
            batch-norm extractor, or an image smaller than the extractor's minimum size.

    Example:
        >>> import warnings
        >>> from featx.backbones.vgg.features import VGGFeatures
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     vgg = VGGFeatures("vgg11", ["relu2_1"], weights=None)
        >>> x = torch.rand(1, 3, 70, 50)
        >>> tiled = tiled_features(vgg, x, tile=16)["relu2_1"]
        >>> bool(torch.allclose(tiled, vgg(x)["relu2_1"], rtol=1e-5, atol=1e-6))
        True
    """
    check_int("tile", tile)
    check_choice("reduce", reduce, TILE_DESCRIPTORS)
    _check_tiling_input(extractor, image)
    height, width = image.shape[2], image.shape[3]
    sizes = tap_sizes(extractor, height, width)
    outputs: dict[str, torch.Tensor] = {}
    for name, core, box in tile_cores(extractor, image, tile=tile):
        _accumulate(outputs, name, core, reduce, sizes[name], box)
    if reduce == "gap":
        return {name: total / (sizes[name][0] * sizes[name][1]) for name, total in outputs.items()}
    return outputs


def tile_cores(
    extractor: VGGFeatures, image: torch.Tensor, *, tile: int
) -> Iterator[tuple[str, torch.Tensor, tuple[int, int, int, int]]]:
    """The exact pieces of ``extractor(image)``, one tile at a time, for consumers that do not
    stitch in memory (:func:`tiled_features` stitches or reduces them; ``featx extract`` streams
    them into the feature file).

    Tiles are visited row by row; for each, every tap's core is yielded before the next tile is
    computed, so only one tile's activations are alive at a time. A tap with no output rows or
    columns in a tile (the last tile holds fewer image pixels than that tap's stride) yields
    nothing for it: every yielded core is non-empty and the cores of a tap tile its map exactly.

    Args:
        extractor: a :class:`~featx.backbones.vgg.features.VGGFeatures` in eval mode.
        image: ``(1, 3, H, W)`` in the extractor's input range.
        tile: core tile side in input pixels, a multiple of the deepest tap's stride.

    Yields:
        ``(tap, core, (top, bottom, left, right))``: ``core`` is ``(1, C, bottom - top, right - left)``,
        equal to ``extractor(image)[tap][:, :, top:bottom, left:right]`` (a view into the tile's output).

    Raises:
        ValueError: as :func:`tiled_features`.

    Example:
        >>> import warnings
        >>> from featx.backbones.vgg.features import VGGFeatures
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     vgg = VGGFeatures("vgg11", ["relu1_1"], weights=None)
        >>> [box for _, _, box in tile_cores(vgg, torch.rand(1, 3, 40, 24), tile=16)]
        [(0, 16, 0, 16), (0, 16, 16, 24), (16, 32, 0, 16), (16, 32, 16, 24), (32, 40, 0, 16), (32, 40, 16, 24)]
    """
    check_int("tile", tile)
    _check_tiling_input(extractor, image)
    geometry = tile_geometry(extractor.arch, extractor.taps[-1], pooling=extractor.pooling)
    height, width = image.shape[2], image.shape[3]
    sizes = tap_sizes(extractor, height, width)
    strides = {info.name: info.stride for info in extractor.feature_info}
    for y0, y1, ey0, ey1 in list(tile_spans(height, tile, geometry)):
        for x0, x1, ex0, ex1 in list(tile_spans(width, tile, geometry)):
            with torch.no_grad():
                feats = extractor(image[:, :, ey0:ey1, ex0:ex1])
            for name, feat in feats.items():
                s, (full_h, full_w) = strides[name], sizes[name]
                top, left = y0 // s, x0 // s
                bottom = full_h if y1 == height else y1 // s
                right = full_w if x1 == width else x1 // s
                if bottom <= top or right <= left:  # a last tile thinner than this tap's stride: no rows of it
                    continue
                core = feat[:, :, top - ey0 // s : bottom - ey0 // s, left - ex0 // s : right - ex0 // s]
                yield name, core, (top, bottom, left, right)
            del feats


def _check_tiling_input(extractor: VGGFeatures, image: torch.Tensor) -> None:
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[0] != 1:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise FeatxValueError(f"image must be one image of shape (1, 3, H, W), got {shape}")
    if extractor.training and any(isinstance(m, torch.nn.BatchNorm2d) for m in extractor.modules()):
        raise FeatxValueError("tiled extraction needs eval mode for batch norm: call extractor.eval() first")


def _accumulate(
    outputs: dict[str, torch.Tensor],
    name: str,
    core: torch.Tensor,
    reduce: str,
    full: tuple[int, int],
    box: tuple[int, int, int, int],
) -> None:
    """Add one tile's core of tap ``name`` to the stitched map or the running descriptor."""
    top, bottom, left, right = box
    if reduce == "none":
        if name not in outputs:
            outputs[name] = core.new_empty((1, core.shape[1], *full))
        outputs[name][:, :, top:bottom, left:right] = core
        return
    flat = core.float().flatten(2)
    if reduce == "gap":
        part = flat.sum(dim=2)
    elif reduce == "gmp":
        part = flat.amax(dim=2)
    else:  # the Gram matrix F F^T / (C H W) of the whole map, pre-scaled like gram_matrix
        with autocast_off(core.device):
            scaled = flat * (1.0 / math.sqrt(full[0] * full[1]))
            part = torch.bmm(scaled, scaled.transpose(1, 2)) / core.shape[1]
    if name not in outputs:
        outputs[name] = part
    elif reduce == "gmp":
        outputs[name] = torch.maximum(outputs[name], part)
    else:
        outputs[name] = outputs[name] + part
