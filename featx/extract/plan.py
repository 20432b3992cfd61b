"""Planning an extraction run: which images, where their features go, which are already up to date,
how they are batched, and the manifest records that report them.

Planning reads only file headers and the metadata of existing outputs. Batches are formed from the
whole sorted file list, before anything is skipped or sharded, so every image is always computed in
the same batch (resumed, sharded and uninterrupted runs give byte-identical files).
"""

from __future__ import annotations

import os
import stat as stat_module
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from featx._checks import check_int
from featx.errors import ExtractionError, FeatxValueError, ImageDecodeError, InputNotFoundError
from featx.extract.distributed import DistContext
from featx.extract.options import ManifestRecord, PathLike
from featx.io.discovery import IMAGE_EXTENSIONS, ImageSource, decode_name, discover, name_bytes, printable_name, read_file_list
from featx.io.featfile import FEATURE_SUFFIX
from featx.io.images import probe_image

__all__ = [
    "FORMAT",
    "MANIFEST",
    "ImagePlan",
    "RunContext",
    "collect_sources",
    "common_metadata",
    "feature_path",
    "make_batches",
    "manifest_record",
    "plan_all",
    "plan_image",
    "read_existing",
    "record_source",
    "remove_failed_output",
    "source_metadata",
]

FORMAT = "featx-features/1"
"""Value of the ``format`` metadata entry of feature files written by :func:`featx.extract.extract_features`."""

MANIFEST = "manifest.jsonl"
"""Name of the merged manifest in the output folder (one JSON line per image, sorted by key)."""


def feature_path(output: PathLike, key: str) -> Path:
    """Where the features of the image with ``key`` go: ``OUTPUT/KEY.safetensors``.

    The image's full name is kept (``a/b.png`` -> ``a/b.png.safetensors``), so ``x.png`` and
    ``x.jpg`` in one folder never collide. A key that is not valid UTF-8 is named by its
    :func:`featx.io.discovery.printable_name` (``caf\\xe9.png.safetensors``): every output name is
    UTF-8, as safetensors requires of the paths it opens.

    Example:
        >>> feature_path("feats", "train/0001.png").as_posix()
        'feats/train/0001.png.safetensors'
    """
    key = printable_name(key)
    return Path(output, *key.split("/")).with_name(key.split("/")[-1] + FEATURE_SUFFIX)


def make_batches(
    sizes: Sequence[Optional[tuple[int, int]]],
    batch_size: int,
    *,
    limits: Optional[Mapping[tuple[int, int], int]] = None,
) -> list[list[int]]:
    """Group image indices into batches of equal size, deterministically.

    Images are taken in index order; each size gets its own batches of at most ``batch_size``
    (or ``limits[size]``, the images of that size a memory budget allows); batches are ordered by
    their first index. ``None`` sizes (failed images) are left out.

    Raises:
        TypeError: ``batch_size`` is not an integer.
        ValueError: ``batch_size`` is below 1.

    Example:
        >>> make_batches([(8, 8), (4, 4), (8, 8), None, (8, 8), (4, 4)], batch_size=2)
        [[0, 2], [1, 5], [4]]
    """
    check_int("batch_size", batch_size, minimum=1)
    open_batches: dict[tuple[int, int], list[int]] = {}
    batches: list[list[int]] = []
    for index, size in enumerate(sizes):
        if size is None:
            continue
        batch = open_batches.get(size)
        most = batch_size if limits is None else min(batch_size, limits.get(size, batch_size))
        if batch is None or len(batch) >= most:
            batch = open_batches[size] = []
            batches.append(batch)
        batch.append(index)
    return batches


