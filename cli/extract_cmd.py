"""``featx extract``: folder feature extraction (a thin shell over :func:`featx.extract.extract_features`).

The options' choices come from the torch-free :mod:`featx.extract.options`; torch and featx's torch
modules are imported inside the command, so ``featx --help`` stays instant.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any, Optional

import click

from featx._choices import ALPHA_MODES
from featx.extract.distributed import env_rank
from featx.extract.options import DEFAULT_TAPS, DESCRIPTORS, DTYPES, ExtractOptions, ManifestRecord
from featx.io.discovery import printable_name

from .interrupt import exit_130_on_ctrl_c

EXIT_OK, EXIT_FAILED, EXIT_SETUP = 0, 1, 2


class RunError(click.ClickException):
    """The run started but could not finish (a manifest, summary or manifest part not written, the
    lock lost to another run, the writer failed, another error of the output folder): exit 1."""

    exit_code = EXIT_FAILED


class SetupError(click.ClickException):
    """The run could not start (missing input or weights, no images, unwritable output): exit 2."""

    exit_code = EXIT_SETUP


class _ForgivingStream:
    """A text stream that drops output once its reader is gone (``featx extract ... 2>&1 | head -2``):
    the run goes on and finishes its files. The first failed write points the file descriptor at
    ``os.devnull``, so the interpreter's own flush at exit stays quiet too."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.broken = False

    def write(self, text: str) -> int:
        if not self.broken:
            try:
                return int(self.stream.write(text))
            except (OSError, ValueError):
                self._break()
        return len(text)

    def flush(self) -> None:
        if not self.broken:
            try:
                self.stream.flush()
            except (OSError, ValueError):
                self._break()

    def _break(self) -> None:
        self.broken = True
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, self.stream.fileno())
            finally:
                os.close(devnull)
        except (OSError, ValueError, AttributeError):  # no file descriptor (a test's capture)
            pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


