"""What the registry records about one checkpoint (:class:`CheckpointInfo`) and the verification
states a file can reach (:class:`Verification`)."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Optional

from featx.errors import FeatxValueError

__all__ = ["IMAGENET_TRANSFORMS", "CheckpointInfo", "ShippedCopy", "Verification", "format_size"]

IMAGENET_TRANSFORMS = (
    "RGB in [0, 1], normalised with ImageNet mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225); "
    "torchvision's classification preset also resizes to 256 and centre-crops 224, which featx never does"
)
"""The input convention of the ImageNet checkpoints (featx applies it from ``input_range``)."""


class Verification(str, enum.Enum):
    """How far a file was checked against a known checkpoint.

    - ``SHA256``: its full sha256 equals the checkpoint's (the only state that counts as verified);
    - ``PREFIX``: its sha256 starts with the 8 hex digits torchvision puts in the file name, and no
      public source gives the full hash ("prefix-verified": 32 bits, which a forger can match);
    - ``MISMATCH``: its byte size or sha256 differs from the checkpoint's;
    - ``UNKNOWN``: there was nothing to compare with (a file of no known checkpoint, a state dict).

    The members are strings (``Verification.PREFIX == "prefix"``), as written in feature-file
    metadata and ``cache/index.json``.

    Example:
        >>> Verification("prefix") is Verification.PREFIX, str(Verification.SHA256)
        (True, 'sha256')
        >>> [state.verified for state in Verification]
        [True, None, False, None]
    """

    SHA256 = "sha256"
    PREFIX = "prefix"
    MISMATCH = "mismatch"
    UNKNOWN = "unknown"

    def __str__(self) -> str:
        return self.value

    @property
    def verified(self) -> Optional[bool]:
        """The yes/no view: ``True`` only for a full sha256 match, ``False`` for a mismatch, ``None``
        otherwise (a prefix match is not a verification)."""
        return {"sha256": True, "mismatch": False}.get(self.value)


@dataclass(frozen=True)
class ShippedCopy:
    """A copy of a checkpoint that a Python package ships inside itself.

    Attributes:
        module: the top-level import name (``"lpips"``); its folder is found with
            :func:`importlib.util.find_spec`, without importing it.
        path: the file inside that folder (``"weights/v0.1/alex.pth"``).
        requirement: what to install to get it (``"lpips"``).
    """

    module: str
    path: str
    requirement: str


@dataclass(frozen=True, kw_only=True)
class CheckpointInfo:
    """One checkpoint featx knows: where it is published, how to check it, what it holds.

    Attributes:
        kind: ``"backbone"``, ``"lpips"`` or ``"dists"`` (see :data:`~featx.weights.registry.KINDS`).
        arch: the architecture it belongs to (``"vgg19"``, ``"resnet50"``, ``"dinov2_vits14"``).
        file_name: the name featx looks for in :func:`~featx.weights.search_dirs`.
        url: where the file is published (only ``featx weights download`` opens it).
        sha256: the full sha256 (64 hex digits), or the 8 hex digits of torchvision's file name
            where no public source gives more (a "prefix-only" entry).
        size: the file's size in bytes, ``None`` where no public source gives it.
        source: what the file is, in words.
        tag: the checkpoint's tag within its arch (torchvision's ``"IMAGENET1K_V1"``).
        head: state-dict key prefixes of the classification head (``("fc.",)`` for ResNet); a
            features-only extractor never loads them.
        num_params: parameters of the full model, as torchvision documents them.
        acc1: ImageNet-1K top-1 accuracy (%) as torchvision documents it.
        acc5: ImageNet-1K top-5 accuracy (%).
        transforms: the input convention the weights were trained with.
        shipped: a package that ships an identical copy (the metrics' learned layers).

    Example:
        >>> info = CheckpointInfo(kind="backbone", arch="x", file_name="x-0123abcd.pth", url="u",
        ...                       sha256="0123abcd", size=None, source="s")
        >>> info.full_sha256 is None, info.verification
        (True, <Verification.PREFIX: 'prefix'>)
    """

    kind: str
    arch: str
    file_name: str
    url: str
    sha256: str
    size: Optional[int]
    source: str
    tag: str = "IMAGENET1K_V1"
    head: tuple[str, ...] = ()
    num_params: Optional[int] = None
    acc1: Optional[float] = None
    acc5: Optional[float] = None
    transforms: str = IMAGENET_TRANSFORMS
    shipped: Optional[ShippedCopy] = None

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[0-9a-f]{8}|[0-9a-f]{64}", self.sha256):
            raise FeatxValueError(f"{self.file_name}: sha256 must be 8 or 64 lowercase hex digits, got {self.sha256!r}")

    @property
    def full_sha256(self) -> Optional[str]:
        """The full sha256, or ``None`` for a prefix-only entry."""
        return self.sha256 if len(self.sha256) == 64 else None

    @property
    def verification(self) -> Verification:
        """The best a matching file can reach: ``SHA256``, or ``PREFIX`` for a prefix-only entry."""
        return Verification.SHA256 if self.full_sha256 is not None else Verification.PREFIX


def format_size(size: Optional[int]) -> str:
    """A byte count for people: KiB under 1 MiB, MiB under 1 GiB, else GiB; ``"?"`` for ``None``.

    Example:
        >>> format_size(6009), format_size(574_673_361), format_size(None)
        ('5.9 KiB', '548.1 MiB', '?')
    """
    if size is None:
        return "?"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size / 2**10:.1f} KiB"
