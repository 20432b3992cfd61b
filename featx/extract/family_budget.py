"""``featx extract`` on backbones without a tile geometry (every family but VGG today): a memory
estimate from the catalog's tap table, and the refusal of images that would need tiles.

Exact tiling (:mod:`featx.extract.tiling`) needs the receptive field and alignment of every layer,
which :func:`featx.extract.tiling.tile_geometry` knows for VGG. For another family an image whose
single pass does not fit the memory budget cannot be tiled exactly, so it becomes that image's
error (its manifest record says why), and an explicit tile size is refused before any compute.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, Optional

from featx.backbones.catalog import available_taps
from featx.backbones.taps import TapInfo
from featx.errors import FeatxValueError
from featx.extract.budget import CONV_WORKSPACE
from featx.extract.plan import ImagePlan
from featx.extract.tiling import TileGeometry, tile_geometry

__all__ = [
    "check_untiled_options",
    "estimate_image_bytes",
    "estimate_stored_bytes",
    "geometry_of",
    "refuse_sizes",
    "untileable_reason",
]


def geometry_of(extractor: Any) -> Optional[TileGeometry]:
    """The tile geometry of ``extractor``'s deepest tap, or ``None`` when its family has none.

    Example:
        >>> import warnings
        >>> from featx.backbones.catalog import build_backbone
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     vgg = build_backbone("vgg19", "relu3_1", weights=None)
        ...     alex = build_backbone("alexnet", "relu2", weights=None)
        >>> geometry_of(vgg), geometry_of(alex)
        (TileGeometry(stride=4, radius=13, halo=16), None)
    """
    try:
        return tile_geometry(extractor.arch, extractor.taps[-1], pooling=getattr(extractor, "pooling", "max"))
    except ValueError:  # the layer tables of tile_geometry do not know this arch
        return None


def check_untiled_options(extractor: Any, tile: object, reduce: str, tap_dims: Mapping[str, int]) -> None:
    """Refuse, before any compute, settings an extractor without tile geometry cannot honour.

    Args:
        extractor: the run's extractor.
        tile: :attr:`~featx.extract.options.ExtractOptions.tile`.
        reduce: :attr:`~featx.extract.options.ExtractOptions.reduce`.
        tap_dims: ``{tap: ndim}`` of the extractor's outputs (4 for a map; DINOv2's ``.cls`` is 2).

    Raises:
        ValueError: an explicit tile size for a family without tile geometry, or a descriptor
            (``gap``, ``gmp``, ``gram``) asked of a tap that is no ``(B, C, H, W)`` map.
    """
    flat = [name for name, ndim in tap_dims.items() if ndim != 4]
    if flat and reduce != "none":
        raise FeatxValueError(
            f"reduce={reduce!r} needs (B, C, H, W) maps, but tap {', '.join(map(repr, flat))} of {extractor.arch} "
            "gives one vector per image; use reduce='none' (--reduce none), or drop the tap"
        )
    if isinstance(tile, int) and geometry_of(extractor) is None:
        raise FeatxValueError(
            f"tile={tile} (--tile {tile}): arch {extractor.arch!r} has no tile geometry, so its features cannot be "
            "computed exactly in tiles; use tile='auto' (images that do not fit the memory budget are then "
            "refused one by one) or tile='off', or raise max_memory"
        )


def estimate_image_bytes(extractor: Any, height: int, width: int, *, reduce: str, store_bytes: int = 4) -> int:
    """Bytes one image costs a run, for a family without tile geometry (an estimate).

    From the catalog's tap table up to the deepest tap (channels and stride of every layer): the
    decoded input twice (worker and batch), the returned maps, the largest layer output with
    :data:`~featx.extract.budget.CONV_WORKSPACE` times as much again in flight, and the stored
    result twice (tensors and their serialised copy). Memory that grows faster than the maps, such
    as a ViT's attention matrices (``heads x N^2`` for ``N`` tokens), is not counted: give such runs
    headroom in ``max_memory``.

    Example:
        >>> import warnings
        >>> from featx.backbones.catalog import build_backbone
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     alex = build_backbone("alexnet", "relu2", weights=None)
        >>> small, large = (estimate_image_bytes(alex, side, side, reduce="none") for side in (64, 128))
        >>> 3.5 < large / small <= 4.0  # it grows with the pixels
        True
    """
    deepest = extractor.feature_info[-1].index
    layers = [info for info in available_taps(extractor.arch) if info.index <= deepest]
    kept = sum(_values(info.channels, info.stride, height, width) for info in extractor.feature_info)
    largest = max(_values(info.channels, info.stride, height, width) for info in layers)
    forward = (3 * height * width + kept + (1 + CONV_WORKSPACE) * largest) * 4
    stored = estimate_stored_bytes(extractor, height, width, reduce=reduce, store_bytes=store_bytes)
    return 2 * 3 * height * width * 4 + forward + 2 * stored


def _values(channels: int, stride: int, height: int, width: int) -> int:
    """Values of a ``channels``-deep map at ``stride`` for a ``height x width`` input (rounded up)."""
    stride = max(1, stride)
    return channels * math.ceil(height / stride) * math.ceil(width / stride)


def estimate_stored_bytes(extractor: Any, height: int, width: int, *, reduce: str, store_bytes: int = 4) -> int:
    """Bytes of one image's stored result from the tap table: every tap's map (an upper bound for
    token taps), or its descriptor (``C`` values; ``C x C`` for ``gram``).

    Example:
        >>> import warnings
        >>> from featx.backbones.catalog import build_backbone
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     alex = build_backbone("alexnet", "relu2", weights=None)
        >>> estimate_stored_bytes(alex, 64, 64, reduce="gram") == 192 * 192 * 4
        True
    """
    infos: tuple[TapInfo, ...] = tuple(extractor.feature_info)
    if reduce == "none":
        return sum(_values(info.channels, info.stride, height, width) for info in infos) * store_bytes
    if reduce == "gram":
        return sum(info.channels**2 for info in infos) * store_bytes
    return sum(info.channels for info in infos) * store_bytes


def untileable_reason(arch: str, size: tuple[int, int], cost: int, budget: int) -> str:
    """The manifest error of an image that would need tiles on a family without tile geometry.

    Example:
        >>> untileable_reason("alexnet", (4000, 3000), 3 * 2**30, 2**30)[:60]
        'image of 4000x3000 needs about 3072 MiB for one pass, over t'
    """
    height, width = size
    return (
        f"image of {height}x{width} needs about {math.ceil(cost / 2**20)} MiB for one pass, over the memory budget "
        f"of {budget // 2**20} MiB, and arch {arch!r} has no tile geometry to extract it exactly in tiles; "
        "raise --max-memory (max_memory=) or downscale the image"
    )


def refuse_sizes(plans: Sequence[ImagePlan], refused: Mapping[tuple[int, int], str]) -> list[ImagePlan]:
    """``plans`` with every image still to compute whose size is in ``refused`` turned into an error.

    Example:
        >>> plans = [ImagePlan("todo", (8, 8)), ImagePlan("todo", (4, 4)), ImagePlan("done", (8, 8))]
        >>> [(p.state, p.reason) for p in refuse_sizes(plans, {(8, 8): "too big"})]
        [('error', 'too big'), ('todo', ''), ('done', '')]
    """
    out = []
    for plan in plans:
        if plan.state == "todo" and plan.size is not None and plan.size in refused:
            plan = replace(plan, state="error", size=None, reason=refused[plan.size])
        out.append(plan)
    return out
