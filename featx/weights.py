"""Known VGG checkpoints, and how featx finds, hashes, caches and strictly loads them.

Loading never opens a network connection; :func:`download` (behind ``featx weights download``) is
the only network code in featx.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
import pickle
import re
import warnings
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import safetensors
import safetensors.torch
import torch
from torch import Tensor

from featx._checks import closest
from featx.atomic import write_atomic
from featx.errors import (
    HashMismatchError,
    RandomWeightsWarning,
    UnverifiedWeightsWarning,
    WeightsLoadError,
    WeightsNotFoundError,
)
from featx.layers import ARCHS, check_arch

__all__ = [
    "CheckpointInfo",
    "LoadedWeights",
    "REQUIRE_VERIFIED_ENV",
    "VERIFY_MODES",
    "VGGWeights",
    "clear_cache",
    "featx_home",
    "find",
    "load_weights",
    "locate",
    "missing_checkpoint_error",
    "read_checkpoint",
    "search_dirs",
    "sha256_file",
    "verify_mode",
]

PathLike = Union[str, "os.PathLike[str]"]

_BASE_URL = "https://download.pytorch.org/models/"
_TRANSFORMS = (
    "RGB in [0, 1], normalised with ImageNet mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225); "
    "torchvision's classification preset also resizes to 256 and centre-crops 224, which featx never does"
)
_CACHE_VERSION = "1"
_CHUNK = 1 << 20  # hash and download in 1 MiB chunks
_INDEX_VERSION = 2  # version 1 keyed on size and mtime only; its entries are ignored (files are re-hashed)

REQUIRE_VERIFIED_ENV = "FEATX_REQUIRE_VERIFIED"
"""Environment variable: ``1`` makes a checkpoint that fails its sha256 check an error (see ``verify``)."""

VERIFY_MODES = ("warn", "error")
"""What a file at a known checkpoint's name with another sha256 does: warn and load it unverified, or raise."""


# ----------------------------------------------------------------------------------------------
# Known checkpoints
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckpointInfo:
    """One torchvision ImageNet checkpoint of a VGG model.

    Attributes:
        arch: the architecture (``"vgg19"``).
        file_name: torchvision's file name; the 8 hex digits are the start of its sha256.
        num_params: parameters of the full model (features and classifier).
        acc1: ImageNet-1K top-1 accuracy (%) as torchvision documents it.
        acc5: ImageNet-1K top-5 accuracy (%).
        transforms: the input convention the weights were trained with.
    """

    arch: str
    file_name: str
    num_params: int
    acc1: float
    acc5: float
    transforms: str = _TRANSFORMS

    @property
    def url(self) -> str:
        """Where torchvision publishes the file."""
        return _BASE_URL + self.file_name

    @property
    def sha256_prefix(self) -> str:
        """The hex digits after the last ``-`` of the file name: the start of its sha256."""
        return self.file_name.rsplit("-", 1)[1].split(".", 1)[0]