def collect_sources(
    inputs: Sequence[PathLike],
    files_from: Optional[PathLike],
    recursive: bool,
    read_list: Callable[[PathLike], list[str]] = read_file_list,
) -> tuple[list[ImageSource], str]:
    """The sorted images to process and the folder their keys are relative to (see
    :func:`featx.io.discovery.discover`); missing positional inputs and lists are errors up front.
    ``read_list`` reads ``files_from`` (under torchrun, rank 0 reads it for every rank).

    Raises:
        FileNotFoundError: an input or ``files_from`` does not exist.
        ValueError: no inputs, or no images found.
    """
    for item in inputs:
        if not os.path.lexists(item):
            raise InputNotFoundError(f"input not found: {os.fspath(item)} (expected a folder or an image file)")
    if files_from is not None:
        listed = read_list(files_from)  # "-" (stdin) and pipes included, read once
        # listed files that vanished are reported per image (file not found), not up front
        sources, root = discover([*inputs, *listed], recursive=recursive, must_exist=False) if listed or inputs else ([], "")
        where = f"the list {os.fspath(files_from)}"
    else:
        if not inputs:
            raise FeatxValueError("no inputs given: expected at least one folder or image file (or files_from)")
        sources, root = discover(inputs, recursive=recursive)
        where = ", ".join(os.fspath(item) for item in inputs)
    sources = _mark_name_clashes(sources)
    if not sources:
        kinds = ", ".join(ext[1:] for ext in IMAGE_EXTENSIONS)
        scope = "" if recursive else " at the top level only (recursive=False)"
        raise FeatxValueError(
            f"no images found in {where}: looked for {kinds} files (any case){scope}; hidden files are skipped"
        )
    return sources, root


def _mark_name_clashes(sources: list[ImageSource]) -> list[ImageSource]:
    """A key that is not UTF-8 whose printable output name is another image's fails (never overwrites it)."""
    valid = {source.key for source in sources if name_bytes(source.key) is None}
    marked = []
    for source in sources:
        printable = printable_name(source.key)
        if name_bytes(source.key) is not None and printable in valid:
            problem = (
                f"its name is not UTF-8 and its output {printable}{FEATURE_SUFFIX} would be the output "
                f"of the image {printable}; rename one of them"
            )
            source = ImageSource(source.path, source.key, problem)
        marked.append(source)
    return marked


def _verified_text(extractor: Any) -> str:
    """``"true"`` (size and full sha256 matched), ``"prefix"`` (only the 8 hex digits of a prefix-only
    checkpoint), ``"false"`` (mismatch) or ``"none"`` (nothing to check against)."""
    state = str(getattr(extractor, "weights_verification", ""))
    if state in ("sha256", "prefix", "mismatch", "unknown"):
        return {"sha256": "true", "mismatch": "false", "unknown": "none"}.get(state, state)
    verified = extractor.weights_verified
    return "none" if verified is None else str(verified).lower()


def common_metadata(extractor: Any, reduce: str, dtype: str) -> dict[str, str]:
    """The metadata every feature file of a run shares: format, versions, extractor and options."""
    import torch

    from featx._version import __version__

    input_range = extractor.input_range
    return {
        "format": FORMAT,
        "featx_version": __version__,
        "torch_version": torch.__version__,
        "arch": extractor.arch,
        "taps": ",".join(extractor.taps),
        "pooling": str(getattr(extractor, "pooling", "n/a")),  # n/a: a family without a pooling option
        "weights_id": str(extractor.weights_id),
        "weights_sha256": extractor.weights_sha256 or "none",
        "weights_verified": _verified_text(extractor),
        "input_range": input_range if isinstance(input_range, str) else f"{input_range[0]:g},{input_range[1]:g}",
        "reduce": reduce,
        "dtype": dtype,
    }


def source_metadata(source: ImageSource) -> dict[str, str]:
    """``source_path`` and ``source_key`` as valid UTF-8 (:func:`featx.io.discovery.printable_name`),
    plus ``source_path_b64`` / ``source_key_b64`` (their exact bytes) for names that are not UTF-8.

    Example:
        >>> source_metadata(ImageSource("/data/a.png", "a.png"))
        {'source_path': '/data/a.png', 'source_key': 'a.png'}
    """
    fields = {"source_path": printable_name(source.path), "source_key": printable_name(source.key)}
    for name, value in (("source_path_b64", source.path), ("source_key_b64", source.key)):
        raw = name_bytes(value)
        if raw is not None:
            fields[name] = raw
    return fields


def _same_source(metadata: dict[str, str], source: ImageSource) -> bool:
    """Whether a feature file's metadata names ``source`` (or names no source at all)."""
    if "source_path" not in metadata:
        return True
    recorded = decode_name(metadata["source_path"], metadata.get("source_path_b64"))
    return recorded == source.path or os.path.realpath(recorded) == os.path.realpath(source.path)


def record_source(record: ManifestRecord) -> ImageSource:
    """The image a manifest record names, with its exact path and key (see :func:`manifest_record`)."""
    return ImageSource(
        decode_name(str(record["source"]), record.get("source_b64")),
        decode_name(str(record["path"]), record.get("path_b64")),
    )


_NO_LIMIT = 1 << 62  # a pixel limit no image header reaches


