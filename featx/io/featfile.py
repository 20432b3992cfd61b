"""Feature files: safetensors (no pickle) with one tensor per name and ``str -> str`` metadata.

:func:`serialize_features` lays a file out byte-deterministically (sorted header) in one
page-aligned buffer; :func:`save_features` then writes it with :mod:`featx.io.atomic` (hidden
temporary name in the target folder, fsync, atomic rename; ``O_DIRECT`` from 1 MiB up).
:func:`load_features` and :func:`read_feature_metadata` read files back.
"""

from __future__ import annotations

import json
import math
import os
import struct
import sys
from collections.abc import Mapping
from typing import Any, Union

import torch

from featx.errors import FeatxTypeError, FeatxValueError, InputNotFoundError
from featx.io.atomic import aligned_buffer, write_atomic_buffer

__all__ = [
    "FEATURE_SUFFIX",
    "feature_file_layout",
    "load_features",
    "read_feature_metadata",
    "save_features",
    "serialize_features",
]

PathLike = Union[str, "os.PathLike[str]"]

FEATURE_SUFFIX = ".safetensors"
"""Suffix of feature files; temporary files never end with it."""

_SAFETENSORS_DTYPES: dict[torch.dtype, str] = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


def _check_feature_inputs(tensors: Mapping[str, Any], metadata: Mapping[str, Any]) -> None:
    if not isinstance(tensors, Mapping) or not tensors:
        raise FeatxTypeError(f"tensors must be a non-empty dict of name -> Tensor, got {tensors!r:.80}")
    for name, value in tensors.items():
        if not isinstance(name, str) or name == "__metadata__":
            raise FeatxTypeError(f"tensor names must be strings other than '__metadata__', got {name!r}")
        if not isinstance(value, torch.Tensor):
            raise FeatxTypeError(f"tensors[{name!r}] must be a torch.Tensor, got {type(value).__name__}")
    if not isinstance(metadata, Mapping):
        raise FeatxTypeError(f"metadata must be a dict of str -> str, got {type(metadata).__name__}")
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise FeatxTypeError(f"metadata must map str -> str, got {key!r}: {value!r} ({type(value).__name__})")


