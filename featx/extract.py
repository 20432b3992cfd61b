"""The batch feature-extraction engine behind ``featx extract`` (plain Python, no click).

:func:`extract_features` turns folders of images into one safetensors feature file per image, mirroring
the input tree, plus ``manifest.jsonl`` and ``summary.json``. It is built for 10^5-image datasets:

- **Bad files never stop a run.** Decoding (by :mod:`featx.io`'s rules) happens in DataLoader
  workers that return an error record instead of raising; each failure is reported and listed in
  the manifest.
- **Killed runs are safe.** Files are written to hidden temporary names and renamed atomically;
  a rerun (``resume=True``) skips images whose output metadata matches this run's (same source
  size and mtime, same configuration) and rewrites the rest byte-identically.
- **Reproducible batching.** Images are grouped into batches by their stored size, from the
  whole sorted file list, before anything is skipped or sharded, and a batch is always computed
  whole. So every image is always computed in the same batch, and resumed, sharded and
  uninterrupted runs give byte-identical files (convolution results can depend on the batch).
- **Scale out.** Under ``torchrun`` (``WORLD_SIZE > 1``) ranks plan disjoint slices of the list,
  share the plan (gloo), take every ``world``-th batch, write ``manifest.rank{r}.jsonl`` parts,
  and rank 0 merges them after a barrier.
"""

from __future__ import annotations

import datetime
import io as _stdio
import json
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch.utils.data import DataLoader, Dataset

from featx._checks import check_choice
from featx.errors import ImageDecodeError, OutputNotWritableError
from featx.io import (
    ALPHA_MODES,
    FEATURE_SUFFIX,
    IMAGE_EXTENSIONS,
    ImageSource,
    find_images,
    load_image,
    probe_image,
    read_file_list,
    serialize_features,
    write_atomic,
    write_atomic_buffer,
)

__all__ = [
    "DEFAULT_TAPS",
    "DTYPES",
    "FORMAT",
    "REDUCTIONS",
    "SAMPLE_IMAGES",
    "ExtractSummary",
    "extract_features",
    "feature_path",
    "make_batches",
    "reduce_features",
    "write_sample_images",
]

PathLike = Union[str, "os.PathLike[str]"]

REDUCTIONS: tuple[str, ...] = ("none", "gap", "gmp", "gram")
"""Per-tap reductions: keep the map ``(C, H, W)``, global average ``(C,)``, global max ``(C,)``,
or Gram matrix ``(C, C)`` (``F F^T / (C H W)``, :func:`featx.functional.gram_matrix`)."""

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
"""Compute dtypes (bf16/fp16 run under autocast); feature files store tensors in this dtype."""

DEFAULT_TAPS = "relu1_1,relu2_1,relu3_1"
"""Taps extracted when none are given: the layers of the ``ttsr_lte`` preset, named so that they
exist in every VGG (the preset itself is defined for vgg19 only)."""

FORMAT = "featx-features/1"
"""Value of the ``format`` metadata entry of feature files written by :func:`extract_features`."""

SAMPLE_IMAGES: tuple[str, ...] = ("astronaut", "coffee", "chelsea", "camera", "brick", "grass", "gravel")
"""scikit-image sample pictures (bundled, no download) used by ``featx extract --sample-images``."""

MANIFEST = "manifest.jsonl"
SUMMARY = "summary.json"
_RANDOM_WEIGHTS_SEED = 0
_STALE_TEMP = re.compile(r"^\..+\.\d+\.tmp$")
_BARRIER_TIMEOUT = datetime.timedelta(hours=24)  # ranks finish at different times on big runs


@dataclass
class ExtractSummary:
    """What a run did. On rank 0 (and single-process runs) the counts cover all ranks.

    Attributes:
        files: images considered.
        ok: feature files written by this run.
        skipped: images whose up-to-date output already existed.
        errors: images that failed (decoding, size, or writing).
        seconds: wall time of the run.
        images_per_second: ``ok / seconds``.
        output: the output folder.
        manifest: path of ``manifest.jsonl`` (``None`` for dry runs).
        failures: ``(key, reason)`` of every failed image.
        shapes: per-tap shape of the first image (in key order) with features.
        example: that image's feature file (``None`` if no image has features).
        weights_id: the extractor's weights id (``"random"`` for random weights).
        weights_verified: whether the weights file's sha256 matched its known checkpoint
            (``None``: nothing to check against, such as a custom file or random weights).
        world_size: number of ranks.
        planned: dry runs only: ``(key, action)`` with action ``"extract"``, ``"skip"`` or ``"error: ..."``.
    """

    files: int = 0
    ok: int = 0
    skipped: int = 0
    errors: int = 0
    seconds: float = 0.0
    images_per_second: float = 0.0
    output: str = ""
    manifest: Optional[str] = None
    failures: list[tuple[str, str]] = field(default_factory=list)
    shapes: dict[str, list[int]] = field(default_factory=dict)
    example: Optional[str] = None
    weights_id: str = ""
    weights_verified: Optional[bool] = None
    world_size: int = 1
    planned: list[tuple[str, str]] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------