# Numbers: torchvision.models.VGG*_Weights.IMAGENET1K_V1 (url, meta["num_params"], meta["_metrics"]).
class VGGWeights(enum.Enum):
    """The torchvision ImageNet checkpoints featx knows (names as in torchvision, prefixed by arch).

    Example:
        >>> w = VGGWeights.VGG19_IMAGENET1K_V1
        >>> w.arch, w.file_name, w.sha256_prefix
        ('vgg19', 'vgg19-dcbb9e9d.pth', 'dcbb9e9d')
        >>> w.url
        'https://download.pytorch.org/models/vgg19-dcbb9e9d.pth'
        >>> VGGWeights.default("vgg16_bn").name
        'VGG16_BN_IMAGENET1K_V1'
    """

    VGG11_IMAGENET1K_V1 = CheckpointInfo("vgg11", "vgg11-8a719046.pth", 132_863_336, 69.020, 88.628)
    VGG11_BN_IMAGENET1K_V1 = CheckpointInfo("vgg11_bn", "vgg11_bn-6002323d.pth", 132_868_840, 70.370, 89.810)
    VGG13_IMAGENET1K_V1 = CheckpointInfo("vgg13", "vgg13-19584684.pth", 133_047_848, 69.928, 89.246)
    VGG13_BN_IMAGENET1K_V1 = CheckpointInfo("vgg13_bn", "vgg13_bn-abd245e5.pth", 133_053_736, 71.586, 90.374)
    VGG16_IMAGENET1K_V1 = CheckpointInfo("vgg16", "vgg16-397923af.pth", 138_357_544, 71.592, 90.382)
    VGG16_BN_IMAGENET1K_V1 = CheckpointInfo("vgg16_bn", "vgg16_bn-6c64b313.pth", 138_365_992, 73.360, 91.516)
    VGG19_IMAGENET1K_V1 = CheckpointInfo("vgg19", "vgg19-dcbb9e9d.pth", 143_667_240, 72.376, 90.876)
    VGG19_BN_IMAGENET1K_V1 = CheckpointInfo("vgg19_bn", "vgg19_bn-c79401a0.pth", 143_678_248, 74.218, 91.842)

    @property
    def arch(self) -> str:
        """The architecture the checkpoint belongs to."""
        return self.value.arch

    @property
    def file_name(self) -> str:
        """torchvision's file name (``vgg19-dcbb9e9d.pth``)."""
        return self.value.file_name

    @property
    def url(self) -> str:
        """Download URL (only :func:`download` ever opens it)."""
        return self.value.url

    @property
    def sha256_prefix(self) -> str:
        """The start of the file's sha256 (from its name)."""
        return self.value.sha256_prefix

    @property
    def meta(self) -> dict[str, Any]:
        """Metadata: ``num_params``, ``acc@1``, ``acc@5`` (ImageNet-1K) and ``transforms``."""
        info = self.value
        return {"num_params": info.num_params, "acc@1": info.acc1, "acc@5": info.acc5, "transforms": info.transforms}

    @classmethod
    def default(cls, arch: str) -> VGGWeights:
        """The checkpoint ``weights="DEFAULT"`` means for ``arch``.

        Raises:
            ValueError: unknown ``arch``.
        """
        check_arch(arch)
        return next(member for member in cls if member.arch == arch)

    @classmethod
    def from_file_name(cls, file_name: str) -> Union[VGGWeights, None]:
        """The known checkpoint with this file name, or ``None``.

        Example:
            >>> VGGWeights.from_file_name("vgg16-397923af.pth").name
            'VGG16_IMAGENET1K_V1'
        """
        return next((member for member in cls if member.file_name == file_name), None)


def _member(name: Union[str, VGGWeights]) -> VGGWeights:
    """A known checkpoint from a member, its name, or an arch name (its default)."""
    if isinstance(name, VGGWeights):
        return name
    if not isinstance(name, str):
        raise TypeError(f"expected a VGGWeights member or its name, got {type(name).__name__}")
    if name in VGGWeights.__members__:
        return VGGWeights[name]
    if name in ARCHS:
        return VGGWeights.default(name)
    choices = list(VGGWeights.__members__) + list(ARCHS)
    raise ValueError(f"unknown checkpoint {name!r}.{closest(name, choices)} Valid names: {', '.join(choices)}")


# ----------------------------------------------------------------------------------------------
# Where files live
# ----------------------------------------------------------------------------------------------


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


def find(name: Union[str, VGGWeights]) -> Union[Path, None]:
    """Where a known checkpoint is on disk, or ``None``.

    Args:
        name: a :class:`VGGWeights` member, its name, or an arch name (its default checkpoint).

    Raises:
        ValueError: unknown name (with the closest valid one).
    """
    member = _member(name)
    for directory in search_dirs():
        candidate = directory / member.file_name
        if candidate.is_file():
            return candidate
    return None


def locate(name: Union[str, VGGWeights]) -> Path:
    """Like :func:`find`, but a missing checkpoint raises.

    Raises:
        WeightsNotFoundError: the file is in none of :func:`search_dirs`; the message says how to get it.
        ValueError: unknown name.
    """
    member = _member(name)
    path = find(member)
    if path is None:
        raise missing_checkpoint_error(member, search_dirs())
    return path


