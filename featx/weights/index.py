"""The sha256 index (``featx_home()/cache/index.json``): file hashes keyed on size, mtime, ctime, inode and device."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Optional

from featx.io.atomic import write_atomic
from featx.weights.checkpoint import sha256_file
from featx.weights.locations import cache_dir

__all__ = ["INDEX_VERSION", "indexed_sha256", "read_index", "recorded_sha256", "remember_sha256", "stat_key"]

INDEX_VERSION = 2  # version 1 keyed on size and mtime only; its entries are ignored (files are re-hashed)


def stat_key(stat: os.stat_result) -> dict[str, int]:
    """What identifies one version of a file: a replaced or rewritten file differs in at least one."""
    return {
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "ctime_ns": stat.st_ctime_ns,
        "inode": stat.st_ino,
        "device": stat.st_dev,
    }


def read_index() -> dict[str, dict[str, Any]]:
    """Resolved path -> entry (stat key, ``sha256`` and extras); empty when missing, corrupt or of another version."""
    try:
        data = json.loads((cache_dir() / "index.json").read_text())
        return dict(data["files"]) if data.get("version") == INDEX_VERSION else {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def remember_sha256(path: Path, stat: os.stat_result, sha256: str, **extra: Any) -> None:
    """Record ``path`` (with its stat key) -> sha256 in ``cache/index.json``, dropping vanished files."""
    entries = {key: value for key, value in read_index().items() if Path(key).is_file()}
    entries[str(path)] = {**stat_key(stat), "sha256": sha256, **extra}
    text = json.dumps({"version": INDEX_VERSION, "files": entries}, indent=1, sort_keys=True)
    cache_dir().mkdir(parents=True, exist_ok=True)
    write_atomic(cache_dir() / "index.json", [text.encode()])


def recorded_sha256(path: Path, stat: os.stat_result) -> Optional[str]:
    """The sha256 the index holds for this very version of ``path`` (same stat key), else ``None``."""
    entry = read_index().get(str(path), {})
    if not isinstance(entry, dict) or any(entry.get(key) != value for key, value in stat_key(stat).items()):
        return None
    sha256 = entry.get("sha256")
    return sha256 if isinstance(sha256, str) and re.fullmatch(r"[0-9a-f]{64}", sha256) else None


def indexed_sha256(path: Path) -> tuple[str, bool]:
    """The file's sha256, from the index when its stat key is unchanged; ``(sha256, freshly_hashed)``."""
    recorded = recorded_sha256(path, path.stat())
    if recorded is not None:
        return recorded, False
    return sha256_file(path), True
