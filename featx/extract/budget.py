"""The memory budget of an extraction run: how many bytes an image costs, how many images fit in
a batch, and which images must be tiled (:mod:`featx.extract.tiling`) to fit at all.

The estimate models the forward pass under ``torch.inference_mode()``: at each layer the input
and the output activation are alive, plus every tapped map computed so far (they are returned),
then the float32 descriptors or the stored maps and their serialised copy in the write buffer.
``benchmarks/bench_extract.py --memory`` compares it with the measured peak.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from featx._checks import check_int
from featx.backbones.vgg.layers import layer_specs
from featx.errors import FeatxValueError

if TYPE_CHECKING:
    from featx.backbones.vgg.features import VGGFeatures

__all__ = [
    "CONV_WORKSPACE",
    "DECODE_BYTES_PER_PIXEL",
    "SizeLimits",
    "DEFAULT_MEMORY_SHARE",
    "MIN_WORK_BYTES",
    "TILE_OVERHEAD",
    "WORKER_BYTES",
    "available_memory",
    "current_rss",
    "choose_tile",
    "default_budget",
    "forward_bytes",
    "image_bytes",
    "images_per_batch",
    "parse_size",
    "size_limits",
    "stored_bytes",
    "streamed_bytes",
]

DEFAULT_MEMORY_SHARE = 0.5
"""Share of the memory available at start (``MemAvailable``, or free CUDA memory) a run budgets
for itself when no ``max_memory`` is given."""

CONV_WORKSPACE = 2
"""A convolution allocates its output and, transiently, about as much again (oneDNN's layout
reorder for large maps): measured on vgg19 to relu3_1 at 2040x1356 (2.0 GiB added, against
1.5 GiB of tensors), so the model counts each convolution's output twice while it runs."""

WORKER_BYTES = 200 * 2**20
"""What one decoding worker process adds to the run's memory (PSS: its interpreter and imports;
measured 0.18-0.2 GiB each on Linux), on top of the decoded images it prefetches (counted per
image); the budget of the command's own process is what remains after its resident memory and
its workers."""

DECODE_BYTES_PER_PIXEL = 32
"""Peak bytes per pixel of decoding one image (:func:`featx.io.images.load_image`: the file's
buffers, the uint8 pixels and the float32 conversions; measured 31.3 for a 4000x3000 PNG), held by
each decoding worker, or by the command's own process without workers, on top of the budget's
other terms. Workers pass their images on as uint8 (:func:`featx.extract.decoding.collate_decoded`)."""

MIN_WORK_BYTES = 256 * 2**20
"""The least budget the command's own process keeps for its work; workers that would leave less
are not started (decoding then runs in fewer processes, with a warning)."""

TILE_OVERHEAD = 2.0
"""Measured factor between the peak added by a tiled pass and :func:`forward_bytes` of its tile
(allocator caching and the per-tile copies; 2040x1356, vgg19 to relu3_1, 256 to 512 px tiles:
1.9x to 2.1x on top of ~100 MiB), applied when choosing a tile."""

_UNITS = {"": 1, "B": 1, "K": 1000, "KB": 1000, "M": 1000**2, "MB": 1000**2, "G": 1000**3, "GB": 1000**3,
          "KIB": 1024, "MIB": 1024**2, "GIB": 1024**3, "TIB": 1024**4, "T": 1000**4, "TB": 1000**4}  # fmt: skip


def parse_size(size: object) -> int:
    """Bytes from ``"4GiB"``, ``"512MiB"``, ``"3GB"``, ``"1.5G"`` (decimal) or an int of bytes.

    Raises:
        ValueError: an unknown unit or a size below 1 MiB.

    Example:
        >>> parse_size("4GiB"), parse_size("1.5G"), parse_size(2**30)
        (4294967296, 1500000000, 1073741824)
    """
    if isinstance(size, int) and not isinstance(size, bool):
        value = size
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(size))
        unit = match.group(2).upper() if match else None
        if match is None or unit not in _UNITS:
            raise FeatxValueError(f"a memory size such as '4GiB', '512MiB' or '3GB' was expected, got {size!r}")
        value = int(float(match.group(1)) * _UNITS[unit])
    if value < 2**20:
        raise FeatxValueError(f"a memory budget must be at least 1 MiB, got {size!r} ({value} bytes)")
    return value


def available_memory() -> int:
    """Bytes of memory available to new allocations (Linux ``MemAvailable``; else free pages)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def current_rss() -> int:
    """Resident bytes of this process now (0 where ``/proc`` is missing)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def default_budget(device_type: str) -> int:
    """:data:`DEFAULT_MEMORY_SHARE` of the free CUDA memory (``device_type="cuda"``) or of
    :func:`available_memory`."""
    if device_type == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info()
        return int(free * DEFAULT_MEMORY_SHARE)
    return int(available_memory() * DEFAULT_MEMORY_SHARE)


