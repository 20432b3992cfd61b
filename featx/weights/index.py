"""The index ``featx_home()/cache/index.json``: file hashes keyed on size, mtime, ctime, inode and
device, and which file contents had their values checked (keyed on full sha256 and size).

The index sits in ``FEATX_HOME``, a folder other people may write to: it is read without following a
symlink at its name (:func:`~featx.io.atomic.read_no_follow`) and replaced atomically
(:func:`~featx.io.atomic.write_atomic`). Two processes updating it at once can lose one's update;
that only costs a hash or a values check again, never a wrong answer.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Optional

from featx.io.atomic import read_no_follow, write_atomic
from featx.weights.checkpoint import sha256_file
from featx.weights.locations import cache_dir

__all__ = [
    "INDEX_VERSION",
    "indexed_sha256",
    "read_index",
    "recorded_sha256",
    "remember_sha256",
    "remember_values_checked",
    "stat_key",
    "values_checked",
]

INDEX_VERSION = 2  # version 1 keyed on size and mtime only; its entries are ignored (files are re-hashed)
_SHA256 = re.compile(r"[0-9a-f]{64}")


def stat_key(stat: os.stat_result) -> dict[str, int]:
    """What identifies one version of a file: a replaced or rewritten file differs in at least one."""
    return {
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "ctime_ns": stat.st_ctime_ns,
        "inode": stat.st_ino,
        "device": stat.st_dev,
    }


def _read_document() -> dict[str, dict[str, Any]]:
    """The index's sections ``files`` and ``checked``; empty when missing, corrupt, a symlink or of another version."""
    try:
        data = json.loads(read_no_follow(cache_dir() / "index.json"))
        if not isinstance(data, dict) or data.get("version") != INDEX_VERSION:
            return {"files": {}, "checked": {}}
        files, checked = data.get("files", {}), data.get("checked", {})
        return {
            "files": dict(files) if isinstance(files, dict) else {},
            "checked": dict(checked) if isinstance(checked, dict) else {},
        }
    except (OSError, ValueError, TypeError):
        return {"files": {}, "checked": {}}


def _write_document(files: dict[str, Any], checked: dict[str, Any]) -> None:
    """Write the index atomically, keeping only entries of files still there and value checks of
    contents some indexed file still has."""
    files = {key: value for key, value in files.items() if Path(key).is_file()}
    alive = {entry.get("sha256") for entry in files.values() if isinstance(entry, dict)}
    checked = {key: value for key, value in checked.items() if isinstance(value, dict) and value.get("sha256") in alive}
    text = json.dumps({"version": INDEX_VERSION, "files": files, "checked": checked}, indent=1, sort_keys=True)
    cache_dir().mkdir(parents=True, exist_ok=True)
    write_atomic(cache_dir() / "index.json", [text.encode()])


def read_index() -> dict[str, dict[str, Any]]:
    """Resolved path -> entry (stat key, ``sha256`` and extras); empty when missing, corrupt or of another version."""
    return _read_document()["files"]


def remember_sha256(path: Path, stat: os.stat_result, sha256: str, *, checked: Iterable[str] = (), **extra: Any) -> None:
    """Record ``path`` (with its stat key) -> sha256 in ``cache/index.json``, dropping vanished files.

    Args:
        path: the file (resolved).
        stat: its ``os.stat_result`` when it was hashed.
        sha256: its full sha256.
        checked: scopes whose values were checked in this content (see :func:`remember_values_checked`),
            recorded in the same write.
        **extra: more fields of the entry (``checkpoint``, ``verification``, ``kind``, ...).
    """
    document = _read_document()
    document["files"][str(path)] = {**stat_key(stat), "sha256": sha256, **extra}
    _add_checked(document["checked"], sha256, stat.st_size, checked)
    _write_document(document["files"], document["checked"])


def recorded_sha256(path: Path, stat: os.stat_result) -> Optional[str]:
    """The sha256 the index holds for this very version of ``path`` (same stat key), else ``None``."""
    entry = read_index().get(str(path), {})
    if not isinstance(entry, dict) or any(entry.get(key) != value for key, value in stat_key(stat).items()):
        return None
    sha256 = entry.get("sha256")
    return sha256 if isinstance(sha256, str) and _SHA256.fullmatch(sha256) else None


def indexed_sha256(path: Path) -> tuple[str, bool]:
    """The file's sha256, from the index when its stat key is unchanged; ``(sha256, freshly_hashed)``."""
    recorded = recorded_sha256(path, path.stat())
    if recorded is not None:
        return recorded, False
    return sha256_file(path), True


def _content_key(sha256: str, size: int) -> str:
    return f"{sha256}-{size}"


def _add_checked(checked: dict[str, Any], sha256: str, size: int, scopes: Iterable[str]) -> None:
    scopes = list(scopes)
    if not scopes:
        return
    record = checked.get(_content_key(sha256, size))
    before = _scopes_of(record, sha256, size)
    checked[_content_key(sha256, size)] = {"sha256": sha256, "size": size, "scopes": sorted({*before, *scopes})}


def _scopes_of(record: Any, sha256: str, size: int) -> tuple[str, ...]:
    """The scopes a ``checked`` record vouches for, when it is well formed and for exactly this
    sha256 and size; ``()`` otherwise (a record edited by hand vouches for nothing it does not say)."""
    if not isinstance(record, dict) or record.get("sha256") != sha256 or record.get("size") != size:
        return ()
    scopes = record.get("scopes")
    if not isinstance(scopes, list) or not all(isinstance(scope, str) for scope in scopes):
        return ()
    return tuple(scopes)


def values_checked(sha256: str, size: int, scope: str) -> bool:
    """Whether the content with this full sha256 and size had every tensor of ``scope`` checked
    (finite floats) by featx, as :func:`remember_values_checked` recorded.

    Args:
        sha256: the content's full sha256 (64 hex digits).
        size: its size in bytes.
        scope: which tensors: a key layout's ``cache_tag`` (``"features"`` for VGG and AlexNet).

    Returns:
        ``True`` only for a well-formed record of this sha256, size and scope.

    Example:
        >>> values_checked("0" * 64, 3, "features")  # nothing recorded
        False
    """
    if not (isinstance(sha256, str) and _SHA256.fullmatch(sha256)):
        return False
    record = _read_document()["checked"].get(_content_key(sha256, size))
    return scope in _scopes_of(record, sha256, size)


def remember_values_checked(sha256: str, size: int, scope: str) -> None:
    """Record that every tensor of ``scope`` in the content with this sha256 and size is a finite
    float. Kept while some file in the index has this sha256.

    Raises:
        OSError: the index cannot be written.
    """
    document = _read_document()
    _add_checked(document["checked"], sha256, size, [scope])
    _write_document(document["files"], document["checked"])
