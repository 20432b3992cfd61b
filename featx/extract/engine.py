"""The batch feature-extraction engine behind ``featx extract`` (plain Python, no click).

:func:`extract_features` turns folders of images into one safetensors feature file per image, mirroring
the input tree, plus ``manifest.jsonl`` and ``summary.json``. It is built for 10^5-image datasets:

- **Bad files never stop a run.** Decoding (by :mod:`featx.io.images`' rules) happens in DataLoader
  workers that return an error record instead of raising; each failure is reported and listed in
  the manifest.
- **Killed runs are safe.** Files are written to hidden temporary names and renamed atomically;
  a rerun (``resume=True``) skips images whose output metadata matches this run's (same source
  size and mtime, same configuration) and rewrites the rest byte-identically.
- **Reproducible batching.** Images are grouped into batches by their stored size, from the
  whole sorted file list, before anything is skipped or sharded, and a batch is always computed
  whole (see :mod:`featx.extract.plan`).
- **Scale out.** Under ``torchrun`` (``WORLD_SIZE > 1``) ranks plan disjoint slices of the list,
  share the plan (gloo), take every ``world``-th batch, write ``manifest.rank{r}.jsonl`` parts,
  and rank 0 merges them after a barrier (see :mod:`featx.extract.distributed`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch.utils.data import DataLoader

from featx.errors import ExtractionInterrupted, FeatxTypeError, FeatxValueError
from featx.extract.budget import stored_bytes
from featx.extract.decoding import (
    LOADER_TIMEOUT,
    PREFETCH_BATCHES,
    DecodeDataset,
    Receiver,
    collate_decoded,
    decode_isolated,
    is_worker_death,
    loader_timeout_error,
    to_input,
)
from featx.extract.descriptors import reduce_features
from featx.extract.distributed import DistContext
from featx.extract.family_budget import (
    estimate_stored_bytes,
    geometry_of,
    refuse_sizes,
)
from featx.extract.lock import OutputLock
from featx.extract.memory_plan import MemoryPlan, memory_plan
from featx.extract.options import ExtractOptions, PathLike
from featx.extract.outfolder import OutputSetup
from featx.extract.plan import (
    ImagePlan,
    RunContext,
    collect_sources,
    common_metadata,
    feature_path,
    make_batches,
    manifest_record,
    plan_all,
)
from featx.extract.streaming import compute_failure, stream_tiled
from featx.extract.summary import ExtractSummary, dry_run_summary, finish_run
from featx.extract.tiling import tiled_features
from featx.extract.writer import FeatureWriter
from featx.io.discovery import ImageSource, read_file_list
from featx.io.featfile import serialize_features

__all__ = ["RANDOM_WEIGHTS_SEED", "TORCH_DTYPES", "extract_features"]

TORCH_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
"""The torch dtype of each name in :data:`~featx.extract.options.DTYPES`."""

RANDOM_WEIGHTS_SEED = 0
"""Seed of random weights (``weights=None``), so every rank and rerun builds the same network."""

_NOT_COMPUTED = ("error", "ignored")


def _build_extractor(options: ExtractOptions) -> Any:
    """The extractor of any catalog arch (or of a preset); random weights come from a fixed seed so
    every rank and rerun agrees. Settings the family cannot honour are refused here, before compute."""
    from featx.backbones.family_options import build_with_options, default_taps
    from featx.extract.family_budget import check_untiled_options
    from featx.extract.options import DEFAULT_TAPS
    from featx.presets import get_preset

    taps: Union[str, Sequence[str], None]
    if options.preset is not None:
        preset = get_preset(options.preset)
        arch, taps = preset.arch, preset.taps
        family = {"pooling": preset.pooling if preset.pooling != "max" else None, **dict(preset.extractor_options)}
    else:
        arch, taps, family = options.arch, options.taps, {}
        if taps is None:  # DEFAULT_TAPS where the arch has those layers (every VGG), else the user names them
            taps = default_taps(arch, DEFAULT_TAPS)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_WEIGHTS_SEED)
        extractor = build_with_options(arch, taps, family, weights=options.weights)
    with torch.no_grad():  # which taps are (B, C, H, W) maps: one pass on the smallest input
        side = extractor.min_input_size
        probe = extractor.forward_features(extractor.normalize(torch.zeros(1, 3, side, side)))
    check_untiled_options(extractor, options.tile, options.reduce, {name: feat.ndim for name, feat in probe.items()})
    return extractor


def _resolve_device(device: str, local_rank: int) -> torch.device:
    if device == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise FeatxValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r} ({error})") from None
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise FeatxValueError(
                f"device {device!r} is not available: torch finds no CUDA device (no NVIDIA GPU or driver, "
                "or a CPU-only torch build); use --device cpu, or --device auto to take a GPU when there is one"
            )
        if resolved.index is not None and resolved.index >= count:
            raise FeatxValueError(f"device {device!r} is not available: this machine has {count} CUDA device(s)")
    elif resolved.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise FeatxValueError(
                f"device {device!r} is not available: torch finds no Apple MPS device (macOS with Apple "
                "silicon and an MPS-enabled torch build are needed); use --device cpu"
            )
    return resolved


def extract_features(
    inputs: Sequence[PathLike], output: PathLike, options: Optional[ExtractOptions] = None
) -> ExtractSummary:
    """Extract the features of every image under ``inputs`` into ``output``, with a backbone of
    any catalog family (``options.arch``: VGG, AlexNet, SqueezeNet, DINOv2, ...).

    Writes ``OUTPUT/KEY.safetensors`` per image (keys are paths relative to the inputs' common
    root; see :func:`featx.io.discovery.find_images`), ``OUTPUT/manifest.jsonl`` (one line per image,
    sorted by path: ``path``, ``source``, ``status`` ``ok``/``skipped``/``error``, ``output`` and
    ``shapes``, or ``error``) and ``OUTPUT/summary.json``. Feature files hold one tensor per tap
    (in ``options.dtype``) and string metadata: ``format``, ``featx_version``, ``torch_version``,
    ``arch``, ``taps``, ``pooling`` (``n/a`` for families without one), ``weights_id``,
    ``weights_sha256``, ``weights_verified`` (``true``, ``false`` or ``none``), ``input_range``,
    ``reduce``, ``dtype``, ``source_path``, ``source_key``, ``source_bytes``,
    ``source_mtime_ns``, ``source_height``, ``source_width`` (the size stored in the file, before
    EXIF orientation). No timestamps: equal inputs and options give byte-identical files.

    Images are decoded to ``[0, 1]`` and the extractor uses ``input_range=(0, 1)``.

    Args:
        inputs: folders and/or image files (may be empty with ``options.files_from``).
        output: output folder (created; checked writable before any work).
        options: the run's settings (:class:`~featx.extract.options.ExtractOptions`, checked when
            built); ``None`` uses the defaults.

    Returns:
        An :class:`~featx.extract.summary.ExtractSummary` (global counts on rank 0, and on every
        rank after the merge).

    Raises:
        FileNotFoundError: an input or ``files_from`` does not exist.
        ValueError: no images found, unknown arch/tap/preset, bad device, no taps named for a
            family without default taps, an explicit ``tile`` size for a family without tile
            geometry, or a descriptor ``reduce`` of a tap that is no map (DINOv2's ``.cls``).
        TypeError: ``options`` is not an ``ExtractOptions``.
        OutputNotWritableError: ``output`` cannot be created or written (also a full disk when
            the ownership record is written: nothing else was written).
        featx.errors.OutputInUseError: another run holds ``output``'s lock (``OUTPUT/featx.lock``).
        featx.errors.OutputLockError: ``output``'s filesystem cannot lock.
        featx.errors.ExtractionError: the lock was lost to another run, or the writer failed.
        featx.errors.OutputWriteError: the run stopped because a manifest or summary could not
            be written; earlier outputs and the previous manifest are kept.
        featx.errors.ExtractionInterrupted: Ctrl-C (``SIGINT``) after the setup; the summary of
            what was done is written first (single-process runs). A refused setup (any error or
            Ctrl-C before work starts) leaves ``output`` as it was.
        featx.errors.OutputOwnedError: ``output`` was made from other inputs
            (``OUTPUT/featx-owner.json``) and ``options.add_inputs`` is false.
        featx.errors.WeightsNotFoundError: the requested weights are not on disk.

    Example:
        >>> import tempfile, os, warnings
        >>> from PIL import Image
        >>> from featx.io.featfile import load_features
        >>> options = ExtractOptions(taps="relu1_1", weights=None, num_workers=0)
        >>> with tempfile.TemporaryDirectory() as d, warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")  # random weights warn
        ...     Image.new("RGB", (24, 16)).save(os.path.join(d, "a.png"))
        ...     summary = extract_features([d], os.path.join(d, "feats"), options)
        ...     tensors, meta = load_features(os.path.join(d, "feats", "a.png.safetensors"))
        >>> summary.ok, tuple(tensors["relu1_1"].shape), meta["taps"]
        (1, (64, 16, 24), 'relu1_1')
    """
    start = time.perf_counter()
    wall_start = time.time()
    if options is None:
        options = ExtractOptions()
    elif not isinstance(options, ExtractOptions):
        raise FeatxTypeError(f"options must be an ExtractOptions or None, got {type(options).__name__}")
    output = Path(output).absolute()
    dist = DistContext()
    lock = OutputLock(output)
    setup = OutputSetup(output, lock, dist)
    try:
        sources, root = collect_sources(
            inputs, options.files_from, options.recursive,
            read_list=lambda path: dist.on_rank0(lambda: read_file_list(path)),  # stdin reaches one rank
        )  # fmt: skip
        torch_device = _resolve_device(options.device, dist.local_rank)
        extractor = _build_extractor(options).to(torch_device)
        if not options.dry_run:
            setup.prepare()
        ctx = RunContext(
            output=output,
            resume=options.resume,
            max_pixels=options.max_pixels,
            taps=extractor.taps,
            min_size=extractor.min_input_size,
            common=common_metadata(extractor, options.reduce, options.dtype),
            alpha=options.alpha,
        )
        config = {**ctx.common, "alpha": options.alpha, "max_pixels": str(options.max_pixels or "default")}
        prefix = setup.claim(root, config, add_inputs=options.add_inputs)
        if prefix:
            sources = [ImageSource(source.path, f"{prefix}/{source.key}") for source in sources]
        bar_enabled = options.progress and dist.rank == 0
        plans = plan_all(sources, ctx, dist, bar_enabled)
        if options.dry_run:  # what the real run would tile or refuse, and the disk its files would take
            memory = memory_plan(plans, extractor, options, torch_device)
            plans, tiles = refuse_sizes(plans, memory.refused), memory.tiles
            store = TORCH_DTYPES[options.dtype].itemsize
            stored = estimate_stored_bytes if geometry_of(extractor) is None else stored_bytes
            disk = sum(
                stored(extractor, *plan.size, reduce=options.reduce, store_bytes=store)
                for plan in plans
                if plan.state == "todo" and plan.size is not None
            )
            return dry_run_summary(
                sources, plans, output, str(extractor.weights_id), extractor.weights_verified, dist.world, start,
                tiles=tiles, disk_bytes=disk,
            )  # fmt: skip
        # rank 0 decides for all ranks: every rank must build the same batch list
        memory = dist.broadcast(memory_plan(plans, extractor, options, torch_device) if dist.rank == 0 else None)
        plans = refuse_sizes(plans, memory.refused)  # each such image is its own error, on every rank alike
        batches = make_batches([plan.size for plan in plans], options.batch_size, limits=memory.per_batch)
        mine = batches[dist.rank :: dist.world]
        setup.commit(root, config, add_inputs=options.add_inputs)
        planned_errors = [i for i in range(dist.rank, len(plans), dist.world) if plans[i].state in _NOT_COMPUTED]
        part = output / f"manifest.rank{dist.rank}.jsonl"
        total = sum(map(len, mine)) + len(planned_errors)
        bar = _progress_bar(total, bar_enabled, dist)
        writer = FeatureWriter(
            part,
            capacity=memory.queue_capacity,
            on_record=options.on_record,
            bar=bar,
            fsync=options.fsync,
            direct_io=options.direct_io,
            output=output,
            watch=lock.verify,
        )
        interrupted = False
        try:
            for index in planned_errors:
                state, reason = plans[index].state, plans[index].reason
                field = "error" if state == "error" else "reason"
                kept = {} if plans[index].kept is None else {"kept": plans[index].kept}
                writer.put(manifest_record(sources[index], state, **{field: reason}, **kept))
            _compute(sources, plans, mine, ctx, extractor, torch_device, options, writer, memory)
        except KeyboardInterrupt:
            if dist.world > 1:  # ranks cannot meet at a barrier now: each stops, files kept
                raise
            interrupted = True  # Ctrl-C: finish what is queued, then write the summary
        finally:
            writer.close()
            if bar is not None:
                bar.close()
        dist.barrier()  # every rank's files and manifest part are complete
        result = None
        if dist.rank == 0:
            lock.verify()  # never publish a manifest into a folder another run has taken
            weights_id = str(extractor.weights_id)
            result = finish_run(
                output, dist.world, len(sources), ctx.common, weights_id, start, wall_start, prefix=prefix,
                interrupted_sources=sources if interrupted else None,
            )  # fmt: skip
        summary: ExtractSummary = dist.broadcast(result)
        if interrupted:
            raise ExtractionInterrupted(f"extraction into {output} interrupted", summary=summary)
        return summary
    except BaseException:
        setup.undo()  # a refused setup leaves the output folder as it was; a started run keeps its work
        raise
    finally:
        lock.release()
        dist.close()


def _progress_bar(total: int, enabled: bool, dist: DistContext) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    desc = "extract" if dist.world == 1 else f"extract (rank 0 of {dist.world})"
    return tqdm(total=total, desc=desc, unit="img", dynamic_ncols=True, smoothing=0.1)


def _compute(
    sources: list[ImageSource],
    plans: list[ImagePlan],
    batches: list[list[int]],
    ctx: RunContext,
    extractor: Any,
    device: torch.device,
    options: ExtractOptions,
    writer: FeatureWriter,
    memory: MemoryPlan,
) -> None:
    """Decode (in workers), forward, reduce, and queue writes for this rank's batches; images the
    memory plan tiles are extracted in exact tiles."""
    recorded: set[int] = set()

    def put(index: int, record: Any, *args: Any) -> None:
        if index not in recorded:  # a batch retried after a worker died is never recorded twice
            writer.put(record, *args)
            recorded.add(index)

    work = []
    for batch in batches:  # every up-to-date image is counted before any work starts
        for i in batch:
            if plans[i].state == "done":
                put(i, manifest_record(sources[i], "skipped", shapes=plans[i].shapes))
        if any(plans[i].state != "done" for i in batch):  # computed whole: the same batch, the same bytes
            work.append(batch)
    if not work:
        return
    planned = [None if plan.size is None else (plan.stat, plan.size) for plan in plans]
    dataset = DecodeDataset([source.path for source in sources], options.alpha, ctx.max_pixels, planned)
    store = TORCH_DTYPES[options.dtype]
    autocast = options.dtype != "float32"
    layout = _memory_format(device, store)
    extractor = extractor.to(memory_format=layout)

    def handle(decoded: dict[str, Any]) -> None:
        for index, reason in decoded["errors"]:
            put(index, manifest_record(sources[index], "error", error=reason))
        while decoded["stacks"]:  # each decoded batch is let go once it is the extractor's input
            indices, images = decoded["stacks"].pop(0)
            with torch.inference_mode(), torch.autocast(device.type, dtype=store, enabled=autocast):
                batch = to_input(images, device, layout)
                del images
                tile = memory.tiles.get((batch.shape[2], batch.shape[3])) if len(indices) == 1 else None
                if tile is not None and options.reduce == "none":  # maps streamed into the file, tile by tile
                    index = indices[0]
                    if index not in recorded:
                        source, plan = sources[index], plans[index]
                        path, metadata = feature_path(ctx.output, source.key), ctx.metadata(source, plan.stat, plan.size)
                        record = stream_tiled(
                            extractor, batch, tile=tile, bands=(batch.shape[2], batch.shape[3]) in memory.bands,
                            path=path, metadata=metadata, store=store, fsync=options.fsync, source=source,
                        )  # fmt: skip
                        put(index, {**record, "tile": tile} if record["status"] == "ok" else record)
                    continue
                if tile is not None:  # too large for one pass within the budget: exact tiles
                    try:
                        feats = tiled_features(extractor, batch, tile=tile, reduce=options.reduce)
                    except Exception as error:  # this image's failure, never the run's
                        source = sources[indices[0]]
                        path = feature_path(ctx.output, source.key)
                        put(indices[0], compute_failure(manifest_record(source, "ok"), path, error))
                        continue
                else:
                    feats = reduce_features(extractor(batch), options.reduce)
                if device.type != "cpu":  # transpose on the accelerator, copy plain C x H x W maps
                    feats = {name: feat.to(store).contiguous() for name, feat in feats.items()}
            feats = {name: feat.to("cpu", store) for name, feat in feats.items()}
            shapes = {name: list(feat.shape[1:]) for name, feat in feats.items()}
            for row, index in enumerate(indices):
                source, plan = sources[index], plans[index]
                if index in recorded:
                    continue
                if plan.state == "done":
                    put(index, manifest_record(source, "skipped", shapes=plan.shapes))
                    continue
                # laid out here (both cores, between forwards); the writer thread only does I/O
                metadata = ctx.metadata(source, plan.stat, plan.size)
                data = serialize_features({name: feat[row] for name, feat in feats.items()}, metadata)
                record = manifest_record(source, "ok", shapes=shapes, **({} if tile is None else {"tile": tile}))
                put(index, record, feature_path(ctx.output, source.key), data)

    pending, receive = work, Receiver()
    while pending:
        loader = DataLoader(
            dataset,
            batch_sampler=pending,
            num_workers=memory.workers,
            collate_fn=collate_decoded,
            pin_memory=device.type == "cuda",
            prefetch_factor=PREFETCH_BATCHES if memory.workers else None,
            timeout=LOADER_TIMEOUT if memory.workers else 0,
        )
        finished = 0
        try:
            for decoded in loader:
                handle(receive(decoded))
                finished += 1
            return
        except RuntimeError as error:
            stalled = loader_timeout_error(error, memory.workers)
            if stalled is not None:  # never wait forever for workers that cannot deliver
                raise stalled from None
            if memory.workers == 0 or not is_worker_death(error):
                raise
        # a decoder process died: the batches in flight are decoded again, each image in a child
        # of its own (the one that dies is reported), then the rest goes on with fresh workers
        in_flight = pending[finished : finished + 2 * memory.workers + 1]
        for batch in in_flight:
            handle(receive(collate_decoded([decode_isolated(dataset, index) for index in batch if index not in recorded])))
        pending = pending[finished + len(in_flight) :]


def _memory_format(device: torch.device, dtype: torch.dtype) -> torch.memory_format:
    """``channels_last`` where it speeds VGG up: on CPU (oneDNN skips its layout reorders; 1.3x
    for ``ttsr_lte`` at 256x256, see ``docs/cli.md``) and for 16-bit CUDA (tensor
    cores). fp32 CUDA stays ``contiguous_format``. Outputs are stored ``C x H x W`` either way."""
    if device.type == "cpu" or dtype in (torch.float16, torch.bfloat16):
        return torch.channels_last
    return torch.contiguous_format