@dataclass
class RunContext:
    """What planning, computing and writing share in one run.

    Attributes:
        output: the output folder (absolute).
        resume: skip up-to-date outputs.
        max_pixels: pixel limit per image.
        taps: the extractor's taps, in depth order.
        min_size: the smallest image side the deepest tap accepts.
        common: :func:`common_metadata` of the run.
        alpha: alpha mode of the decoder.
    """

    output: Path
    resume: bool
    max_pixels: Optional[int]
    taps: tuple[str, ...]
    min_size: int
    common: dict[str, str]
    alpha: str = "error"

    def metadata(self, source: ImageSource, stat: tuple[int, int], size: tuple[int, int]) -> dict[str, str]:
        """The full metadata of one image's feature file (``stat`` is ``(bytes, mtime_ns)``, ``size`` ``(H, W)``)."""
        return {
            **self.common,
            **source_metadata(source),
            "source_bytes": str(stat[0]),
            "source_mtime_ns": str(stat[1]),
            "source_height": str(size[0]),
            "source_width": str(size[1]),
        }


@dataclass
class ImagePlan:
    """The plan for one image: ``state`` is ``"todo"``, ``"done"`` (up to date), ``"error"``, or
    ``"ignored"`` (not a regular file, such as a FIFO named ``x.png``: never opened, not a failure).

    Attributes:
        state: what the run does with the image.
        size: stored ``(H, W)`` (``None`` for errors).
        reason: why the image fails (``state == "error"``) or is ignored.
        stat: ``(bytes, mtime_ns)`` of the source file.
        shapes: per-tap shapes of an up-to-date output.
        kept: an error's existing output that stays valid (named in its manifest line as ``kept``).
    """

    state: str
    size: Optional[tuple[int, int]] = None
    reason: str = ""
    stat: tuple[int, int] = (0, 0)
    shapes: dict[str, list[int]] = field(default_factory=dict)
    kept: Optional[str] = None