# Small public helpers
# ----------------------------------------------------------------------------------------------


def feature_path(output: PathLike, key: str) -> Path:
    """Where the features of the image with ``key`` go: ``OUTPUT/KEY.safetensors``.

    The image's full name is kept (``a/b.png`` -> ``a/b.png.safetensors``), so ``x.png`` and
    ``x.jpg`` in one folder never collide.

    Example:
        >>> feature_path("feats", "train/0001.png").as_posix()
        'feats/train/0001.png.safetensors'
    """
    return Path(output, *key.split("/")).with_name(key.split("/")[-1] + FEATURE_SUFFIX)


def reduce_features(feats: Mapping[str, torch.Tensor], reduce: str) -> dict[str, torch.Tensor]:
    """Apply a per-tap reduction to a batch of feature maps (computed in float32).

    Args:
        feats: ``{tap: (B, C, H, W)}``.
        reduce: ``"none"``, ``"gap"`` (mean over H, W), ``"gmp"`` (max over H, W) or ``"gram"``
            (:func:`featx.functional.gram_matrix`, normalised by ``C H W``).

    Returns:
        ``{tap: (B, C, H, W)}``, ``(B, C)``, ``(B, C)`` or ``(B, C, C)``. ``"none"`` returns the
        maps unchanged; the others return float32.

    Raises:
        ValueError: unknown ``reduce``.

    Example:
        >>> f = {"relu1_1": torch.arange(8.0).view(1, 2, 2, 2)}
        >>> reduce_features(f, "gap")["relu1_1"], reduce_features(f, "gmp")["relu1_1"]
        (tensor([[1.5000, 5.5000]]), tensor([[3., 7.]]))
        >>> reduce_features(f, "gram")["relu1_1"].shape
        torch.Size([1, 2, 2])
    """
    check_choice("reduce", reduce, REDUCTIONS)
    if reduce == "none":
        return dict(feats)
    if reduce == "gram":
        from featx.functional import gram_matrix

        return {name: gram_matrix(feat) for name, feat in feats.items()}
    if reduce == "gap":
        return {name: feat.float().mean(dim=(2, 3)) for name, feat in feats.items()}
    return {name: feat.amax(dim=(2, 3)).float() for name, feat in feats.items()}


def make_batches(sizes: Sequence[Optional[tuple[int, int]]], batch_size: int) -> list[list[int]]:
    """Group image indices into batches of equal size, deterministically.

    Images are taken in index order; each size gets its own batches of at most ``batch_size``;
    batches are ordered by their first index. ``None`` sizes (failed images) are left out.

    Example:
        >>> make_batches([(8, 8), (4, 4), (8, 8), None, (8, 8), (4, 4)], batch_size=2)
        [[0, 2], [1, 5], [4]]
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    open_batches: dict[tuple[int, int], list[int]] = {}
    batches: list[list[int]] = []
    for index, size in enumerate(sizes):
        if size is None:
            continue
        batch = open_batches.get(size)
        if batch is None or len(batch) == batch_size:
            batch = open_batches[size] = []
            batches.append(batch)
        batch.append(index)
    return batches


def write_sample_images(folder: PathLike, *, max_side: int = 256) -> list[Path]:
    """Write scikit-image's bundled sample pictures as PNGs (no network needed).

    The pictures in :data:`SAMPLE_IMAGES` are downscaled (Lanczos) so their longer side is at
    most ``max_side``; gray pictures stay gray. Files already holding the same bytes are left
    alone, so their mtime (and a resumed extraction) is unaffected.

    Returns:
        The PNG paths, sorted.
    """
    import numpy as np
    import skimage.data
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    paths = []
    for name in SAMPLE_IMAGES:
        image = Image.fromarray(np.asarray(getattr(skimage.data, name)()))
        scale = max_side / max(image.size)
        if scale < 1:
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            image = image.resize(size, Image.Resampling.LANCZOS)
        buffer = _stdio.BytesIO()
        image.save(buffer, format="PNG")
        path = Path(folder, f"{name}.png")
        if not path.exists() or path.read_bytes() != buffer.getvalue():
            write_atomic(path, [buffer.getvalue()])
        paths.append(path)
    return sorted(paths)


# ----------------------------------------------------------------------------------------------
# Distributed context
# ----------------------------------------------------------------------------------------------


class _Dist:
    """Rank/world from torchrun's environment; gloo process group when ``WORLD_SIZE > 1``."""

    def __init__(self) -> None:
        import torch.distributed as dist

        self.dist = dist
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.owned = False
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("gloo", timeout=_BARRIER_TIMEOUT)
            self.owned = True
        if self.world > 1:
            self.rank, self.world = dist.get_rank(), dist.get_world_size()

    def gather(self, value: Any) -> list[Any]:
        if self.world == 1:
            return [value]
        out: list[Any] = [None] * self.world
        self.dist.all_gather_object(out, value)
        return out

    def broadcast(self, value: Any) -> Any:
        if self.world == 1:
            return value
        box = [value]
        self.dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.world > 1:
            self.dist.barrier()

    def close(self) -> None:
        if self.owned:
            self.dist.destroy_process_group()