@contextlib.contextmanager
def _forgiving_streams() -> Iterator[None]:
    """Run with stdout and stderr as :class:`_ForgivingStream` (restored afterwards)."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _ForgivingStream(sys.stdout), _ForgivingStream(sys.stderr)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


def _err(message: str) -> None:
    """Print a line on stderr without breaking a progress bar."""
    from tqdm.auto import tqdm

    tqdm.write(message, file=sys.stderr)


def _split_paths(
    paths: tuple[str, ...], files_from: Optional[str], sample_images: Optional[str]
) -> tuple[list[str], str]:
    if sample_images is not None:
        if paths:
            raise click.UsageError("--sample-images OUT takes no INPUT/OUTPUT arguments")
        return [os.path.join(sample_images, "images")], os.path.join(sample_images, "features")
    if not paths:
        raise click.UsageError("missing arguments: featx extract INPUT... OUTPUT (or --sample-images OUT)")
    if len(paths) == 1 and files_from is None:
        raise click.UsageError(f"missing OUTPUT folder: got only {paths[0]!r}; usage: featx extract INPUT... OUTPUT")
    return list(paths[:-1]), paths[-1]


def _report_interrupt(interrupt: KeyboardInterrupt) -> None:
    """Ctrl-C: one line on stderr saying what was kept (the run's summary rides on the interrupt)."""
    summary = getattr(interrupt, "summary", None)
    if summary is None:
        _err("featx extract: interrupted (Ctrl-C); files already written are complete, rerun to finish")
    else:
        _err(
            f"featx extract: interrupted (Ctrl-C): {summary.ok} extracted, {summary.skipped} skipped, "
            f"{summary.errors} failed, {summary.pending} not reached; {summary.manifest} and summary.json "
            "list them; rerun the same command to finish"
        )


def _weights_arg(weights: str) -> Any:
    return None if weights.lower() == "random" else weights


def size_text(nbytes: int) -> str:
    """A byte count as people read it (binary units).

    Example:
        >>> size_text(512), size_text(3 * 2**20 + 2**19), size_text(5 * 2**40)
        ('512 B', '3.5 MiB', '5.0 TiB')
    """
    value, unit = float(nbytes), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            break
        value /= 1024
    return f"{nbytes} B" if unit == "B" else f"{value:.1f} {unit}"


def _print_plan(summary: Any) -> None:
    """Dry run: one line per image on stdout (extract, with its tiles / skip / error with reason),
    counts, tiled images and the disk the run would write on stderr."""
    for key, action in summary.planned:
        if action.startswith(("error: ", "ignored: ")):
            state, reason = action.split(": ", 1)
            click.echo(f"{state:<8} {printable_name(key)}: {reason}")
        elif action.startswith("extract (tiles"):
            click.echo(f"{'extract':<8} {printable_name(key)} {action[len('extract ') :]}")
        else:
            click.echo(f"{action.split(' ')[0]:<8} {printable_name(key)}")
    todo = summary.files - summary.skipped - summary.errors - len(summary.ignored)
    tiled = f" ({len(summary.tiled)} in tiles)" if summary.tiled else ""
    disk = f"; about {size_text(summary.disk_bytes)} of feature files to write" if summary.disk_bytes is not None else ""
    click.echo(
        f"dry run: {summary.files} images: {todo} to extract{tiled}, {summary.skipped} up to date, "
        f"{summary.errors} failing{disk}; nothing written",
        err=True,
    )


def rate(images: int, seconds: float) -> str:
    """The speed as people read it: ``img/s`` from one image a second up, ``s/img`` below.

    Example:
        >>> rate(96, 12.0), rate(2, 560.0), rate(0, 3.0)
        ('8.00 img/s', '280.0 s/img', '0 img/s')
    """
    if images <= 0 or seconds <= 0:
        return "0 img/s"
    if images >= seconds:
        return f"{images / seconds:.2f} img/s"
    return f"{seconds / images:.1f} s/img"


def _print_summary(summary: Any, random_weights: bool, sample_root: Optional[str], quiet: bool) -> None:
    if quiet:
        if summary.errors:
            _err(f"featx extract: {summary.errors} of {summary.files} images failed; see {summary.manifest}")
        return
    lines = [
        f"featx extract: {summary.files} images: {summary.ok} extracted, {summary.skipped} skipped (up to date), "
        f"{summary.errors} failed in {summary.seconds:.1f} s ({rate(summary.ok, summary.seconds)} extracted)"
    ]
    if summary.ignored:
        lines.append(f"  ignored:  {len(summary.ignored)} entries that are not regular files (listed in the manifest)")
    if summary.tiled:
        sides = sorted({tile for _, tile in summary.tiled})
        names = ", ".join(printable_name(key) for key, _ in summary.tiled[:3]) + (", ..." if len(summary.tiled) > 3 else "")
        lines.append(
            f"  tiled:    {len(summary.tiled)} images in tiles of {'/'.join(map(str, sides))} px ({names}; "
            "\"tile\" in the manifest)"
        )
    if sample_root is not None:
        lines.append(f"  images:   {os.path.abspath(os.path.join(sample_root, 'images'))} (scikit-image samples)")
    lines.append(f"  features: {summary.output} (one .safetensors per image, mirroring the input tree)")
    example = None if summary.example is None else printable_name(summary.example)
    if example is not None:
        shapes = ", ".join(f"{tap} {tuple(shape)}" for tap, shape in summary.shapes.items())
        lines.append(f"  shapes of {os.path.basename(example)}: {shapes}")
    lines.append(f"  manifest: {summary.manifest}")
    if summary.stale:
        lines.append(
            f"  stale:    {len(summary.stale)} outputs of images that are gone or not among these inputs "
            "(kept on disk, listed in summary.json)"
        )
    if example is not None:
        lines.append(f'  load in Python: tensors, metadata = featx.load_features("{example}")')
    if random_weights:
        lines.append("  NOTE: the weights were RANDOM (--weights random): these are not ImageNet VGG features.")
    click.echo("\n".join(lines))


@click.command(name="extract")
@click.argument("paths", nargs=-1, metavar="INPUT... OUTPUT")
@click.option("--files-from", type=click.Path(dir_okay=False), help="Text file listing images, one per line.")
@click.option("--recursive/--no-recursive", default=True, show_default=True, help="Walk subfolders.")
@click.option(
    "--arch",
    default=None,
    help="Backbone architecture of any family: vgg11 ... vgg19_bn, alexnet, squeezenet1_1, resnet18 ... "
    "resnet101, convnext_tiny/small/base, dinov2_vits14, dinov2_vitb14 (default vgg19; `featx layers ARCH` lists its taps).",
)
@click.option(
    "--taps",
    default=None,
    help=f"Preset name or comma-separated taps (default for VGG {DEFAULT_TAPS}: the ttsr_lte layers, valid for "
    "every VGG; required for other families).",
)
@click.option("--preset", default=None, help="Use a preset's arch, taps and pooling (e.g. gatys).")
@click.option(
    "--weights",
    default="DEFAULT",
    show_default=True,
    help="DEFAULT (ImageNet, local cache), a checkpoint name, a .pth/.safetensors path, or 'random'.",
)
@click.option(
    "--reduce",
    type=click.Choice(DESCRIPTORS),
    default="none",
    show_default=True,
    help="Per-tap descriptor: the map, global average/max, or Gram matrix.",
)
@click.option(
    "--dtype", type=click.Choice(DTYPES), default="float32", show_default=True, help="Compute and stored dtype."
)
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True, help="Images per forward pass.")
@click.option("--workers", type=click.IntRange(min=0), default=2, show_default=True, help="Decoding worker processes.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N.")
@click.option(
    "--resume/--overwrite", default=True, show_default=True, help="Skip up-to-date outputs, or recompute all."
)
@click.option(
    "--add-inputs",
    is_flag=True,
    help="Add these inputs to an OUTPUT made from other inputs, under keys prefixed with their folder name.",
)
@click.option(
    "--alpha", type=click.Choice(ALPHA_MODES), default="error", show_default=True, help="Refuse or drop alpha."
)
@click.option("--max-pixels", type=click.IntRange(min=1), default=None, help="Refuse images with more pixels.")
@click.option(
    "--max-memory",
    default=None,
    metavar="SIZE",
    help="Memory budget such as 4GiB (default: half the memory available at start); batches and tiles fit it.",
)
@click.option(
    "--tile",
    default="auto",
    show_default=True,
    metavar="auto|off|PIXELS",
    help="Tile images too large for the budget (auto), never (off), or those larger than PIXELS; exact features.",
)
@click.option("--fsync/--no-fsync", default=True, show_default=True, help="fsync each file before its atomic rename.")
@click.option(
    "--direct-io/--no-direct-io",
    default=True,
    show_default=True,
    help="Write feature files (from 1 MiB) bypassing the page cache where supported.",
)
@click.option(
    "--malloc-tuning/--no-malloc-tuning",
    default=True,
    show_default=True,
    help="Let glibc reuse large freed blocks (faster on CPU; see featx.allocator). Not applied with --max-memory.",
)
@click.option("--skip-errors", is_flag=True, help="Exit 0 even if some images failed.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or summary; failures are still reported.")
@click.option("--dry-run", is_flag=True, help="List what would be done; write nothing.")
@click.option(
    "--sample-images",
    type=click.Path(file_okay=False),
    default=None,
    metavar="OUT",
    help="Run on scikit-image sample pictures written to OUT/images; features to OUT/features.",
)
@exit_130_on_ctrl_c(_report_interrupt)
def extract(
    paths: tuple[str, ...],
    files_from: Optional[str],
    recursive: bool,
    arch: Optional[str],
    taps: Optional[str],
    preset: Optional[str],
    weights: str,
    reduce: str,
    dtype: str,
    batch_size: int,
    workers: int,
    device: str,
    resume: bool,
    add_inputs: bool,
    alpha: str,
    max_pixels: Optional[int],
    max_memory: Optional[str],
    tile: str,
    fsync: bool,
    direct_io: bool,
    malloc_tuning: bool,
    skip_errors: bool,
    quiet: bool,
    dry_run: bool,
    sample_images: Optional[str],
) -> None:
    """Extract VGG features of every image under INPUT... into OUTPUT.

    One OUTPUT/<path>.safetensors per image (mirroring the input tree), plus manifest.jsonl and
    summary.json. Reruns skip up-to-date outputs; bad images are reported and skipped.
    Under torchrun, ranks share the work. Exit codes: 0 all images done, 1 some failed
    (0 with --skip-errors) or the run stopped on an error writing OUTPUT (earlier outputs kept),
    2 usage or setup error (bad option, missing input or weights, no images, OUTPUT not
    writable, in use or on a filesystem without locks; nothing written), 130 Ctrl-C (summary
    written).

    \b
    Examples:
      featx extract --sample-images featx-demo --weights random
      featx extract images/ feats/ --taps relu1_1,relu2_1 --reduce gram
      torchrun --nproc-per-node 4 $(which featx) extract images/ feats/
    """
    """The body of :func:`extract`; errors become one line and an exit code (see docs/cli.md)."""
    import warnings

    with _forgiving_streams():
        inputs, output = _split_paths(paths, files_from, sample_images)
        if preset is not None and (taps is not None or arch is not None):
            raise click.UsageError("--preset sets the arch and taps itself; do not combine it with --arch or --taps")

        from featx.errors import (
            ExtractionError,
            OutputInUseError,
            OutputLockError,
            OutputNotWritableError,
            OutputWriteError,
            RandomWeightsWarning,
            WeightsNotFoundError,
        )
        from featx.extract import extract_features, prepare_sample_images

        # glibc keeps freed blocks for reuse; over images of mixed sizes the heap fragments and that
        # memory counts against --max-memory (peak PSS 1.45x a 1 GiB budget with tuning, 1.11x
        # without, benchmarks/bench_budget.py), so a run with a budget keeps glibc's defaults
        if malloc_tuning and max_memory is None:
            from featx.allocator import tune_malloc

            tune_malloc()
        weights_arg = _weights_arg(weights)
        rank0 = env_rank() == 0
        if weights_arg is None and rank0:
            _err(
                "featx: warning: --weights random: features come from randomly initialised weights (fixed seed 0), "
                "not from a trained network"
            )
        if sample_images is not None and not dry_run:
            try:
                prepare_sample_images(inputs[0])
            except TimeoutError as error:
                raise SetupError(str(error)) from None

        def on_record(record: ManifestRecord) -> None:
            if record["status"] == "error":
                _err(f"featx: error: {record['path']}: {record['error']}")
            elif record["status"] == "ignored":
                _err(f"featx: ignored: {record['path']}: {record['reason']}")

        try:
            options = ExtractOptions(
                files_from=files_from,
                recursive=recursive,
                arch=arch or "vgg19",
                taps=taps,  # None: DEFAULT_TAPS for VGG, other families name theirs
                preset=preset,
                weights=weights_arg,
                reduce=reduce,
                dtype=dtype,
                batch_size=batch_size,
                num_workers=workers,
                device=device,
                resume=resume,
                add_inputs=add_inputs,
                alpha=alpha,
                max_pixels=max_pixels,
                max_memory=max_memory,
                tile=tile,
                fsync=fsync,
                direct_io=direct_io,
                dry_run=dry_run,
                progress=not quiet,
                on_record=on_record,
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RandomWeightsWarning)  # reported above, once
                summary = extract_features(inputs, output, options)
        except WeightsNotFoundError as error:
            from featx.weights import missing_message

            flags = {"weights": "--weights PATH"}
            message = missing_message(error.missing, cli_flags=flags, command="featx extract") if error.missing else error
            raise SetupError(f"{message}\n  - or --weights random to try featx without trained weights") from None
        except (OutputWriteError, ExtractionError) as error:  # not a setup error: the run did work
            raise RunError(str(error)) from None
        except (
            FileNotFoundError, OutputNotWritableError, OutputInUseError, OutputLockError, ValueError, TypeError
        ) as error:  # fmt: skip
            raise SetupError(str(error)) from None
        except OSError as error:  # any other error of the filesystem: one line, earlier outputs kept
            raise RunError(f"{error}; files already written are complete, rerun to finish") from None

        if dry_run:
            if rank0:
                _print_plan(summary)
        elif rank0:
            _print_summary(summary, weights_arg is None, sample_images, quiet)
        if summary.errors and not skip_errors:
            sys.exit(EXIT_FAILED)