def feature_file_layout(
    specs: Mapping[str, tuple[torch.dtype, tuple[int, ...]]], metadata: Mapping[str, str]
) -> tuple[bytes, dict[str, tuple[int, int]]]:
    """The header of a feature file and where each tensor's data goes, from dtypes and shapes alone.

    Tensors are ordered by decreasing element size, then name; the JSON header has sorted keys and
    is padded with spaces so tensor data starts 8-byte aligned. :func:`serialize_features` and
    :class:`featx.io.featstream.FeatureFileStream` share it, so a file written whole and one written
    piece by piece are byte-identical.

    Args:
        specs: ``{name: (dtype, shape)}``.
        metadata: ``{str: str}`` for the header's ``__metadata__``.

    Returns:
        ``(head, offsets)``: the file's first bytes (the 8-byte little-endian header length and the
        header) and ``{name: (begin, end)}``, byte offsets of each tensor's data after ``head``, in
        file order.

    Example:
        >>> head, offsets = feature_file_layout({"a": (torch.float32, (2,))}, {})
        >>> len(head), offsets
        (64, {'a': (0, 8)})
    """
    for name, (dtype, _) in specs.items():
        if dtype not in _SAFETENSORS_DTYPES:
            raise FeatxTypeError(
                f"tensors[{name!r}] has dtype {dtype}; supported: {', '.join(map(str, _SAFETENSORS_DTYPES))}"
            )
    order = sorted(specs, key=lambda name: (-specs[name][0].itemsize, name))
    header: dict[str, Any] = {"__metadata__": dict(metadata)} if metadata else {}
    offsets: dict[str, tuple[int, int]] = {}
    offset = 0
    for name in order:
        dtype, shape = specs[name]
        size = math.prod(shape) * dtype.itemsize
        header[name] = {"dtype": _SAFETENSORS_DTYPES[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
        offsets[name] = (offset, offset + size)
        offset += size
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # pad so tensor data starts 8-byte aligned
    return struct.pack("<Q", len(text)) + text, offsets


def serialize_features(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> tuple[torch.Tensor, int]:
    """Lay out a safetensors file in one page-aligned buffer, ready for :func:`write_atomic_buffer`.

    The header lists tensors and metadata with sorted keys (tensors by decreasing element size,
    then name), padded with spaces so tensor data starts 8-byte aligned: equal inputs give
    byte-identical files. Each tensor is copied once, straight into its place, whatever its
    memory layout (a ``channels_last`` feature map is stored as plain ``C x H x W``).

    Args:
        tensors: ``{name: tensor}`` on any device; float64/32/16, bfloat16, int64/32/16/8, uint8 or bool.
        metadata: ``{str: str}`` stored in the header's ``__metadata__``.

    Returns:
        ``(buffer, nbytes)``: a ``uint8`` CPU tensor from :func:`featx.io.atomic.aligned_buffer`
        whose first ``nbytes`` are the file.

    Raises:
        TypeError: empty ``tensors``, non-tensor values, unsupported dtype, or non-string metadata.

    Example:
        >>> buffer, nbytes = serialize_features({"a": torch.ones(2)}, {})
        >>> nbytes, bytes(buffer[8:nbytes - 8].numpy()).rstrip()
        (72, b'{"a":{"data_offsets":[0,8],"dtype":"F32","shape":[2]}}')
    """
    _check_feature_inputs(tensors, metadata)
    specs = {name: (tensor.dtype, tuple(tensor.shape)) for name, tensor in tensors.items()}
    head, offsets = feature_file_layout(specs, metadata)
    start = len(head)
    nbytes = start + max((end for _, end in offsets.values()), default=0)
    buffer = aligned_buffer(nbytes)
    buffer[:start] = torch.frombuffer(bytearray(head), dtype=torch.uint8)
    for name, (begin, end) in offsets.items():
        tensor = tensors[name].detach()
        place = buffer[start + begin : start + end]
        if tensor.numel():
            place.view(tensor.dtype).view(tensor.shape).copy_(tensor)
        if sys.byteorder != "little" and tensor.element_size() > 1:  # pragma: no cover - big-endian hosts
            place.numpy().view(f"u{tensor.element_size()}").byteswap(inplace=True)  # safetensors is little-endian
    return buffer, nbytes


def save_features(
    path: PathLike,
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, str],
    *,
    fsync: bool = True,
    direct: bool = True,
) -> None:
    """Write tensors and metadata as a safetensors file, deterministically and atomically.

    The bytes are laid out by :func:`serialize_features` (sorted header: equal inputs give
    byte-identical files) and written by :func:`featx.io.atomic.write_atomic_buffer`: a hidden
    temporary name in the same folder, fsync, rename; files from 1 MiB up bypass the page cache
    (``O_DIRECT``) where the system allows it. Any safetensors reader opens the file.

    Args:
        path: destination (conventionally ending in ``.safetensors``); its folder must exist.
        tensors: ``{name: tensor}``; stored contiguous (``C x H x W`` order for 3-D maps of any
            memory format), in their dtype.
        metadata: ``{str: str}`` stored in the header's ``__metadata__``.
        fsync: flush the file's data to disk before the rename, so after a power loss the name
            holds either nothing or complete data. Without it the rename is still atomic for other
            processes and for a killed writer. (The folder is not synced per file: a rename lost
            to a power cut leaves no file, and a resumed extraction simply recomputes it.)
        direct: allow ``O_DIRECT`` for files from 1 MiB up; ``False`` writes through the page
            cache. The bytes are the same either way.

    Raises:
        TypeError: empty ``tensors``, non-tensor values, unsupported dtype, or non-string metadata.

    Example:
        >>> import tempfile, os
        >>> with tempfile.TemporaryDirectory() as d:
        ...     p = os.path.join(d, "x.safetensors")
        ...     save_features(p, {"relu1_1": torch.ones(2, 3)}, {"arch": "vgg19"})
        ...     tensors, meta = load_features(p)
        >>> tensors["relu1_1"].shape, meta
        (torch.Size([2, 3]), {'arch': 'vgg19'})
    """
    buffer, nbytes = serialize_features(tensors, metadata)
    write_atomic_buffer(path, buffer, nbytes, fsync=fsync, direct=direct)


def load_features(path: PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a feature file written by :func:`save_features` (or any safetensors file).

    Args:
        path: a ``.safetensors`` file.

    Returns:
        ``(tensors, metadata)``: ``{name: tensor}`` on CPU and the ``str -> str`` metadata.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a valid safetensors file (truncated or corrupt).

    Example:
        See :func:`save_features`.
    """
    from safetensors import SafetensorError, safe_open

    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputNotFoundError(f"feature file not found: {path}")
    try:
        with safe_open(path, framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except SafetensorError as error:
        raise FeatxValueError(f"{path}: not a valid safetensors file ({error})") from error
    return tensors, metadata


def read_feature_metadata(path: PathLike) -> dict[str, str]:
    """Read only the metadata of a feature file (the header; no tensor data is loaded).

    The header is validated against the file size, so a truncated file raises.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a valid safetensors file.

    Example:
        >>> import tempfile, os
        >>> with tempfile.TemporaryDirectory() as d:
        ...     p = os.path.join(d, "x.safetensors")
        ...     save_features(p, {"a": torch.zeros(1)}, {"k": "v"})
        ...     read_feature_metadata(p)
        {'k': 'v'}
    """
    from safetensors import SafetensorError, safe_open

    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputNotFoundError(f"feature file not found: {path}")
    try:
        with safe_open(path, framework="pt") as handle:
            return dict(handle.metadata() or {})
    except SafetensorError as error:
        raise FeatxValueError(f"{path}: not a valid safetensors file ({error})") from error
