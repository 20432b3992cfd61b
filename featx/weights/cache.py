"""The features-only cache: every backbone tensor of a ``.pth`` file (its head left out) as safetensors,
checked before use; its values were checked once, when it was written, and the index remembers that
by the cache file's sha256 and size."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Optional, Union

import safetensors
import safetensors.torch
from torch import Tensor

from featx.errors import WeightsLoadError
from featx.io.atomic import write_atomic
from featx.weights.checkpoint import sha256_file
from featx.weights.index import read_index, recorded_sha256, remember_sha256, stat_key, values_checked
from featx.weights.locations import cache_dir
from featx.weights.matching import KeyLayout, Wanted, backbone_tensors, check_values, safetensors_view, select_tensors

__all__ = ["CACHE_VERSION", "cache_file", "clear_cache", "read_cached", "write_cache"]

CACHE_VERSION = "1"


def cache_file(source: Path, sha256: str, layout: KeyLayout) -> Path:
    """Where the features cache of the file ``source`` with this sha256 goes (one per family layout)."""
    return cache_dir() / f"{source.stem}-{sha256[:16]}-{layout.cache_tag}.safetensors"


def _trusted_sha256(cache: Path, stat: os.stat_result) -> Optional[str]:
    """The sha256 of a cache file featx wrote (the index holds it, written with it), else ``None``; a
    file whose stat key changed since is hashed again and must still match."""
    recorded = recorded_sha256(cache, stat)
    if recorded is not None:
        return recorded
    entry = read_index().get(str(cache), {})
    recorded = entry.get("sha256") if isinstance(entry, dict) else None
    if not isinstance(recorded, str) or sha256_file(cache) != recorded:
        return None
    kept = {key: value for key, value in entry.items() if key not in (*stat_key(stat), "sha256")}
    remember_sha256(cache, stat, recorded, **kept)  # same content (a copy or a restore): trust it again
    return recorded


def read_cached(
    cache: Path, sha256: str, wanted: Wanted, where: str, arch: str, layout: KeyLayout
) -> Union[dict[str, Tensor], None]:
    """Selected tensors from a valid features cache, or ``None`` when there is none (or it is stale,
    corrupt, or not the file featx wrote).

    A cache featx wrote holds values it checked (finite floats) before writing, and the index says
    so (:func:`~featx.weights.index.values_checked`, keyed on the cache file's sha256 and size);
    those are not checked again, which makes a cached load cheap. Without that record (an index
    from an older featx, or an edited one) the selected values are checked at this load.
    """
    if not cache.is_file():
        return None
    stat = cache.stat()
    cache_sha256 = _trusted_sha256(cache, stat)
    if cache_sha256 is None:
        return None
    checked = values_checked(cache_sha256, stat.st_size, layout.cache_tag)
    try:
        handle_context = safetensors.safe_open(cache, framework="pt")
    except (OSError, safetensors.SafetensorError):
        return None
    with handle_context as handle:
        metadata = handle.metadata() or {}
        if metadata.get("sha256") != sha256 or metadata.get("featx_cache_version") != CACHE_VERSION:
            return None
        return select_tensors(safetensors_view(handle), wanted, where, arch, layout, check=not checked)


def write_cache(
    cache: Path, state_dict: Mapping[str, Tensor], source: Path, sha256: str, layout: KeyLayout, *, checked: bool = False
) -> None:
    """Save every backbone tensor (so any tap depth can use it) with provenance metadata, and record
    the cache file's own sha256 in the index (checked before each use), with the fact that its
    values are checked (keyed on its sha256 and size).

    The values are checked here (finite floats) unless ``checked`` says the caller just did; a
    checkpoint that fails the check gets no cache, so each load reads and checks the original again.
    """
    features = {key: value.contiguous() for key, value in backbone_tensors(state_dict, layout).items()}
    if not features:
        return
    if not checked:
        try:
            check_values(features, str(source))
        except WeightsLoadError:  # non-finite values in layers this load did not need: no cache, no warning
            return
    metadata = {"source": source.name, "sha256": sha256, "featx_cache_version": CACHE_VERSION}
    data = safetensors.torch.save(features, metadata=metadata)
    cache.parent.mkdir(parents=True, exist_ok=True)
    # No fsync: a cache file cut short by a power loss fails its hash check and is rebuilt.
    write_atomic(cache, [data], fsync=False)
    remember_sha256(
        cache,
        cache.stat(),
        hashlib.sha256(data).hexdigest(),
        checked=[layout.cache_tag],
        kind="features-cache",
        source_sha256=sha256,
    )


def clear_cache() -> int:
    """Delete the features cache and the sha256 index under ``featx_home()/cache``.

    Returns:
        The number of files removed.
    """
    removed = 0
    directory = cache_dir()
    if directory.is_dir():
        for entry in directory.iterdir():
            if entry.is_file() and (entry.name == "index.json" or entry.name.endswith(".safetensors")):
                entry.unlink()
                removed += 1
    return removed