# ----------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------


def missing_checkpoint_error(member: VGGWeights, searched: Iterable[Path]) -> WeightsNotFoundError:
    """The error for a known checkpoint that is in none of ``searched``: the file, its sha256, the
    directories searched and the two fixes."""
    searched = tuple(searched)
    lines = "".join(f"\n  - {directory}" for directory in searched)
    message = (
        f"{member.name} weights not found: no file {member.file_name} (sha256 {member.sha256_prefix}...) "
        f"in any of the directories searched:{lines}\n"
        "featx never downloads while building a model. Fix it with one of:\n"
        f"  - featx weights download {member.name}   (one-time, hash-checked download from {member.url})\n"
        f"  - weights=PATH to a local copy (.pth, .pt or .safetensors), or copy {member.file_name} "
        "into one of the directories above"
    )
    return WeightsNotFoundError(message, path=member.file_name, searched=searched)


# ----------------------------------------------------------------------------------------------
# Reading and hashing files
# ----------------------------------------------------------------------------------------------


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
    buffer = bytearray(_CHUNK)
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
        (key, inner), = loaded.items()
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


# ----------------------------------------------------------------------------------------------
# Strict key matching
# ----------------------------------------------------------------------------------------------

_KEY = re.compile(r"(?:features\.)?(\d+)\.(.+)")
_SHOWN = 20  # keys listed per category in an error message


@dataclass(frozen=True)
class _Tensors:
    """A read-only view of named tensors whose shapes can be read before the data."""

    keys: tuple[str, ...]
    shape: Callable[[str], tuple[int, ...]]
    get: Callable[[str], Tensor]


def _dict_view(state_dict: Mapping[str, Tensor]) -> _Tensors:
    return _Tensors(tuple(state_dict), lambda key: tuple(state_dict[key].shape), state_dict.__getitem__)


def _safetensors_view(handle: Any) -> _Tensors:
    return _Tensors(tuple(handle.keys()), lambda key: tuple(handle.get_slice(key).get_shape()), handle.get_tensor)


Wanted = dict[str, tuple[str, tuple[int, ...]]]
"""Canonical ``features.{i}.{name}`` -> (key as the caller wrote it, shape)."""


def _parse_expected(expected: Mapping[str, Any]) -> Wanted:
    """Canonical ``features.{i}.{name}`` -> (key as the caller wrote it, shape)."""
    if not isinstance(expected, Mapping) or not expected:
        raise TypeError(f"expected must be a non-empty mapping of state-dict keys to shapes, got {expected!r}")
    wanted = {}
    for key, shape in expected.items():
        match = _KEY.fullmatch(key) if isinstance(key, str) else None
        if match is None:
            raise ValueError(f"expected keys look like 'features.0.weight', got {key!r}")
        wanted[f"features.{match[1]}.{match[2]}"] = (key, tuple(int(size) for size in shape))
    return wanted


def _index_of(canonical: str) -> int:
    """The layer index of a canonical ``features.{i}.{name}`` key."""
    match = _KEY.fullmatch(canonical)
    if match is None:  # canonical keys come from _parse_expected
        raise ValueError(f"not a features key: {canonical!r}")
    return int(match[1])


def _fmt(keys: list[str]) -> str:
    more = f" ... and {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else ""
    return f"{keys[:_SHOWN]}{more}"