def read_existing(path: Path) -> Optional[tuple[dict[str, str], dict[str, list[int]]]]:
    """Metadata and tensor shapes of an existing output, or ``None`` if absent or invalid."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            shapes = {name: list(handle.get_slice(name).get_shape()) for name in handle.keys()}
            return dict(handle.metadata() or {}), shapes
    except Exception:  # missing, truncated or foreign file: not done
        return None


def _file_kind(mode: int) -> str:
    kinds = [
        (stat_module.S_ISFIFO, "a FIFO"),
        (stat_module.S_ISSOCK, "a socket"),
        (stat_module.S_ISCHR, "a character device"),
        (stat_module.S_ISBLK, "a block device"),
    ]
    return next((name for test, name in kinds if test(mode)), "not a file")


def plan_image(source: ImageSource, ctx: RunContext) -> ImagePlan:
    """Plan one image from its file status, its existing output (with ``resume``) and its header."""
    if source.problem:
        return ImagePlan("error", reason=source.problem)
    try:
        info = os.stat(source.path)
    except FileNotFoundError:
        return ImagePlan("error", reason="file not found")
    except OSError as error:
        return ImagePlan("error", reason=f"cannot read ({error.strerror})")
    if not stat_module.S_ISREG(info.st_mode):
        if stat_module.S_ISDIR(info.st_mode):
            return ImagePlan("error", reason="is a folder, not an image file")
        return ImagePlan("ignored", reason=f"not a regular file ({_file_kind(info.st_mode)}); not read")
    stat = (info.st_size, info.st_mtime_ns)
    try:
        # the header rules of the decoder (alpha, TIFF channels, pixel limit), checked for finished
        # outputs too: an image extracted under --alpha drop or a higher --max-pixels fails now as
        # it would if computed now; and a dry run fails what the real run fails
        height, width = probe_image(source.path, alpha=ctx.alpha, max_pixels=ctx.max_pixels)
    except ImageDecodeError as error:
        return _despite_limit(source, ctx, stat, error.reason)
    if min(height, width) < ctx.min_size:
        return ImagePlan(
            "error",
            reason=f"image is {height}x{width} (HxW), smaller than the {ctx.min_size}x{ctx.min_size} "
            f"minimum for tap {ctx.taps[-1]!r}",
        )
    size = (height, width)
    existing = read_existing(feature_path(ctx.output, source.key))
    if existing is not None:
        metadata, shapes = existing
        if not _same_source(metadata, source):  # never replace a file made from another source
            other = metadata["source_path"]
            name = printable_name(feature_path(".", source.key).as_posix())
            return ImagePlan(
                "error",
                reason=f"its output {name} was made from another image ({other}) and is not replaced; "
                "move that file away, or write to another output folder",
            )
        if ctx.resume and metadata == ctx.metadata(source, stat, size) and set(shapes) == set(ctx.taps):
            return ImagePlan("done", size=size, stat=stat, shapes=shapes)
    return ImagePlan("todo", size=size, stat=stat)


def _despite_limit(source: ImageSource, ctx: RunContext, stat: tuple[int, int], reason: str) -> ImagePlan:
    """The plan of an image the decoder's header rules refuse (``reason``). One refused only by a
    lower ``max_pixels`` whose output of the same features exists keeps it: ``"done"`` with
    ``resume``, else an error that names the output as ``kept`` (the limit never changes features)."""
    refused = ImagePlan("error", reason=reason)
    if ctx.max_pixels is None:
        return refused
    try:
        size = probe_image(source.path, alpha=ctx.alpha, max_pixels=_NO_LIMIT)
    except ImageDecodeError:
        return refused  # refused for another reason too (alpha, channels, a corrupt header)
    existing = read_existing(feature_path(ctx.output, source.key))
    if existing is None or existing[0] != ctx.metadata(source, stat, size) or set(existing[1]) != set(ctx.taps):
        return refused
    if ctx.resume:
        return ImagePlan("done", size=size, stat=stat, shapes=existing[1])
    kept = printable_name(feature_path(".", source.key).as_posix())
    return ImagePlan("error", reason=f"{reason}; its previous output is kept", kept=kept)


def remove_failed_output(output: Path, source: ImageSource) -> Optional[str]:
    """Delete the existing output of an image that failed in this run, if that image made it.

    Only a valid feature file whose ``source_path`` is this image is removed; anything else at that
    path (a file made from another source, a corrupt or foreign file) is left alone.

    Returns:
        The removed file's path relative to ``output`` (POSIX), or ``None`` if nothing was removed.
    """
    path = feature_path(output, source.key)
    existing = read_existing(path)
    if existing is None or "source_path" not in existing[0] or not _same_source(existing[0], source):
        return None  # nothing there, or not a file this image made: never touched
    try:
        os.unlink(path)
    except OSError:
        return None
    return printable_name(feature_path(".", source.key).as_posix())


def plan_all(sources: list[ImageSource], ctx: RunContext, dist: DistContext, bar_enabled: bool) -> list[ImagePlan]:
    """Each rank plans every ``world``-th image; the plans are shared so all ranks agree on batches."""
    mine = range(dist.rank, len(sources), dist.world)
    bar = None
    if bar_enabled:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(mine), desc="scan", unit="img", leave=False, dynamic_ncols=True)
    local = []
    for index in mine:
        local.append(plan_image(sources[index], ctx))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    plans: list[Optional[ImagePlan]] = [None] * len(sources)
    for rank, part in enumerate(dist.gather(local)):
        for offset, plan in enumerate(part):
            plans[rank + offset * dist.world] = plan
    complete = [plan for plan in plans if plan is not None]
    if len(complete) != len(sources):
        raise ExtractionError(f"the ranks planned {len(complete)} of {len(sources)} images")
    return complete


def manifest_record(source: ImageSource, status: str, **extra: Any) -> ManifestRecord:
    """A manifest line for ``source``: ``path`` (its key), ``source``, ``status``, ``output`` unless
    an error, plus ``extra`` (``shapes`` or ``error``).

    Names are valid UTF-8 (:func:`featx.io.discovery.printable_name`); a key or path that is not
    UTF-8 also has its exact bytes in ``path_b64`` / ``source_b64`` (the output file's name is the
    key's bytes followed by ``.safetensors``); :func:`record_source` reads them back.

    Example:
        >>> manifest_record(ImageSource("/data/a.png", "a.png"), "ok")
        {'path': 'a.png', 'source': '/data/a.png', 'status': 'ok', 'output': 'a.png.safetensors'}
    """
    record: ManifestRecord = {"path": printable_name(source.key), "source": printable_name(source.path)}
    for name, value in (("path_b64", source.key), ("source_b64", source.path)):
        raw = name_bytes(value)
        if raw is not None:
            record[name] = raw
    record["status"] = status
    if status in ("ok", "skipped"):
        record["output"] = printable_name(feature_path(".", source.key).as_posix())
    record.update(extra)
    return record
