"""Where checkpoint files live: ``featx_home()``, the directories searched, and the not-found error."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Union

import torch

from featx.errors import WeightsNotFoundError
from featx.weights.registry import KnownCheckpoint, member_of

__all__ = ["cache_dir", "featx_home", "find", "locate", "missing_checkpoint_error", "search_dirs"]


def featx_home() -> Path:
    """featx's data directory: ``$FEATX_HOME`` or ``~/.cache/featx``.

    Example:
        >>> isinstance(featx_home(), Path)
        True
    """
    return Path(os.environ.get("FEATX_HOME") or "~/.cache/featx").expanduser()


def search_dirs() -> tuple[Path, ...]:
    """Directories searched for a known checkpoint, in order.

    ``featx_home()``, then torch's hub cache ``torch.hub.get_dir()/checkpoints`` (honours
    ``$TORCH_HOME``; where torchvision keeps the files it downloads).
    """
    return (featx_home(), Path(torch.hub.get_dir()) / "checkpoints")


def cache_dir() -> Path:
    return featx_home() / "cache"


def find(name: Union[str, KnownCheckpoint]) -> Union[Path, None]:
    """Where a known checkpoint is on disk, or ``None``.

    Args:
        name: a :class:`VGGWeights` or :class:`MetricWeights` member, its name, or an arch name
            (its default backbone).

    Raises:
        ValueError: unknown name (with the closest valid one).
    """
    member = member_of(name)
    for directory in search_dirs():
        candidate = directory / member.file_name
        if candidate.is_file():
            return candidate
    return None


def locate(name: Union[str, KnownCheckpoint]) -> Path:
    """Like :func:`find`, but a missing checkpoint raises.

    Raises:
        WeightsNotFoundError: the file is in none of :func:`search_dirs`; the message says how to get it.
        ValueError: unknown name.
    """
    member = member_of(name)
    path = find(member)
    if path is None:
        raise missing_checkpoint_error(member, search_dirs())
    return path


def missing_checkpoint_error(
    member: KnownCheckpoint, searched: Iterable[Path], *, argument: str = "weights"
) -> WeightsNotFoundError:
    """The error for a known checkpoint that is in none of ``searched``: the file, its sha256, the
    directories searched and the two fixes (``argument`` names the keyword that takes a path:
    ``weights``, ``lin_weights``, ``dists_weights``)."""
    searched = tuple(searched)
    lines = "".join(f"\n  - {directory}" for directory in searched)
    message = (
        f"{member.name} weights not found: no file {member.file_name} (sha256 {member.sha256_prefix}...) "
        f"in any of the directories searched:{lines}\n"
        "featx never downloads while building a model. Fix it with one of:\n"
        f"  - featx weights download {member.name}   (one-time, hash-checked download from {member.url})\n"
        f"  - {argument}=PATH to a local copy (.pth, .pt or .safetensors), or copy {member.file_name} "
        "into one of the directories above"
    )
    return WeightsNotFoundError(message, path=member.file_name, searched=searched)