# ----------------------------------------------------------------------------------------------
# Decoding dataset and size-grouped batches
# ----------------------------------------------------------------------------------------------


class _DecodeDataset(Dataset):
    """Decodes one image; returns an error record instead of raising (workers must not die)."""

    def __init__(self, paths: Sequence[str], alpha: str, max_pixels: Optional[int]) -> None:
        self.paths, self.alpha, self.max_pixels = list(paths), alpha, max_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, Optional[torch.Tensor], Optional[str]]:
        try:
            return index, load_image(self.paths[index], alpha=self.alpha, max_pixels=self.max_pixels), None
        except ImageDecodeError as error:
            return index, None, error.reason
        except Exception as error:  # anything else is still this file's problem, not the run's
            return index, None, f"cannot decode ({type(error).__name__}: {error})"


def _collate(records: list[tuple[int, Optional[torch.Tensor], Optional[str]]]) -> dict[str, Any]:
    """Stack decoded images by shape (in order); pass errors through."""
    groups: dict[tuple[int, ...], list[tuple[int, torch.Tensor]]] = {}
    errors = []
    for index, image, error in records:
        if image is None:
            errors.append((index, error))
        else:
            groups.setdefault(tuple(image.shape), []).append((index, image))
    stacks = [([i for i, _ in group], torch.stack([img for _, img in group])) for group in groups.values()]
    return {"stacks": stacks, "errors": errors}


# ----------------------------------------------------------------------------------------------
# Planning
# ----------------------------------------------------------------------------------------------


@dataclass
class _Plan:
    """One image: ``state`` is ``"todo"``, ``"done"`` or ``"error"``."""

    state: str
    size: Optional[tuple[int, int]] = None
    reason: str = ""
    stat: tuple[int, int] = (0, 0)
    shapes: dict[str, list[int]] = field(default_factory=dict)


