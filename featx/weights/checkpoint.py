"""Reading checkpoint files safely (``weights_only=True``, safetensors) and hashing them."""

from __future__ import annotations

import hashlib
import pickle
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

import safetensors
import safetensors.torch
import torch
from torch import Tensor

from featx.errors import WeightsLoadError, WeightsNotFoundError
from featx.weights._common import CHUNK, PathLike

__all__ = ["read_checkpoint", "sha256_file"]


def sha256_file(path: PathLike) -> str:
    """Full sha256 hex digest of a file, read in 1 MiB chunks.

    Example:
        >>> import tempfile
        >>> with tempfile.NamedTemporaryFile() as f:
        ...     _ = f.write(b"abc"); f.flush()
        ...     sha256_file(f.name)[:16]
        'ba7816bf8f01cfea'
    """
    digest = hashlib.sha256()
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while size := handle.readinto(buffer):
            digest.update(view[:size])
    return digest.hexdigest()


def read_checkpoint(path: PathLike) -> dict[str, Tensor]:
    """Read a state dict from ``.pth``/``.pt`` (``torch.load``, ``weights_only=True``) or ``.safetensors``.

    Zip-format torch files are memory-mapped; legacy (pre-1.6, non-zip) files such as
    torchvision's VGG checkpoints are read whole. A top-level ``{"state_dict": ...}`` or
    ``{"model": ...}`` dict with nothing else in it is unwrapped.

    Args:
        path: the checkpoint file. ``.safetensors`` is read with safetensors, anything else with torch.

    Returns:
        The state dict (name -> tensor, on CPU).

    Raises:
        WeightsNotFoundError: no such file (a ``FileNotFoundError``).
        WeightsLoadError: the pickle would build Python objects other than tensors (refused, never
            executed), the file is empty, truncated or corrupt, or it holds no dict of tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(f"checkpoint file not found: {path}", path=str(path))
    if path.suffix.lower() == ".safetensors":
        try:
            return safetensors.torch.load_file(path)
        except safetensors.SafetensorError as error:
            raise WeightsLoadError(f"cannot read safetensors file {path}: {error}", path=str(path)) from error
    use_mmap = zipfile.is_zipfile(path)  # mmap needs the zip format (torch >= 1.6 default)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=use_mmap)
    except pickle.UnpicklingError as error:
        foreign = _foreign_format(path)
        if foreign is not None:
            raise WeightsLoadError(f"cannot read checkpoint {path}: {foreign}", path=str(path)) from error
        if "weights only load failed" not in str(error).lower():
            raise WeightsLoadError(f"cannot read checkpoint {path}: corrupt file ({error})", path=str(path)) from error
        detail = " ".join(line.strip() for line in str(error).splitlines() if "unsupported" in line.lower())
        raise WeightsLoadError(
            f"refusing to load {path}: unpickling it needs more than tensors, which could execute code; "
            "only tensors are allowed (torch.load with weights_only=True rejected it: "
            f"{detail or 'unsupported content'}). "
            "If the file is trusted, re-save its state dict with torch.save or as .safetensors.",
            path=str(path),
        ) from error
    except Exception as error:  # zero-byte, truncated or foreign files raise EOFError, RuntimeError, KeyError...
        foreign = _foreign_format(path)
        if foreign is not None:
            raise WeightsLoadError(f"cannot read checkpoint {path}: {foreign}", path=str(path)) from error
        what = "empty file" if path.stat().st_size == 0 else "truncated or corrupt file"
        reason = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        raise WeightsLoadError(f"cannot read checkpoint {path}: {what} ({reason})", path=str(path)) from error
    return _as_state_dict(loaded, path)


def _foreign_format(path: Path) -> Optional[str]:
    """Say what a file torch cannot read really is (safetensors, a Git LFS pointer, text), else ``None``."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(4096)
        size = path.stat().st_size
    except OSError:
        return None
    if len(head) > 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") <= size - 8:
        return (
            "it is a safetensors file with a torch suffix; rename it to "
            f"{path.with_suffix('.safetensors').name} (featx picks the reader from the suffix)"
        )
    if head.startswith(b"version https://git-lfs.github.com/spec/"):
        return "it is a text file, a Git LFS pointer, not the checkpoint (fetch the real file with `git lfs pull`)"
    if head and b"\x00" not in head:
        try:
            text = head.decode("utf-8")
        except UnicodeDecodeError:
            return None
        if all(char.isprintable() or char in "\r\n\t" for char in text):
            first = text.strip().splitlines()[0][:60] if text.strip() else ""
            return (
                f"it is a text file (starts with {first!r}), not a checkpoint; an HTML error page or a "
                "failed download? Get the file again"
            )
    return None


def _as_state_dict(loaded: Any, path: Path) -> dict[str, Tensor]:
    """Check that a loaded object is a flat dict of tensors, unwrapping ``{"state_dict": ...}``."""
    if isinstance(loaded, Mapping) and len(loaded) == 1:
        ((key, inner),) = loaded.items()
        if key in ("state_dict", "model") and isinstance(inner, Mapping):
            loaded = inner
    if not isinstance(loaded, Mapping):
        raise WeightsLoadError(
            f"{path} holds a {type(loaded).__name__}, expected a state dict (a dict of name -> tensor)", path=str(path)
        )
    bad = sorted(str(key) for key, value in loaded.items() if not (isinstance(key, str) and isinstance(value, Tensor)))
    if bad:
        raise WeightsLoadError(
            f"{path} is not a state dict: entries {bad[:10]} are not tensors "
            "(a training checkpoint? save model.state_dict() or nest it under 'state_dict' alone)",
            path=str(path),
        )
    return dict(loaded)