def _select(tensors: _Tensors, wanted: Wanted, where: str, arch: str) -> dict[str, Tensor]:
    """Strictly pick the kept layers' tensors; classifier and layers past the deepest one are ignored."""
    deepest = max(_index_of(canonical) for canonical in wanted)
    found: dict[str, str] = {}
    unexpected = []
    for key in tensors.keys:
        match = _KEY.fullmatch(key)
        if key.startswith("classifier.") or (match is not None and int(match[1]) > deepest):
            continue
        canonical = f"features.{match[1]}.{match[2]}" if match else None
        if canonical not in wanted or canonical in found:
            unexpected.append(key)
        else:
            found[canonical] = key
    missing, filled = [], {}
    for canonical, (key, shape) in wanted.items():
        if canonical in found:
            continue
        if canonical.endswith(".num_batches_tracked") and shape == ():
            filled[key] = torch.tensor(0, dtype=torch.long)  # pre-0.4.1 BN checkpoints lack it, as torch allows
        else:
            missing.append(key)
    mismatched = []
    for canonical, key in found.items():
        shape, got = wanted[canonical][1], tensors.shape(key)
        if tuple(got) != shape:
            mismatched.append(f"{wanted[canonical][0]}: expected {shape}, got {tuple(got)}")
    if missing or unexpected or mismatched:
        missing, unexpected, mismatched = sorted(missing), sorted(unexpected), sorted(mismatched)
        parts = [f"{where} does not fit {arch} up to features.{deepest} (loading is strict for the kept layers):"]
        if missing:
            parts.append(f"  missing keys ({len(missing)}): {_fmt(missing)}")
        if unexpected:
            parts.append(f"  unexpected keys ({len(unexpected)}): {_fmt(unexpected)}")
        if mismatched:
            parts.append(f"  shape mismatches ({len(mismatched)}): {_fmt(mismatched)}")
        parts.append(
            f"Is it a checkpoint of another architecture? Keys may be 'features.{{i}}.*' (a torchvision model) "
            f"or '{{i}}.*' (a vgg.features state dict); classifier.* and layers past features.{deepest} are ignored."
        )
        raise WeightsLoadError(
            "\n".join(parts),
            path=where if where != "the in-memory state dict" else None,
            missing=missing,
            unexpected=unexpected,
            mismatched=mismatched,
        )
    selected = {wanted[canonical][0]: tensors.get(found[canonical]) for canonical in wanted if canonical in found}
    _check_values(selected, where)
    selected.update(filled)
    return {key: selected[key] for key, _ in wanted.values()}


def _check_values(selected: Mapping[str, Tensor], where: str) -> None:
    """Weights, biases and BatchNorm statistics must be finite floating-point tensors."""
    path = where if where != "the in-memory state dict" else None
    for key, value in selected.items():
        if key.endswith(".num_batches_tracked"):
            continue  # BatchNorm's integer step counter
        if not value.is_floating_point():
            raise WeightsLoadError(
                f"{where}: {key} is {value.dtype}, not floating point; VGG weights are float tensors "
                "(a quantised or mislabelled checkpoint?)",
                path=path,
            )
        if not bool(torch.isfinite(value).all()):
            nan, inf = int(torch.isnan(value).sum()), int(torch.isinf(value).sum())
            counts = ", ".join(f"{count} {kind}" for count, kind in ((nan, "NaN"), (inf, "inf")) if count)
            raise WeightsLoadError(
                f"{where}: {key} holds non-finite values ({counts} of {value.numel()}); the checkpoint is "
                "corrupt or comes from a diverged training run",
                path=path,
            )


# ----------------------------------------------------------------------------------------------
# Features-only cache and the sha256 index
# ----------------------------------------------------------------------------------------------


def _cache_dir() -> Path:
    return featx_home() / "cache"


def _stat_key(stat: os.stat_result) -> dict[str, int]:
    """What identifies one version of a file: a replaced or rewritten file differs in at least one."""
    return {
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "ctime_ns": stat.st_ctime_ns,
        "inode": stat.st_ino,
        "device": stat.st_dev,
    }