def _read_done(path: Path) -> Optional[tuple[dict[str, str], dict[str, list[int]]]]:
    """Metadata and tensor shapes of an existing output, or ``None`` if absent or invalid."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            shapes = {name: list(handle.get_slice(name).get_shape()) for name in handle.keys()}
            return dict(handle.metadata() or {}), shapes
    except Exception:  # missing, truncated or foreign file: not done
        return None


def _plan_one(source: ImageSource, ctx: _Context) -> _Plan:
    try:
        info = os.stat(source.path)
    except FileNotFoundError:
        return _Plan("error", reason="file not found")
    except OSError as error:
        return _Plan("error", reason=f"cannot read ({error.strerror})")
    stat = (info.st_size, info.st_mtime_ns)
    if ctx.resume:
        done = _read_done(feature_path(ctx.output, source.key))
        if done is not None:
            metadata, shapes = done
            try:
                size = (int(metadata["source_height"]), int(metadata["source_width"]))
            except (KeyError, ValueError):
                size = None
            if size is not None and metadata == ctx.metadata(source, stat, size) and set(shapes) == set(ctx.taps):
                return _Plan("done", size=size, stat=stat, shapes=shapes)
    try:
        # the header rules of the decoder (alpha, TIFF channels): a dry run fails what the real run fails
        size = probe_image(source.path, alpha=ctx.alpha, max_pixels=ctx.max_pixels)
    except ImageDecodeError as error:
        return _Plan("error", reason=error.reason)
    if min(size) < ctx.min_size:
        return _Plan(
            "error",
            reason=f"image is {size[0]}x{size[1]} (HxW), smaller than the {ctx.min_size}x{ctx.min_size} "
            f"minimum for tap {ctx.taps[-1]!r}",
        )
    return _Plan("todo", size=size, stat=stat)


# ----------------------------------------------------------------------------------------------
# Run context: configuration shared by planning, computing and writing
# ----------------------------------------------------------------------------------------------


@dataclass
class _Context:
    output: Path
    resume: bool
    max_pixels: Optional[int]
    taps: tuple[str, ...]
    min_size: int
    common: dict[str, str]
    alpha: str = "error"

    def metadata(self, source: ImageSource, stat: tuple[int, int], size: tuple[int, int]) -> dict[str, str]:
        return {
            **self.common,
            "source_path": source.path,
            "source_key": source.key,
            "source_bytes": str(stat[0]),
            "source_mtime_ns": str(stat[1]),
            "source_height": str(size[0]),
            "source_width": str(size[1]),
        }


def _verified_text(verified: Optional[bool]) -> str:
    return "none" if verified is None else str(bool(verified)).lower()


def _common_metadata(extractor: Any, reduce: str, dtype: str) -> dict[str, str]:
    from featx import __version__

    input_range = extractor.input_range
    return {
        "format": FORMAT,
        "featx_version": __version__,
        "torch_version": torch.__version__,
        "arch": extractor.arch,
        "taps": ",".join(extractor.taps),
        "pooling": extractor.pooling,
        "weights_id": str(extractor.weights_id),
        "weights_sha256": extractor.weights_sha256 or "none",
        "weights_verified": _verified_text(getattr(extractor, "weights_verified", None)),
        "input_range": input_range if isinstance(input_range, str) else f"{input_range[0]:g},{input_range[1]:g}",
        "reduce": reduce,
        "dtype": dtype,
    }


def _build_extractor(arch: str, taps: Any, preset: Optional[str], weights: Any) -> Any:
    """The extractor; random weights come from a fixed seed so every rank and rerun agrees."""
    from featx.extractor import VGGFeatures

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_RANDOM_WEIGHTS_SEED)
        if preset is not None:
            return VGGFeatures.from_preset(preset, weights=weights)
        return VGGFeatures(arch, taps, weights=weights)


def _resolve_device(device: str, local_rank: int) -> torch.device:
    if device == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r} ({error})") from None


def _check_output(output: Path) -> None:
    """Create the output folder and prove it is writable with a probe file."""
    probe = output / f".featx-probe-{os.getpid()}"
    try:
        output.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as handle:
            handle.write(b"probe")
        probe.unlink()
    except OSError as error:
        reason = error.strerror or str(error)
        raise OutputNotWritableError(
            f"output folder {output} is not writable ({reason}); choose another folder with write access"
        ) from None


# ----------------------------------------------------------------------------------------------
# Writer thread: feature files and manifest lines, in order, off the compute thread
# ----------------------------------------------------------------------------------------------


class _Writer:
    """One background thread that writes feature files and this rank's manifest part."""

    def __init__(
        self,
        part: Path,
        capacity: int,
        on_record: Optional[Callable[[dict], None]],
        bar: Any,
        fsync: bool,
        direct_io: bool,
    ) -> None:
        self.queue: queue.Queue = queue.Queue(maxsize=capacity)
        self.fsync, self.direct_io = fsync, direct_io
        self.handle = open(part, "w", encoding="utf-8")
        self.on_record, self.bar = on_record, bar
        self.errors = 0
        self.made: set[str] = set()
        self.crash: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._run, name="featx-writer", daemon=True)
        self.thread.start()

    def put(self, record: dict, path: Optional[Path] = None, data: Optional[tuple[torch.Tensor, int]] = None) -> None:
        """Queue a manifest record and, for ``path``, the file bytes from :func:`serialize_features`."""
        if self.crash is not None:
            raise RuntimeError("the feature writer thread failed") from self.crash
        self.queue.put((record, path, data))

    def _run(self) -> None:
        try:
            while True:
                item = self.queue.get()
                if item is None:
                    break
                self._write(*item)
        except BaseException as error:  # surfaced in the main thread by put()/close()
            self.crash = error
            while self.queue.get() is not None:  # keep the producer from blocking forever
                pass

    def _write(self, record: dict, path: Optional[Path], data: Optional[tuple[torch.Tensor, int]]) -> None:
        if path is not None and data is not None:
            try:
                folder = str(path.parent)
                if folder not in self.made:
                    os.makedirs(folder, exist_ok=True)
                    self.made.add(folder)
                write_atomic_buffer(path, *data, fsync=self.fsync, direct=self.direct_io)
            except OSError as error:
                record = {
                    "path": record["path"],
                    "source": record["source"],
                    "status": "error",
                    "error": f"cannot write {path}: {error.strerror or error}",
                }
        self.handle.write(json.dumps(record, sort_keys=True) + "\n")
        self.handle.flush()
        if record["status"] == "error":
            self.errors += 1
        if self.bar is not None:
            self.bar.update(1)
            if self.errors:
                self.bar.set_postfix(errors=self.errors, refresh=False)
        if self.on_record is not None:
            self.on_record(record)

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()
        self.handle.close()
        if self.crash is not None:
            raise RuntimeError("the feature writer thread failed") from self.crash


