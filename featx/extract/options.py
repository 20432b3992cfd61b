"""The settings of one extraction run: :class:`ExtractOptions`, and the named choices its fields take.

Nothing here imports torch (or numpy, or Pillow): the command line builds its options from these
constants when it is imported, and ``featx --help`` stays instant.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Union

from featx._checks import check_bool, check_choice, check_int
from featx._choices import ALPHA_MODES
from featx.errors import FeatxTypeError

if TYPE_CHECKING:
    from featx.weights import WeightsSpec

__all__ = ["DEFAULT_TAPS", "DESCRIPTORS", "DTYPES", "ExtractOptions", "ManifestRecord", "PathLike"]

PathLike = Union[str, "os.PathLike[str]"]

ManifestRecord = dict[str, Any]
"""One ``manifest.jsonl`` line: ``path``, ``source``, ``status`` and ``output``/``shapes`` or ``error``."""

DESCRIPTORS: tuple[str, ...] = ("none", "gap", "gmp", "gram")
"""What is stored per tap (:attr:`ExtractOptions.reduce`, CLI ``--reduce``): the map ``(C, H, W)``,
its global average ``(C,)``, global max ``(C,)``, or Gram matrix ``(C, C)`` (``F F^T / (C H W)``,
:func:`featx.losses.functional.gram_matrix`). Not to be confused with the *loss* reduction
(:data:`featx.REDUCTIONS`: ``"mean"``, ``"sum"``, ``"none"`` over a batch of loss values)."""

DTYPES: tuple[str, ...] = ("float32", "bfloat16", "float16")
"""Compute dtypes (bf16/fp16 run under autocast); feature files store tensors in this dtype."""

DEFAULT_TAPS = "relu1_1,relu2_1,relu3_1"
"""Taps extracted from a VGG when none are given: the layers of the ``ttsr_lte`` preset, named so
that they exist in every VGG (the preset itself is defined for vgg19 only). Other families have no
default: their taps must be named (``featx layers ARCH`` lists them)."""


def _check_optional_path(name: str, value: object) -> None:
    if value is not None and not isinstance(value, (str, os.PathLike)):
        raise FeatxTypeError(f"{name} must be a path (str or os.PathLike) or None, got {type(value).__name__}")


@dataclass(frozen=True)
class ExtractOptions:
    """How :func:`featx.extract.extract_features` runs; every field has a default.

    The options are checked when the object is built (``ValueError`` for a bad value, ``TypeError``
    for a wrong type); names the extractor resolves (``arch``, ``taps``, ``preset``, ``weights``) and
    ``device`` are checked when the run builds its model, with their own messages. Derive variants
    with :func:`dataclasses.replace`.

    Example:
        >>> import dataclasses
        >>> options = ExtractOptions(taps="relu1_1", reduce="gap", num_workers=0)
        >>> dataclasses.replace(options, dtype="bfloat16").dtype
        'bfloat16'
        >>> ExtractOptions(reduce="mean")
        Traceback (most recent call last):
        ...
        featx.errors.FeatxValueError: unknown reduce 'mean'. Valid choices: 'none', 'gap', 'gmp', 'gram'
    """

    files_from: Optional[PathLike] = None
    """A text file listing images, one per line (added to the inputs); see :func:`featx.io.discovery.read_file_list`."""
    recursive: bool = True
    """Walk subfolders of folder inputs."""
    arch: str = "vgg19"
    """Any architecture of :func:`featx.backbones.catalog.architectures`, of any family: VGG
    (``vgg11`` ... ``vgg19_bn``), AlexNet (``alexnet``), SqueezeNet (``squeezenet1_1``), DINOv2
    (``dinov2_vits14``, ``dinov2_vitb14``) and the families added to the catalog (ignored with ``preset``)."""
    taps: Union[str, Sequence[str], None] = None
    """Tap name, ``"a,b"``, a sequence of names or a tap-set name the family knows (ignored with
    ``preset``). ``None``: :data:`DEFAULT_TAPS` for a VGG (every VGG has those layers); other families
    have no default and raise ``ValueError`` listing their taps. A sequence is stored as a tuple."""
    preset: Optional[str] = None
    """Build the extractor a :data:`featx.presets.PRESETS` entry describes: its arch (of any family),
    taps, pooling and extractor options."""
    weights: WeightsSpec = "DEFAULT"
    """As for the family's extractor (e.g. :class:`featx.backbones.vgg.features.VGGFeatures`); ``None``
    gives random weights from a fixed seed (0), so reruns and ranks agree (a
    :class:`~featx.errors.RandomWeightsWarning` is issued)."""
    reduce: str = "none"
    """Per-tap descriptor, one of :data:`DESCRIPTORS` (see :func:`featx.extract.reduce_features`)."""
    dtype: str = "float32"
    """One of :data:`DTYPES`: autocast dtype of the forward pass and dtype of the stored tensors."""
    batch_size: int = 8
    """Images per forward pass (only images of equal size share a batch); at least 1."""
    num_workers: int = 2
    """DataLoader worker processes decoding images (0: decode in the calling process)."""
    device: str = "auto"
    """``"auto"`` (``cuda:LOCAL_RANK`` if available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``..."""
    resume: bool = True
    """Skip images whose output exists with matching metadata; ``False`` recomputes all."""
    add_inputs: bool = False
    """Let this run's inputs join an output folder made from other inputs: their keys get a prefix of
    their own (the input root's folder name, made unique) recorded in ``OUTPUT/featx-owner.json``.
    Without it such a run is refused (:class:`~featx.errors.OutputOwnedError`); see
    :mod:`featx.extract.owner`."""
    alpha: str = "error"
    """One of :data:`featx.io.images.ALPHA_MODES`: refuse images with an alpha channel, or drop alpha."""
    max_pixels: Optional[int] = None
    """Refuse images with more pixels (default ``PIL.Image.MAX_IMAGE_PIXELS``, about 89.5 MP; a
    larger value lets Pillow open such files, e.g. ``100_000_000`` for a trusted 100-megapixel scan)."""
    max_memory: Union[int, str, None] = None
    """Memory budget of the run, bytes or a size such as ``"4GiB"``: batches hold as many images as
    fit (at most ``batch_size``) and an image whose single pass does not fit is tiled (``tile``).
    Under torchrun it is the budget of each node, shared equally by the node's ranks.
    ``None``: :data:`featx.extract.budget.DEFAULT_MEMORY_SHARE` of the memory available at the
    start (free device memory on CUDA), which makes the batching depend on the machine's load:
    give an explicit budget for batches that are the same on every run."""
    tile: Union[str, int] = "auto"
    """``"auto"``: tile images whose single pass exceeds the budget; ``"off"``: never tile; a
    number of pixels: tile images larger than that, with tiles of that side (a multiple of the
    deepest tap's stride). Tiled features equal one untiled pass (:func:`featx.extract.tiling.tiled_features`).
    Tiling needs the family's tile geometry (VGG's); for another family ``"auto"`` records an image
    that does not fit the budget as that image's error, and a number of pixels is refused before
    compute (:mod:`featx.extract.family_budget`)."""
    fsync: bool = True
    """fsync each feature file before its atomic rename (durable across power loss). ``False`` keeps
    the atomic rename (a killed run never leaves partial files); the resume check recomputes files
    whose size does not match their header."""
    direct_io: bool = True
    """Write feature files from 1 MiB up with ``O_DIRECT`` where the system allows it (see
    :mod:`featx.io.atomic`); ``False`` writes through the page cache. Same bytes either way."""
    dry_run: bool = False
    """Plan only: nothing is written; :attr:`ExtractSummary.planned` lists the actions."""
    progress: bool = False
    """Show a tqdm progress bar on stderr (rank 0 only)."""
    on_record: Optional[Callable[[ManifestRecord], None]] = None
    """Called with each manifest record once it is final, from the writer thread (in write order)."""

    def __post_init__(self) -> None:
        _check_optional_path("files_from", self.files_from)
        check_bool("recursive", self.recursive)
        if not isinstance(self.arch, str):
            raise FeatxTypeError(f"arch must be a string such as 'vgg19', got {type(self.arch).__name__}")
        if self.taps is None or isinstance(self.taps, str):
            pass
        elif isinstance(self.taps, Sequence) and all(isinstance(tap, str) for tap in self.taps):
            object.__setattr__(self, "taps", tuple(self.taps))
        else:
            raise FeatxTypeError(f"taps must be a string or a sequence of tap names, got {self.taps!r}")
        if self.preset is not None and not isinstance(self.preset, str):
            raise FeatxTypeError(f"preset must be a preset name or None, got {type(self.preset).__name__}")
        check_choice("reduce", self.reduce, DESCRIPTORS)
        check_choice("dtype", self.dtype, DTYPES)
        check_int("batch_size", self.batch_size, minimum=1)
        check_int("num_workers", self.num_workers, minimum=0)
        if not isinstance(self.device, str):
            raise FeatxTypeError(f"device must be a string such as 'auto', 'cpu' or 'cuda:0', got {self.device!r}")
        check_bool("resume", self.resume)
        check_bool("add_inputs", self.add_inputs)
        check_choice("alpha", self.alpha, ALPHA_MODES)
        check_int("max_pixels", self.max_pixels, minimum=1, allow_none=True)
        if self.max_memory is not None:
            from featx.extract.budget import parse_size

            parse_size(self.max_memory)
        if not (isinstance(self.tile, str) and self.tile in ("auto", "off")):
            if isinstance(self.tile, str) and self.tile.isdigit():
                object.__setattr__(self, "tile", int(self.tile))
            elif not isinstance(self.tile, int) or isinstance(self.tile, bool):
                raise FeatxTypeError(f"tile must be 'auto', 'off' or a number of pixels, got {self.tile!r}")
            check_int("tile", self.tile)
        for name in ("fsync", "direct_io", "dry_run", "progress"):
            check_bool(name, getattr(self, name))
        if self.on_record is not None and not callable(self.on_record):
            raise FeatxTypeError(f"on_record must be callable or None, got {type(self.on_record).__name__}")