def _read_index() -> dict[str, dict[str, Any]]:
    try:
        data = json.loads((_cache_dir() / "index.json").read_text())
        return dict(data["files"]) if data.get("version") == _INDEX_VERSION else {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def _remember(path: Path, stat: os.stat_result, sha256: str, **extra: Any) -> None:
    """Record ``path`` (with its stat key) -> sha256 in ``cache/index.json``, dropping vanished files."""
    entries = {key: value for key, value in _read_index().items() if Path(key).is_file()}
    entries[str(path)] = {**_stat_key(stat), "sha256": sha256, **extra}
    text = json.dumps({"version": _INDEX_VERSION, "files": entries}, indent=1, sort_keys=True)
    _cache_dir().mkdir(parents=True, exist_ok=True)
    write_atomic(_cache_dir() / "index.json", [text.encode()])


def _recorded_sha256(path: Path, stat: os.stat_result) -> Optional[str]:
    """The sha256 the index holds for this very version of ``path`` (same stat key), else ``None``."""
    entry = _read_index().get(str(path), {})
    if not isinstance(entry, dict) or any(entry.get(key) != value for key, value in _stat_key(stat).items()):
        return None
    sha256 = entry.get("sha256")
    return sha256 if isinstance(sha256, str) and re.fullmatch(r"[0-9a-f]{64}", sha256) else None


def _indexed_sha256(path: Path) -> tuple[str, bool]:
    """The file's sha256, from the index when its stat key is unchanged; ``(sha256, freshly_hashed)``."""
    recorded = _recorded_sha256(path, path.stat())
    if recorded is not None:
        return recorded, False
    return sha256_file(path), True


def _cache_file(source: Path, sha256: str) -> Path:
    return _cache_dir() / f"{source.stem}-{sha256[:16]}-features.safetensors"


def _cache_is_trusted(cache: Path) -> bool:
    """A cache file is used only if it is the one featx wrote: the index holds its sha256 (written with
    it); a file whose stat key changed since is hashed again and must still match."""
    stat = cache.stat()
    if _recorded_sha256(cache, stat) is not None:
        return True
    entry = _read_index().get(str(cache), {})
    recorded = entry.get("sha256") if isinstance(entry, dict) else None
    if not isinstance(recorded, str) or sha256_file(cache) != recorded:
        return False
    _remember(cache, stat, recorded, kind="features-cache")  # same content (a copy or a restore): trust it again
    return True


def _read_cached(cache: Path, sha256: str, wanted: Wanted, where: str, arch: str) -> Union[dict[str, Tensor], None]:
    """Selected tensors from a valid features cache, or ``None`` when there is none (or it is stale,
    corrupt, or not the file featx wrote)."""
    if not cache.is_file() or not _cache_is_trusted(cache):
        return None
    try:
        handle_context = safetensors.safe_open(cache, framework="pt")
    except (OSError, safetensors.SafetensorError):
        return None
    with handle_context as handle:
        metadata = handle.metadata() or {}
        if metadata.get("sha256") != sha256 or metadata.get("featx_cache_version") != _CACHE_VERSION:
            return None
        return _select(_safetensors_view(handle), wanted, where, arch)


def _write_cache(cache: Path, state_dict: Mapping[str, Tensor], source: Path, sha256: str) -> None:
    """Save every ``features.*`` tensor (so any tap depth can use it) with provenance metadata, and
    record the cache file's own sha256 in the index (checked before each use)."""
    features = {}
    for key, value in state_dict.items():
        match = _KEY.fullmatch(key)
        if match is not None:
            features[f"features.{match[1]}.{match[2]}"] = value.contiguous()
    if not features:
        return
    metadata = {"source": source.name, "sha256": sha256, "featx_cache_version": _CACHE_VERSION}
    data = safetensors.torch.save(features, metadata=metadata)
    cache.parent.mkdir(parents=True, exist_ok=True)
    # No fsync: a cache file cut short by a power loss fails its hash check and is rebuilt.
    write_atomic(cache, [data], fsync=False)
    _remember(cache, cache.stat(), hashlib.sha256(data).hexdigest(), kind="features-cache", source_sha256=sha256)


def clear_cache() -> int:
    """Delete the features cache and the sha256 index under ``featx_home()/cache``.

    Returns:
        The number of files removed.
    """
    removed = 0
    directory = _cache_dir()
    if directory.is_dir():
        for entry in directory.iterdir():
            if entry.is_file() and (entry.name == "index.json" or entry.name.endswith("-features.safetensors")):
                entry.unlink()
                removed += 1
    return removed


# ----------------------------------------------------------------------------------------------
# Resolving the ``weights`` argument and loading
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class LoadedWeights:
    """Tensors for the kept layers and where they came from.

    Attributes:
        state_dict: exactly the ``expected`` keys, in their order.
        weights_id: the :class:`VGGWeights` name (only when the file's sha256 matched it),
            ``"unverified:<name>"`` (a file at that checkpoint's name whose sha256 does not match),
            ``"file:<resolved path>"`` or ``"state_dict"``.
        sha256: full sha256 of the source file, ``None`` for in-memory state dicts.
        source: the file path, ``None`` for in-memory state dicts.
        verified: ``True`` when the file's sha256 matched the known checkpoint it was loaded as (or
            whose file name it has), ``False`` when it did not, ``None`` when there was nothing to
            check against (another file name, an in-memory state dict).
    """

    state_dict: dict[str, Tensor] = field(repr=False)
    weights_id: str
    sha256: Union[str, None]
    source: Union[str, None]
    verified: Optional[bool] = None


def verify_mode(verify: Optional[str] = None) -> str:
    """The effective ``verify`` mode: the argument, else ``$FEATX_REQUIRE_VERIFIED`` (``1`` -> ``"error"``).

    Raises:
        ValueError: ``verify`` not in :data:`VERIFY_MODES`, or an unreadable environment value.

    Example:
        >>> verify_mode("error"), verify_mode("warn")
        ('error', 'warn')
    """
    if verify is None:
        raw = os.environ.get(REQUIRE_VERIFIED_ENV, "").strip().lower()
        if raw in ("", "0", "false", "no", "off"):
            return "warn"
        if raw in ("1", "true", "yes", "on"):
            return "error"
        raise ValueError(
            f"{REQUIRE_VERIFIED_ENV}={raw!r}: expected 1/true/yes/on (mismatched checkpoints are an error) "
            "or 0/false/no/off or unset (they warn)"
        )
    if verify not in VERIFY_MODES:
        raise ValueError(
            f"verify must be one of {', '.join(map(repr, VERIFY_MODES))} "
            f"(or None: {REQUIRE_VERIFIED_ENV} decides), got {verify!r}"
        )
    return verify
def _looks_like_path(text: str) -> bool:
    return "/" in text or os.sep in text or text.startswith("~") or Path(text).suffix != ""


def _resolve_name(weights: Any, arch: str) -> Union[VGGWeights, None]:
    """The known checkpoint ``weights`` names, ``None`` for paths; raises for wrong or unknown names."""
    member = None
    if isinstance(weights, VGGWeights):
        member = weights
    elif isinstance(weights, enum.Enum) and isinstance(getattr(weights, "url", None), str):
        # A torchvision WeightsEnum member, e.g. torchvision.models.VGG19_Weights.IMAGENET1K_V1.
        url: str = getattr(weights, "url")  # noqa: B009 (mypy: Enum has no url)
        member = VGGWeights.from_file_name(url.rsplit("/", 1)[-1])
        if member is None:
            raise ValueError(
                f"{weights} ({url}) is not a checkpoint featx knows; pass weights=PATH to its file"
            )
    elif isinstance(weights, enum.Enum):
        raise TypeError(f"weights={weights!r} is an enum member but not a VGGWeights (or torchvision weights) member")
    elif isinstance(weights, str):
        if weights == "DEFAULT" or weights == "IMAGENET1K_V1":
            return VGGWeights.default(arch)
        if weights in VGGWeights.__members__:
            member = VGGWeights[weights]
        elif Path(weights).expanduser().is_file() or _looks_like_path(weights):
            return None
        else:
            choices = ["DEFAULT", *VGGWeights.__members__]
            raise ValueError(
                f"unknown weights {weights!r}: not a checkpoint name and no such file.{closest(weights, choices)} "
                f"Valid names: {', '.join(choices)}; or pass a path to a .pth/.pt/.safetensors file"
            )
    if member is not None and member.arch != arch:
        raise ValueError(
            f"weights {member.name} are for {member.arch}, but arch={arch!r}; "
            f"use weights='DEFAULT' ({VGGWeights.default(arch).name}) or a {arch} checkpoint"
        )
    return member


def load_weights(
    weights: Any, *, arch: str, expected: Mapping[str, Any], verify: Optional[str] = None
) -> Union[LoadedWeights, None]:
    """Resolve a ``weights`` argument and strictly load the tensors the truncated extractor needs.

    Never opens a network connection. A full ``.pth`` file is hashed and its ``features.*``
    tensors cached as safetensors under ``featx_home()/cache`` on first use; later loads read
    only the ``expected`` tensors from that cache.

    Args:
        weights: ``"DEFAULT"`` (``VGGWeights.default(arch)``), a :class:`VGGWeights` member or its
            name, a path (``.pth``, ``.pt``, ``.safetensors``), an in-memory state dict, or
            ``None`` (random weights: warns :class:`RandomWeightsWarning` and returns ``None``).
        arch: the architecture being built.
        expected: every key the truncated extractor needs (``"features.0.weight"``, ...) -> shape.
            Checkpoint keys may be ``features.{i}.*`` or bare ``{i}.*``; ``classifier.*`` and
            layers deeper than the deepest expected index are ignored; anything else must match.
        verify: what a file at a known checkpoint's name (or loaded by that name) whose sha256 does
            not match does: ``"warn"`` (:class:`UnverifiedWeightsWarning` at every load; the weights
            are recorded as ``"unverified:<name>"`` with their real sha256 and ``verified=False``) or
            ``"error"`` (raise :class:`HashMismatchError`). ``None`` (default): ``"error"`` when the
            environment variable ``FEATX_REQUIRE_VERIFIED=1``, else ``"warn"``.

    Returns:
        :class:`LoadedWeights`, or ``None`` for ``weights=None``.

    Raises:
        TypeError: ``weights`` of an unsupported type, or a state dict with non-tensor values.
        ValueError: unknown checkpoint name (with the closest valid one), one of another arch, or
            an invalid ``verify`` / ``FEATX_REQUIRE_VERIFIED``.
        HashMismatchError: with ``verify="error"``, a checkpoint whose sha256 does not match its name.
        WeightsNotFoundError: the checkpoint file is not on disk (names the directories searched).
        WeightsLoadError: missing / unexpected / mis-shaped keys (sorted lists), non-float, NaN or
            inf values, unsafe pickle, unreadable file.

    Example:
        >>> sd = {"features.0.weight": torch.ones(64, 3, 3, 3), "features.0.bias": torch.zeros(64),
        ...       "classifier.0.weight": torch.zeros(1)}
        >>> loaded = load_weights(sd, arch="vgg19",
        ...                       expected={k: v.shape for k, v in sd.items() if k.startswith("features")})
        >>> sorted(loaded.state_dict), loaded.weights_id, loaded.sha256
        (['features.0.bias', 'features.0.weight'], 'state_dict', None)
    """
    check_arch(arch)
    wanted = _parse_expected(expected)
    mode = verify_mode(verify)
    if weights is None:
        warnings.warn(
            f"weights=None: the {arch} extractor has random weights (explicit opt-in); its features are not "
            "meaningful for perceptual or texture losses. Use weights='DEFAULT' for ImageNet weights "
            "(`featx weights list` shows which are on disk).",
            RandomWeightsWarning,
            stacklevel=3,
        )
        return None
    if isinstance(weights, Mapping):
        bad = [key for key, value in weights.items() if not (isinstance(key, str) and isinstance(value, Tensor))]
        if bad:
            raise TypeError(f"a state dict must map str keys to tensors; entries {sorted(map(str, bad))[:10]} do not")
        state = _select(_dict_view(weights), wanted, "the in-memory state dict", arch)
        return LoadedWeights(state, "state_dict", None, None)
    if not isinstance(weights, (str, os.PathLike, enum.Enum)):
        raise TypeError(
            "weights must be 'DEFAULT', a VGGWeights member or name, a path, a state dict or None, "
            f"got {type(weights).__name__}"
        )
    member = _resolve_name(weights, arch)
    if member is not None:
        return _load_file(locate(member), wanted, arch, member, mode)
    if isinstance(weights, enum.Enum):  # _resolve_name returns a member for every enum it accepts
        raise TypeError(f"weights={weights!r} is not a checkpoint featx knows")
    path = Path(weights).expanduser()
    if not path.is_file():
        raise WeightsNotFoundError(
            f"weights file not found: {path.absolute()} (weights={os.fspath(weights)!r}). Pass an existing "
            ".pth/.pt/.safetensors file, or a known checkpoint name (`featx weights list`; get one with "
            "`featx weights download NAME`)",
            path=str(path),
        )
    path = path.resolve()
    return _load_file(path, wanted, arch, None, mode)




def _check_known_hash(path: Path, sha256: str, member: Optional[VGGWeights], mode: str) -> Optional[bool]:
    """Compare a file with the known checkpoint it is loaded as (or named like): ``True``/``False``,
    ``None`` when there is nothing to compare with. A mismatch warns (every load) or raises."""
    known = member if member is not None else VGGWeights.from_file_name(path.name)
    if known is None:
        return None
    if sha256.startswith(known.sha256_prefix):
        return True
    message = (
        f"{path} is named like torchvision's {known.name} checkpoint, but its sha256 {sha256[:16]}... does not "
        f"start with {known.sha256_prefix}: it is a different or corrupted file "
        f"(`featx weights download {known.name}` fetches the original)"
    )
    if mode == "error":
        raise HashMismatchError(
            f"{message}. Refused because verify='error' or {REQUIRE_VERIFIED_ENV}=1",
            source=str(path),
            expected=known.sha256_prefix,
            actual=sha256,
        )
    warnings.warn(
        f"{message}; loaded as unverified weights (sha256 {sha256}). Set {REQUIRE_VERIFIED_ENV}=1 to make "
        "this an error",
        UnverifiedWeightsWarning,
        stacklevel=4,
    )
    return False


def _load_file(path: Path, wanted: Wanted, arch: str, member: Optional[VGGWeights], mode: str) -> LoadedWeights:
    """Load from a file: safetensors lazily, torch files through the features cache."""
    sha256, fresh = _indexed_sha256(path)
    verified = _check_known_hash(path, sha256, member, mode)
    if member is not None:
        weights_id = member.name if verified else f"unverified:{member.name}"
    else:
        weights_id = f"file:{path}"
    problems: list[str] = []

    def attempt(action: Callable[[], None]) -> None:
        try:
            action()
        except Exception as error:  # the cache is an optimisation: never fail a load because of it
            problems.append(f"{type(error).__name__}: {error}")

    if fresh:
        stat = path.stat()
        known = member if member is not None else VGGWeights.from_file_name(path.name)
        extra = {} if known is None else {"checkpoint": known.name, "verified": verified}
        attempt(lambda: _remember(path, stat, sha256, **extra))
    if path.suffix.lower() == ".safetensors":
        try:
            with safetensors.safe_open(path, framework="pt") as handle:
                state = _select(_safetensors_view(handle), wanted, str(path), arch)
        except safetensors.SafetensorError as error:
            raise WeightsLoadError(f"cannot read safetensors file {path}: {error}", path=str(path)) from error
    else:
        cache = _cache_file(path, sha256)
        cached = None
        try:
            cached = _read_cached(cache, sha256, wanted, f"{path} (via features cache {cache.name})", arch)
        except OSError as error:
            problems.append(f"{type(error).__name__}: {error}")
        if cached is not None:
            state = cached
        else:
            full = read_checkpoint(path)
            state = _select(_dict_view(full), wanted, str(path), arch)
            attempt(lambda: _write_cache(cache, full, path, sha256))
    if problems:
        warnings.warn(
            f"featx weights cache {_cache_dir()} is not usable ({'; '.join(problems)}); loaded {path.name} without "
            "it. If the directory is not writable, set FEATX_HOME to one that is.",
            UserWarning,
            stacklevel=4,
        )
    return LoadedWeights(state, weights_id, sha256, str(path), verified)