# ----------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------


def _check_options(reduce: str, dtype: str, batch_size: int, num_workers: int, alpha: str) -> None:
    check_choice("reduce", reduce, REDUCTIONS)
    check_choice("dtype", dtype, tuple(DTYPES))
    check_choice("alpha", alpha, ALPHA_MODES)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"num_workers must be an integer >= 0, got {num_workers!r}")


def _sources(inputs: Sequence[PathLike], files_from: Optional[PathLike], recursive: bool) -> list[ImageSource]:
    """The sorted images to process; missing positional inputs and lists are errors up front."""
    for item in inputs:
        if not os.path.lexists(item):
            raise FileNotFoundError(f"input not found: {os.fspath(item)} (expected a folder or an image file)")
    if files_from is not None:
        if not os.path.isfile(files_from):
            raise FileNotFoundError(f"file list not found: {os.fspath(files_from)}")
        listed = read_file_list(files_from)
        # listed files that vanished are reported per image (file not found), not up front
        sources = find_images([*inputs, *listed], recursive=recursive, must_exist=False) if listed or inputs else []
        where = f"the list {os.fspath(files_from)}"
    else:
        if not inputs:
            raise ValueError("no inputs given: expected at least one folder or image file (or files_from)")
        sources = find_images(inputs, recursive=recursive)
        where = ", ".join(map(os.fspath, inputs))
    if not sources:
        kinds = ", ".join(ext[1:] for ext in IMAGE_EXTENSIONS)
        scope = "" if recursive else " at the top level only (recursive=False)"
        raise ValueError(f"no images found in {where}: looked for {kinds} files (any case){scope}; hidden files are skipped")
    return sources


def _record(source: ImageSource, status: str, **extra: Any) -> dict:
    record = {"path": source.key, "source": source.path, "status": status}
    if status != "error":
        record["output"] = feature_path(".", source.key).as_posix()
    record.update(extra)
    return record