def _pooled(size: int, pooling: str) -> int:
    from featx.extract.tiling import pooled_size

    return pooled_size(size, pooling)


def forward_bytes(extractor: VGGFeatures, height: int, width: int, *, element_bytes: int = 4) -> int:
    """Peak activation bytes of one image's forward pass: the tapped maps computed so far (they are
    returned, so they stay alive), the current activation when it is no tap, and each layer's new
    output (none for an in-place ReLU or batch norm, which write over their input; a convolution's
    counts :data:`CONV_WORKSPACE` times)."""
    taps = set(extractor.taps)
    tapped_indices = {info.index for info in extractor.feature_info}
    h, w = height, width
    kept, live = 0, 3 * h * w * element_bytes
    peak = live
    for spec in layer_specs(extractor.arch, pooling=extractor.pooling)[: extractor.feature_info[-1].index + 1]:
        if spec.kind == "pool":
            h, w = _pooled(h, extractor.pooling), _pooled(w, extractor.pooling)
        out = spec.out_channels * h * w * element_bytes
        in_place = spec.kind in ("relu", "bn") and spec.index - 1 not in tapped_indices
        new = 0 if in_place else out * (CONV_WORKSPACE if spec.kind == "conv" else 1)
        peak = max(peak, kept + live + new)
        if spec.name in taps:  # returned: alive to the end
            kept, live = kept + out, 0
        else:
            live = out
    return peak


def stored_bytes(extractor: VGGFeatures, height: int, width: int, *, reduce: str, store_bytes: int = 4) -> int:
    """Bytes of one image's feature file: the maps (``store_bytes`` per value) or the descriptors."""
    from featx.extract.tiling import tap_sizes

    channels = {info.name: info.channels for info in extractor.feature_info}
    if reduce == "none":
        sizes = tap_sizes(extractor, height, width)
        return sum(channels[n] * h * w for n, (h, w) in sizes.items()) * store_bytes
    if reduce == "gram":
        return sum(c * c for c in channels.values()) * store_bytes
    return sum(channels.values()) * store_bytes


def image_bytes(
    extractor: VGGFeatures, height: int, width: int, *, reduce: str, element_bytes: int = 4, store_bytes: int = 4
) -> int:
    """Bytes one image costs a run: the decoded input (twice: worker and batch), the forward pass,
    and what is stored, twice (the tensors and their serialised copy in the write buffer)."""
    decoded = 2 * 3 * height * width * 4
    stored = stored_bytes(extractor, height, width, reduce=reduce, store_bytes=store_bytes)
    return decoded + forward_bytes(extractor, height, width, element_bytes=element_bytes) + 2 * stored


