"""How ``featx extract`` spends its memory budget: images per batch, tiles, streamed bands, the
writer's queue and the decoding workers for every image size of a run (see :mod:`featx.extract.budget`
for the model, :mod:`featx.extract.family_budget` for families without tile geometry)."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from featx.errors import FeatxValueError, FeatxWarning
from featx.extract.budget import (
    DECODE_BYTES_PER_PIXEL,
    MIN_WORK_BYTES,
    WORKER_BYTES,
    SizeLimits,
    current_rss,
    default_budget,
    images_per_batch,
    parse_size,
    size_limits,
)
from featx.extract.decoding import PREFETCH_BATCHES, workers_for_shared_memory
from featx.extract.family_budget import estimate_image_bytes, estimate_stored_bytes, geometry_of, untileable_reason
from featx.extract.options import ExtractOptions
from featx.extract.plan import ImagePlan

__all__ = ["MemoryPlan", "memory_plan"]


@dataclass(frozen=True)
class MemoryPlan:
    """What the budget allows: images per batch and the tile side for each image size, the sizes
    whose streamed maps (``reduce="none"``) are written in bands of full-width rows, and how many
    serialised files the writer may queue."""

    per_batch: dict[tuple[int, int], int]
    tiles: dict[tuple[int, int], int]
    bands: frozenset[tuple[int, int]]
    queue_capacity: int
    workers: int
    refused: dict[tuple[int, int], str]  # sizes that need tiles no tile geometry gives: their images' errors


def memory_plan(plans: list[ImagePlan], extractor: Any, options: ExtractOptions, device: torch.device) -> MemoryPlan:
    """Batch limits and tiles for ``options.max_memory`` (see :mod:`featx.extract.budget`). Under
    torchrun the budget is the node's, shared by its ``LOCAL_WORLD_SIZE`` ranks."""
    budget = parse_size(options.max_memory) if options.max_memory is not None else default_budget(device.type)
    budget //= max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    workers = options.num_workers
    own = current_rss()
    if own >= budget:
        raise FeatxValueError(
            f"max_memory {budget // 2**20} MiB is below what the process already uses ({own // 2**20} MiB); raise it"
        )
    sizes = sorted({plan.size for plan in plans if plan.size is not None})
    # each worker holds its interpreter and, while it decodes, the largest image's decoding peak
    # beside the main process's work (without workers, the main process decodes between batches)
    decoding = DECODE_BYTES_PER_PIXEL * max((h * w for h, w in sizes), default=0)
    fit = min(workers, max(0, (budget - own - MIN_WORK_BYTES) // (WORKER_BYTES + decoding)))
    if fit < workers:
        warnings.warn(
            f"max_memory {budget // 2**20} MiB leaves room for {fit} of the {workers} decoding workers; "
            f"decoding runs in {fit} worker process(es)" + (" (the main process)" if fit == 0 else ""),
            FeatxWarning,
            stacklevel=3,
        )
        workers = fit
    store = getattr(torch, options.dtype).itemsize  # bytes of one stored value
    untiled = geometry_of(extractor) is None  # a family without tile geometry: estimate, and refuse what needs tiles
    while True:  # fewer workers when the images would not fit beside them
        work = budget - own - workers * (WORKER_BYTES + decoding)
        try:
            limits, refused = _size_limits(extractor, sizes, max(1, work), options, store, untiled)
            # the batches the workers hold ready wait in shared memory (uint8, 3 bytes a pixel) beside the work
            waiting = workers * PREFETCH_BATCHES * max((n * 3 * h * w for (h, w), n in limits.per_batch.items()), default=0)
            if waiting:
                limits, refused = _size_limits(extractor, sizes, max(1, work - waiting), options, store, untiled)
            break
        except FeatxValueError:
            if workers == 0:
                raise
            workers -= 1
            warnings.warn(f"max_memory {budget // 2**20} MiB: decoding in {workers} worker process(es), so that the "
                          "largest image fits beside them", FeatxWarning, stacklevel=3)  # fmt: skip
    per_batch, tiles, bands = limits.per_batch, limits.tiles, limits.bands
    # the writer's queue of serialised files may take a quarter of the budget
    capacity = max(1, min(max(2 * options.batch_size, 4), work // 4 // limits.largest_stored))
    # decoded batches pass from the workers in shared memory (/dev/shm): too small, decode here
    workers = workers_for_shared_memory(workers, max((n * 3 * h * w for (h, w), n in per_batch.items()), default=0))
    return MemoryPlan(per_batch, tiles, bands, capacity, workers, refused)


def _size_limits(
    extractor: Any, sizes: list[tuple[int, int]], work: int, options: ExtractOptions, store: int, untiled: bool
) -> tuple[SizeLimits, dict[tuple[int, int], str]]:
    """:func:`~featx.extract.budget.size_limits`, or for a family without tile geometry the estimated
    limits and the sizes it refuses (they would need tiles): ``(limits, {size: reason})``."""
    if not untiled:
        return size_limits(extractor, sizes, work, options=options, store_bytes=store), {}
    per_batch: dict[tuple[int, int], int] = {}
    refused: dict[tuple[int, int], str] = {}
    largest = 1
    for height, width in sizes:
        cost = estimate_image_bytes(extractor, height, width, reduce=options.reduce, store_bytes=store)
        per_batch[(height, width)] = images_per_batch(cost, work, options.batch_size)
        if cost > work and options.tile != "off":
            refused[(height, width)] = refused[(width, height)] = untileable_reason(extractor.arch, (height, width), cost, work)
        largest = max(largest, estimate_stored_bytes(extractor, height, width, reduce=options.reduce, store_bytes=store))
    return SizeLimits(per_batch, {}, frozenset(), largest), refused