def extract_features(
    inputs: Sequence[PathLike],
    output: PathLike,
    *,
    files_from: Optional[PathLike] = None,
    recursive: bool = True,
    arch: str = "vgg19",
    taps: Union[str, Sequence[str]] = DEFAULT_TAPS,
    preset: Optional[str] = None,
    weights: Any = "DEFAULT",
    reduce: str = "none",
    dtype: str = "float32",
    batch_size: int = 8,
    num_workers: int = 2,
    device: str = "auto",
    resume: bool = True,
    alpha: str = "error",
    max_pixels: Optional[int] = None,
    fsync: bool = True,
    direct_io: bool = True,
    dry_run: bool = False,
    progress: bool = False,
    on_record: Optional[Callable[[dict], None]] = None,
) -> ExtractSummary:
    """Extract VGG features of every image under ``inputs`` into ``output``.

    Writes ``OUTPUT/KEY.safetensors`` per image (keys are paths relative to the inputs' common
    root; see :func:`featx.io.find_images`), ``OUTPUT/manifest.jsonl`` (one line per image,
    sorted by path: ``path``, ``source``, ``status`` ``ok``/``skipped``/``error``, ``output`` and
    ``shapes``, or ``error``) and ``OUTPUT/summary.json``. Feature files hold one tensor per tap
    (in ``dtype``) and string metadata: ``format``, ``featx_version``, ``torch_version``,
    ``arch``, ``taps``, ``pooling``, ``weights_id``, ``weights_sha256``, ``weights_verified``
    (``true``, ``false`` or ``none``), ``input_range``,
    ``reduce``, ``dtype``, ``source_path``, ``source_key``, ``source_bytes``,
    ``source_mtime_ns``, ``source_height``, ``source_width`` (the size stored in the file, before
    EXIF orientation). No timestamps: equal inputs and options give byte-identical files.

    Images are decoded to ``[0, 1]`` and the extractor uses ``input_range=(0, 1)``.

    Args:
        inputs: folders and/or image files.
        output: output folder (created; checked writable before any work).
        files_from: a text file listing images, one per line (added to ``inputs``).
        recursive: walk subfolders.
        arch: VGG architecture (ignored with ``preset``).
        taps: preset name, tap name, ``"a,b"`` or a list (ignored with ``preset``); the default
            :data:`DEFAULT_TAPS` (``relu1_1,relu2_1,relu3_1``) exists in every ``arch``.
        preset: build the extractor with :meth:`VGGFeatures.from_preset` (its arch, taps, pooling).
        weights: as for :class:`~featx.extractor.VGGFeatures`; ``None`` gives random weights
            from a fixed seed (0), so reruns and ranks agree (a ``RandomWeightsWarning`` is issued).
        reduce: ``"none"``, ``"gap"``, ``"gmp"`` or ``"gram"`` (see :func:`reduce_features`).
        dtype: ``"float32"``, ``"bfloat16"`` or ``"float16"``: autocast dtype and stored dtype.
        batch_size: images per forward pass (equal-size images only).
        num_workers: DataLoader worker processes decoding images (0: decode in this process).
        device: ``"auto"`` (``cuda:LOCAL_RANK`` if available, else CPU), ``"cpu"``, ``"cuda:0"``...
        resume: skip images whose output exists with matching metadata; ``False`` recomputes all.
        alpha: ``"error"`` or ``"drop"`` (see :func:`featx.io.load_image`).
        max_pixels: pixel limit per image (see :func:`featx.io.load_image`).
        fsync: fsync each feature file before its atomic rename (durable across power loss).
            ``False`` keeps the atomic rename (a killed run never leaves partial files) and is
            faster where fsync is slow (network filesystems, some VMs); after a power loss the
            resume check still recomputes files whose size does not match their header.
        direct_io: write feature files from 1 MiB up with ``O_DIRECT`` where the system allows
            it (see :mod:`featx.atomic`): the kernel spends almost no CPU on them and they do not
            fill the page cache. ``False`` writes through the page cache. Same bytes either way.
        dry_run: plan only: nothing is written; ``summary.planned`` lists the actions.
        progress: show a tqdm progress bar on stderr (rank 0 only).
        on_record: called with each manifest record (a dict) once it is final, from the writer thread.

    Returns:
        An :class:`ExtractSummary` (global counts on rank 0, and on every rank after the merge).

    Raises:
        FileNotFoundError: an input or ``files_from`` does not exist.
        ValueError: bad option, no images found, unknown arch/tap/preset.
        OutputNotWritableError: ``output`` cannot be created or written.
        featx.errors.WeightsNotFoundError: the requested weights are not on disk.

    Example:
        >>> import tempfile, os, warnings
        >>> from PIL import Image
        >>> from featx.io import load_features
        >>> with tempfile.TemporaryDirectory() as d, warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")  # random weights warn
        ...     Image.new("RGB", (24, 16)).save(os.path.join(d, "a.png"))
        ...     summary = extract_features([d], os.path.join(d, "feats"), taps="relu1_1", weights=None, num_workers=0)
        ...     tensors, meta = load_features(os.path.join(d, "feats", "a.png.safetensors"))
        >>> summary.ok, tuple(tensors["relu1_1"].shape), meta["taps"]
        (1, (64, 16, 24), 'relu1_1')
    """
    start = time.perf_counter()
    wall_start = time.time()
    _check_options(reduce, dtype, batch_size, num_workers, alpha)
    output = Path(output).absolute()
    dist = _Dist()
    try:
        sources = _sources(inputs, files_from, recursive)
        torch_device = _resolve_device(device, dist.local_rank)
        extractor = _build_extractor(arch, taps, preset, weights).to(torch_device)
        if not dry_run:
            _check_output(output)
        ctx = _Context(
            output=output,
            resume=resume,
            max_pixels=max_pixels,
            taps=extractor.taps,
            min_size=extractor.min_input_size,
            common=_common_metadata(extractor, reduce, dtype),
            alpha=alpha,
        )
        bar_enabled = progress and dist.rank == 0
        plans = _plan_all(sources, ctx, dist, bar_enabled)
        if dry_run:
            return _dry_summary(sources, plans, output, extractor, dist, start)
        batches = make_batches([plan.size for plan in plans], batch_size)
        mine = batches[dist.rank :: dist.world]
        planned_errors = [i for i in range(dist.rank, len(plans), dist.world) if plans[i].state == "error"]
        part = output / f"manifest.rank{dist.rank}.jsonl"
        total = sum(map(len, mine)) + len(planned_errors)
        bar = _progress_bar(total, bar_enabled, dist)
        writer = _Writer(
            part, capacity=max(2 * batch_size, 4), on_record=on_record, bar=bar, fsync=fsync, direct_io=direct_io
        )
        try:
            for index in planned_errors:
                writer.put(_record(sources[index], "error", error=plans[index].reason))
            _compute(sources, plans, mine, ctx, extractor, torch_device, dtype, reduce, num_workers, alpha, writer)
        finally:
            writer.close()
            if bar is not None:
                bar.close()
        dist.barrier()  # every rank's files and manifest part are complete
        result = None
        if dist.rank == 0:
            result = _finish(output, dist.world, len(sources), ctx.common, str(extractor.weights_id), start, wall_start)
        return dist.broadcast(result)
    finally:
        dist.close()


