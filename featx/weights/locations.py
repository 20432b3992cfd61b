"""Where checkpoint files live: ``featx_home()``, the directories searched, the copies installed
packages ship (found by sha256), and the not-found error."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Optional, Union

import torch

from featx.errors import MissingWeights, WeightsNotFoundError
from featx.weights.checkpoint import sha256_file
from featx.weights.missing import missing_message
from featx.weights.registry import KnownCheckpoint, member_of

__all__ = [
    "cache_dir",
    "featx_home",
    "find",
    "locate",
    "missing_checkpoint_error",
    "missing_entry",
    "package_dir",
    "search_dirs",
    "shipped_copy",
]


def featx_home() -> Path:
    """featx's data directory: ``$FEATX_HOME`` or ``~/.cache/featx``.

    Example:
        >>> isinstance(featx_home(), Path)
        True
    """
    return Path(os.environ.get("FEATX_HOME") or "~/.cache/featx").expanduser()


def search_dirs() -> tuple[Path, ...]:
    """Directories searched for a known checkpoint's file name, in order.

    ``featx_home()``, then torch's hub cache ``torch.hub.get_dir()/checkpoints`` (honours
    ``$TORCH_HOME``; where torchvision and ``torch.hub`` keep the files they download). After
    them, :func:`find` looks for the copy an installed package ships (:func:`shipped_copy`).
    """
    return (featx_home(), Path(torch.hub.get_dir()) / "checkpoints")


def cache_dir() -> Path:
    return featx_home() / "cache"


def package_dir(module: str) -> Optional[Path]:
    """The folder of an installed top-level package, found without importing it (``None`` if it is
    not installed).

    Example:
        >>> package_dir("featx").name, package_dir("no_such_package_here")
        ('featx', None)
    """
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):  # a broken installation: as if it were not there
        return None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    return Path(locations[0]) if locations else None


def shipped_copy(member: KnownCheckpoint) -> Optional[Path]:
    """The copy of ``member`` an installed package ships (the ``lpips`` package's v0.1 linear
    layers, ``dists-pytorch``'s alpha/beta), if it is there and has the checkpoint's size and full
    sha256; else ``None``. Nothing is copied and the package is not imported.

    Example:
        >>> from featx.weights.registry import VGGWeights
        >>> shipped_copy(VGGWeights.VGG19_IMAGENET1K_V1) is None  # no package ships a backbone
        True
    """
    shipped, full = member.shipped, member.full_sha256
    if shipped is None or full is None:
        return None
    folder = package_dir(shipped.module)
    if folder is None:
        return None
    candidate = folder / shipped.path
    try:
        if not candidate.is_file() or (member.size is not None and candidate.stat().st_size != member.size):
            return None
        return candidate if sha256_file(candidate) == full else None  # a few kB: hashed at every lookup
    except OSError:
        return None


def find(name: Union[str, KnownCheckpoint]) -> Optional[Path]:
    """Where a known checkpoint is on disk, or ``None``.

    Its file name is looked up in :func:`search_dirs` (the first hit wins, and is checked when it is
    loaded), then the copy an installed package ships is used if its sha256 matches
    (:func:`shipped_copy`).

    Args:
        name: a registry member (:class:`VGGWeights`, :class:`MetricWeights`, ...), its name, an
            arch name (its default backbone) or torchvision's weights name.

    Raises:
        ValueError: unknown name (with the closest valid one).
    """
    member = member_of(name)
    for directory in search_dirs():
        candidate = directory / member.file_name
        if candidate.is_file():
            return candidate
    return shipped_copy(member)


def locate(name: Union[str, KnownCheckpoint]) -> Path:
    """Like :func:`find`, but a missing checkpoint raises.

    Raises:
        WeightsNotFoundError: the file is nowhere featx looks; the message says how to get it.
        ValueError: unknown name.
    """
    member = member_of(name)
    path = find(member)
    if path is None:
        raise missing_checkpoint_error(member, search_dirs())
    return path


def missing_entry(member: KnownCheckpoint, searched: Iterable[Path], *, argument: str = "weights") -> MissingWeights:
    """The record of a known checkpoint that is nowhere featx looks (see :class:`~featx.errors.MissingWeights`)."""
    shipped = member.shipped
    return MissingWeights(
        argument=argument,
        file_name=member.file_name,
        name=member.name,
        sha256=member.sha256,
        size=member.size,
        url=member.url,
        searched=tuple(searched),
        requirement=None if shipped is None else shipped.requirement,
    )


def missing_checkpoint_error(
    member: KnownCheckpoint, searched: Iterable[Path], *, argument: str = "weights"
) -> WeightsNotFoundError:
    """The error for a known checkpoint that is in none of ``searched`` (nor in an installed
    package): the file, its sha256 and size, the directories searched and the fixes (``argument``
    names the keyword that takes a path: ``weights``, ``lin_weights``, ``dists_weights``). The
    error's ``missing`` holds the record, for messages in a command line's words
    (:func:`~featx.weights.missing_message`)."""
    entry = missing_entry(member, searched, argument=argument)
    return WeightsNotFoundError(missing_message([entry]), path=member.file_name, searched=entry.searched, missing=[entry])