def images_per_batch(per_image: int, budget: int, batch_size: int) -> int:
    """How many images of ``per_image`` bytes a batch may hold: ``batch_size`` at most, at least 1.

    Example:
        >>> images_per_batch(300, 1000, 8), images_per_batch(3000, 1000, 8)
        (3, 1)
    """
    check_int("batch_size", batch_size)
    return max(1, min(batch_size, budget // max(per_image, 1)))


def choose_tile(
    extractor: VGGFeatures, height: int, width: int, budget: int, *, reduce: str, store_bytes: int = 4
) -> Optional[int]:
    """``None`` when one untiled pass fits ``budget``; else the largest tile side (a multiple of the
    deepest tap's stride) whose extended tile fits next to what must stay in memory.

    With a descriptor (``gap``, ``gmp``, ``gram``) that is the decoded image and the descriptors.
    With ``reduce="none"`` the tiles are streamed into the feature file as they are computed
    (:class:`featx.io.featstream.FeatureFileStream`), so only the decoded image and one tile's maps
    stay: the stored maps may be far larger than the budget.

    Raises:
        ValueError: not even the smallest tile fits (the message gives the budget that would).

    Example:
        >>> import warnings
        >>> from featx.backbones.vgg.features import VGGFeatures
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     vgg = VGGFeatures("vgg19", "ttsr_lte", weights=None)
        >>> choose_tile(vgg, 256, 256, 2**30, reduce="none") is None  # fits untiled
        True
        >>> choose_tile(vgg, 10000, 10000, 2**30 + 2**32, reduce="none")  # 100 MP: 42 GiB of maps
        624
    """
    whole = image_bytes(extractor, height, width, reduce=reduce, store_bytes=store_bytes)
    if whole <= budget:
        return None
    from featx.extract.tiling import tile_geometry

    geometry = tile_geometry(extractor.arch, extractor.taps[-1], pooling=extractor.pooling)
    streamed = reduce == "none"
    kept = 2 * 3 * height * width * 4 if streamed else whole - forward_bytes(extractor, height, width)

    def cost(tile: int) -> int:
        if streamed:
            return streamed_bytes(extractor, height, width, tile, bands=False, store_bytes=store_bytes)
        side = tile + 2 * geometry.halo
        return kept + int(TILE_OVERHEAD * forward_bytes(extractor, min(side, height), min(side, width)))

    tile = (min(height, width) // geometry.stride) * geometry.stride
    while tile >= geometry.stride:
        if cost(tile) <= budget:
            return tile
        tile = (tile // 2 // geometry.stride) * geometry.stride
    smallest = cost(geometry.stride)
    what = "its decoded pixels" if streamed else "its decoded pixels and stored descriptors"
    raise FeatxValueError(
        f"an image of {height}x{width} needs at least {math.ceil(smallest / 2**20)} MiB with the smallest tile "
        f"({what} alone take {math.ceil(kept / 2**20)} MiB); the budget is {budget // 2**20} MiB: raise max_memory"
    )


def streamed_bytes(extractor: VGGFeatures, height: int, width: int, tile: int, *, bands: bool, store_bytes: int = 4) -> int:
    """What an image costs when its maps are streamed into the file in tiles of ``tile`` pixels
    (``reduce="none"``, :mod:`featx.extract.streaming`): the decoded image, one extended tile's
    pass, and one tile's maps, or with ``bands`` a band of full-width rows of maps (written with
    one call per channel instead of one per channel and row).

    Example:
        >>> import warnings
        >>> from featx.backbones.vgg.features import VGGFeatures
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     vgg = VGGFeatures("vgg19", ["relu1_1"], weights=None)
        >>> rows, tile = streamed_bytes(vgg, 400, 4000, 100, bands=True), streamed_bytes(vgg, 400, 4000, 100, bands=False)
        >>> rows - tile == 64 * 102 * (4000 - 102) * 4  # the band's maps beyond one tile's (102 px with its halo)
        True
    """
    from featx.extract.tiling import tile_geometry

    halo = tile_geometry(extractor.arch, extractor.taps[-1], pooling=extractor.pooling).halo
    side_h, side_w = min(tile + 2 * halo, height), min(tile + 2 * halo, width)
    maps = stored_bytes(extractor, side_h, width if bands else side_w, reduce="none", store_bytes=store_bytes)
    forward = int(TILE_OVERHEAD * forward_bytes(extractor, side_h, side_w))
    return 2 * 3 * height * width * 4 + maps + forward


@dataclass(frozen=True)
class SizeLimits:
    """What a work budget allows per stored image size: images per batch, the tile side of the
    sizes that must be tiled (keyed by both orientations: EXIF may swap the decoded sides), the
    sizes whose streamed maps are written in full-width bands, and the largest file that waits in
    the writer's queue."""

    per_batch: dict[tuple[int, int], int]
    tiles: dict[tuple[int, int], int]
    bands: frozenset[tuple[int, int]]
    largest_stored: int


def size_limits(
    extractor: VGGFeatures, sizes: list[tuple[int, int]], work: int, *, options: Any, store_bytes: int = 4
) -> SizeLimits:
    """Batch limits and tiles of ``sizes`` (stored ``(H, W)``) in ``work`` bytes, for the ``reduce``,
    ``batch_size`` and ``tile`` (``"auto"``, ``"off"`` or a side) of ``options``
    (:class:`featx.extract.options.ExtractOptions`).

    Raises:
        ValueError: an image that not even the smallest tile fits (see :func:`choose_tile`).
    """
    from featx.extract.tiling import tile_geometry

    reduce = options.reduce
    per_batch, tiles, bands, largest = {}, {}, set(), 1
    for size in sizes:
        height, width = size
        cost = image_bytes(extractor, height, width, reduce=reduce, store_bytes=store_bytes)
        per_batch[size] = images_per_batch(cost, work, options.batch_size)
        if options.tile == "auto":
            tile = choose_tile(extractor, height, width, work, reduce=reduce, store_bytes=store_bytes)
        elif options.tile == "off":
            tile = None
        else:  # an explicit side, rounded down to a multiple of the deepest tap's stride
            stride = tile_geometry(extractor.arch, extractor.taps[-1], pooling=extractor.pooling).stride
            side = max(stride, int(options.tile) // stride * stride)
            tile = side if max(height, width) > int(options.tile) else None
        if tile is not None:
            tiles[size] = tiles[(width, height)] = tile
            per_batch[size] = 1
            for h, w in (size, (width, height)):
                if reduce == "none" and streamed_bytes(extractor, h, w, tile, bands=True, store_bytes=store_bytes) <= work:
                    bands.add((h, w))
        if tile is None or reduce != "none":  # streamed maps never wait in the writer's queue
            largest = max(largest, stored_bytes(extractor, height, width, reduce=reduce, store_bytes=store_bytes))
    return SizeLimits(per_batch, tiles, frozenset(bands), largest)