def _plan_all(sources: list[ImageSource], ctx: _Context, dist: _Dist, bar_enabled: bool) -> list[_Plan]:
    """Each rank plans every ``world``-th image; the plans are shared so all ranks agree on batches."""
    mine = range(dist.rank, len(sources), dist.world)
    bar = None
    if bar_enabled:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(mine), desc="scan", unit="img", leave=False, dynamic_ncols=True)
    local = []
    for index in mine:
        local.append(_plan_one(sources[index], ctx))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    plans: list[Optional[_Plan]] = [None] * len(sources)
    for rank, part in enumerate(dist.gather(local)):
        for offset, plan in enumerate(part):
            plans[rank + offset * dist.world] = plan
    return plans  # type: ignore[return-value]


def _progress_bar(total: int, enabled: bool, dist: _Dist) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    desc = "extract" if dist.world == 1 else f"extract (rank 0 of {dist.world})"
    return tqdm(total=total, desc=desc, unit="img", dynamic_ncols=True, smoothing=0.1)


def _compute(
    sources: list[ImageSource],
    plans: list[_Plan],
    batches: list[list[int]],
    ctx: _Context,
    extractor: Any,
    device: torch.device,
    dtype: str,
    reduce: str,
    num_workers: int,
    alpha: str,
    writer: _Writer,
) -> None:
    """Decode (in workers), forward, reduce, and queue writes for this rank's batches."""
    work = []
    for batch in batches:
        if all(plans[i].state == "done" for i in batch):
            for i in batch:
                writer.put(_record(sources[i], "skipped", shapes=plans[i].shapes))
        else:
            work.append(batch)
    if not work:
        return
    dataset = _DecodeDataset([source.path for source in sources], alpha, ctx.max_pixels)
    loader = DataLoader(
        dataset,
        batch_sampler=work,
        num_workers=num_workers,
        collate_fn=_collate,
        pin_memory=device.type == "cuda",
    )
    store = DTYPES[dtype]
    autocast = dtype != "float32"
    layout = _memory_format(device, store)
    extractor = extractor.to(memory_format=layout)
    for decoded in loader:
        for index, reason in decoded["errors"]:
            writer.put(_record(sources[index], "error", error=reason))
        for indices, images in decoded["stacks"]:
            with torch.inference_mode(), torch.autocast(device.type, dtype=store, enabled=autocast):
                batch = images.to(device, non_blocking=True).contiguous(memory_format=layout)
                feats = reduce_features(extractor(batch), reduce)
                if device.type != "cpu":  # transpose on the accelerator, copy plain C x H x W maps
                    feats = {name: feat.to(store).contiguous() for name, feat in feats.items()}
            feats = {name: feat.to("cpu", store) for name, feat in feats.items()}
            shapes = {name: list(feat.shape[1:]) for name, feat in feats.items()}
            for row, index in enumerate(indices):
                source, plan = sources[index], plans[index]
                if plan.state == "done":
                    writer.put(_record(source, "skipped", shapes=plan.shapes))
                    continue
                # laid out here (both cores, between forwards); the writer thread only does I/O
                metadata = ctx.metadata(source, plan.stat, plan.size)  # type: ignore[arg-type]
                data = serialize_features({name: feat[row] for name, feat in feats.items()}, metadata)
                writer.put(_record(source, "ok", shapes=shapes), feature_path(ctx.output, source.key), data)


def _memory_format(device: torch.device, dtype: torch.dtype) -> torch.memory_format:
    """``channels_last`` where it speeds VGG up: on CPU (oneDNN skips its layout reorders; 1.3x
    for ``ttsr_lte`` at 256x256, see ``docs/cli.md``) and for 16-bit CUDA (tensor
    cores). fp32 CUDA stays ``contiguous_format``. Outputs are stored ``C x H x W`` either way."""
    if device.type == "cpu" or dtype in (torch.float16, torch.bfloat16):
        return torch.channels_last
    return torch.contiguous_format


def _finish(
    output: Path, world: int, expected: int, config: dict[str, str], weights_id: str, start: float, wall_start: float
) -> ExtractSummary:
    """Rank 0: merge manifest parts, write summary.json, remove leftovers of killed runs."""
    records = []
    for rank in range(world):
        part = output / f"manifest.rank{rank}.jsonl"
        with open(part, encoding="utf-8") as handle:
            records.extend(json.loads(line) for line in handle if line.strip())
    records.sort(key=lambda record: record["path"])
    write_atomic(output / MANIFEST, [(json.dumps(r, sort_keys=True) + "\n").encode("utf-8") for r in records])
    for rank in range(world):
        (output / f"manifest.rank{rank}.jsonl").unlink()
    _remove_stale_temps(output, wall_start)
    counts = {"ok": 0, "skipped": 0, "error": 0}
    failures = []
    shapes: dict[str, list[int]] = {}
    example = None
    for record in records:
        counts[record["status"]] += 1
        if record["status"] == "error":
            failures.append((record["path"], record["error"]))
        elif example is None:
            shapes, example = record["shapes"], str(output / record["output"])
    seconds = time.perf_counter() - start
    summary = ExtractSummary(
        files=len(records),
        ok=counts["ok"],
        skipped=counts["skipped"],
        errors=counts["error"],
        seconds=seconds,
        images_per_second=counts["ok"] / seconds if seconds > 0 else 0.0,
        output=str(output),
        manifest=str(output / MANIFEST),
        failures=failures,
        shapes=shapes,
        example=example,
        weights_id=weights_id,
        weights_verified={"true": True, "false": False}.get(config.get("weights_verified", "none")),
        world_size=world,
    )
    payload = {
        "files": summary.files,
        "ok": summary.ok,
        "skipped": summary.skipped,
        "error": summary.errors,
        "seconds": round(seconds, 3),
        "images_per_second": round(summary.images_per_second, 3),
        "world_size": world,
        "output": str(output),
        "config": config,
    }
    write_atomic(output / SUMMARY, [(json.dumps(payload, indent=2, sort_keys=True) + "\n").encode("utf-8")])
    if len(records) != expected or len({r["path"] for r in records}) != expected:
        raise RuntimeError(f"manifest has {len(records)} entries for {expected} images")  # each image exactly once
    return summary


def _remove_stale_temps(output: Path, before: float) -> None:
    """Delete hidden ``.NAME.PID.tmp`` files left by killed runs (older than this run)."""
    for folder, _, files in os.walk(output):
        for name in files:
            if _STALE_TEMP.match(name):
                path = os.path.join(folder, name)
                try:
                    if os.stat(path).st_mtime < before - 1:
                        os.unlink(path)
                except OSError:
                    pass


def _dry_summary(
    sources: list[ImageSource], plans: list[_Plan], output: Path, extractor: Any, dist: _Dist, start: float
) -> ExtractSummary:
    actions = {"todo": "extract", "done": "skip (up to date)"}
    planned = [
        (source.key, actions.get(plan.state, f"error: {plan.reason}")) for source, plan in zip(sources, plans)
    ]
    return ExtractSummary(
        files=len(sources),
        skipped=sum(plan.state == "done" for plan in plans),
        errors=sum(plan.state == "error" for plan in plans),
        seconds=time.perf_counter() - start,
        output=str(output),
        failures=[(s.key, p.reason) for s, p in zip(sources, plans) if p.state == "error"],
        weights_id=str(extractor.weights_id),
        weights_verified=getattr(extractor, "weights_verified", None),
        world_size=dist.world,
        planned=planned,
    )

