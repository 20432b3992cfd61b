"""Resolving the ``weights`` argument and strictly loading the kept layers, with their provenance."""

from __future__ import annotations

import enum
import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import safetensors
import safetensors.torch
from torch import Tensor

from featx._checks import check_choice, closest
from featx.errors import (
    FeatxTypeError,
    FeatxValueError,
    FeatxWarning,
    HashMismatchError,
    RandomWeightsWarning,
    UnverifiedWeightsWarning,
    WeightsLoadError,
    WeightsNotFoundError,
)
from featx.weights.cache import cache_file, read_cached, write_cache
from featx.weights.checkpoint import read_checkpoint
from featx.weights.index import indexed_sha256, remember_sha256
from featx.weights.locations import cache_dir, locate
from featx.weights.matching import FEATURE_KEY, KeyLayout, Wanted, dict_view, parse_expected, safetensors_view, select_tensors
from featx.weights.registry import (
    BACKBONE_ARCHS,
    KnownCheckpoint,
    MetricWeights,
    VGGWeights,
    WeightsSpec,
    default_backbone,
    known_by_file_name,
)

__all__ = ["LoadedWeights", "REQUIRE_VERIFIED_ENV", "VERIFY_MODES", "check_known_hash", "load_weights", "verify_mode"]

REQUIRE_VERIFIED_ENV = "FEATX_REQUIRE_VERIFIED"
"""Environment variable: ``1`` makes a checkpoint that fails its sha256 check an error (see ``verify``)."""
VERIFY_MODES = ("warn", "error")
"""What a file at a known checkpoint's name with another sha256 does: warn and load it unverified, or raise."""


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
        raise FeatxValueError(
            f"{REQUIRE_VERIFIED_ENV}={raw!r}: expected 1/true/yes/on (mismatched checkpoints are an error) "
            "or 0/false/no/off or unset (they warn)"
        )
    if verify not in VERIFY_MODES:
        raise FeatxValueError(
            f"verify must be one of {', '.join(map(repr, VERIFY_MODES))} "
            f"(or None: {REQUIRE_VERIFIED_ENV} decides), got {verify!r}"
        )
    return verify


def _looks_like_path(text: str) -> bool:
    return "/" in text or os.sep in text or text.startswith("~") or Path(text).suffix != ""


def _resolve_name(weights: WeightsSpec, arch: str) -> Union[KnownCheckpoint, None]:
    """The known checkpoint ``weights`` names, ``None`` for paths; raises for wrong or unknown names."""
    member: Union[KnownCheckpoint, None] = None
    if isinstance(weights, (VGGWeights, MetricWeights)):
        member = weights
    elif isinstance(weights, enum.Enum) and isinstance(getattr(weights, "url", None), str):
        # A torchvision WeightsEnum member, e.g. torchvision.models.VGG19_Weights.IMAGENET1K_V1.
        url: str = getattr(weights, "url")  # noqa: B009 (mypy: Enum has no url)
        member = known_by_file_name(url.rsplit("/", 1)[-1])
        if member is None:
            raise FeatxValueError(f"{weights} ({url}) is not a checkpoint featx knows; pass weights=PATH to its file")
    elif isinstance(weights, enum.Enum):
        raise FeatxTypeError(f"weights={weights!r} is an enum member but not a VGGWeights (or torchvision weights) member")
    elif isinstance(weights, str):
        if weights == "DEFAULT" or weights == "IMAGENET1K_V1":  # the latter: torchvision's tag, arch known
            return default_backbone(arch)
        if weights in VGGWeights.__members__:
            member = VGGWeights[weights]
        elif weights in MetricWeights.__members__:
            member = MetricWeights[weights]
        elif (from_torchvision := VGGWeights.from_torchvision_name(weights)) is not None:
            member = from_torchvision  # "VGG19_Weights.IMAGENET1K_V1": a name, not a path with a suffix
        elif Path(weights).expanduser().is_file() or _looks_like_path(weights):
            return None
        else:
            choices = ["DEFAULT", *VGGWeights.__members__, *MetricWeights.__members__]
            raise FeatxValueError(
                f"unknown weights {weights!r}: not a checkpoint name and no such file.{closest(weights, choices)} "
                f"Valid names: {', '.join(choices)}; or pass a path to a .pth/.pt/.safetensors file"
            )
    if member is not None and (member.arch != arch or member.kind != "backbone"):
        what = f"are for {member.arch}," if member.kind == "backbone" else f"are {member.kind} layers, not a backbone,"
        raise FeatxValueError(
            f"weights {member.name} {what} but arch={arch!r}; "
            f"use weights='DEFAULT' ({default_backbone(arch).name}) or a {arch} checkpoint"
        )
    return member


def load_weights(
    weights: WeightsSpec,
    *,
    arch: str,
    expected: Mapping[str, Any],
    layout: Optional[KeyLayout] = None,
    verify: Optional[str] = None,
) -> Union[LoadedWeights, None]:
    """Resolve a ``weights`` argument and strictly load the tensors the truncated extractor needs.

    Never opens a network connection. A full ``.pth`` file is hashed and its ``features.*``
    tensors cached as safetensors under ``featx_home()/cache`` on first use; later loads read
    only the ``expected`` tensors from that cache.

    Args:
        weights: ``"DEFAULT"`` (``VGGWeights.default(arch)``; for ``"alexnet"``
            ``MetricWeights.ALEXNET_IMAGENET1K_V1``), a :class:`VGGWeights` (or, for AlexNet,
            :class:`MetricWeights`) member or its name, a torchvision weights member or name
            (``VGG19_Weights.IMAGENET1K_V1``, or ``"IMAGENET1K_V1"`` for ``arch``'s), a path
            (``.pth``, ``.pt``, ``.safetensors``), an in-memory state dict, or ``None`` (random
            weights: warns :class:`RandomWeightsWarning` and returns ``None``).
        arch: the architecture being built (one of :data:`~featx.weights.registry.BACKBONE_ARCHS`).
        expected: every key the truncated extractor needs (``"features.0.weight"``, ...) -> shape.
        layout: how the family's checkpoint keys map onto the module (:class:`KeyLayout`): which
            keys are the head or deeper layers (ignored) and how key variants are written. Default:
            a torchvision ``features`` Sequential up to the deepest expected index (VGG, AlexNet):
            keys ``features.{i}.*`` or bare ``{i}.*``, ``classifier.*`` ignored.
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
        >>> import torch
        >>> sd = {"features.0.weight": torch.ones(64, 3, 3, 3), "features.0.bias": torch.zeros(64),
        ...       "classifier.0.weight": torch.zeros(1)}
        >>> loaded = load_weights(sd, arch="vgg19",
        ...                       expected={k: v.shape for k, v in sd.items() if k.startswith("features")})
        >>> sorted(loaded.state_dict), loaded.weights_id, loaded.sha256
        (['features.0.bias', 'features.0.weight'], 'state_dict', None)
    """
    check_choice("arch", arch, BACKBONE_ARCHS)
    if layout is None:
        layout = _sequential_layout(expected, arch)
    wanted = parse_expected(expected, layout)
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
            raise FeatxTypeError(f"a state dict must map str keys to tensors; entries {sorted(map(str, bad))[:10]} do not")
        state = select_tensors(dict_view(weights), wanted, "the in-memory state dict", arch, layout)
        return LoadedWeights(state, "state_dict", None, None)
    if not isinstance(weights, (str, os.PathLike, enum.Enum)):
        raise FeatxTypeError(
            "weights must be 'DEFAULT', a VGGWeights member or name, a path, a state dict or None, "
            f"got {type(weights).__name__}"
        )
    member = _resolve_name(weights, arch)
    if member is not None:
        return _load_file(locate(member), wanted, arch, layout, member, mode)
    if isinstance(weights, enum.Enum):  # _resolve_name returns a member for every enum it accepts
        raise FeatxTypeError(f"weights={weights!r} is not a checkpoint featx knows")
    path = Path(weights).expanduser()
    if not path.is_file():
        raise WeightsNotFoundError(
            f"weights file not found: {path.absolute()} (weights={os.fspath(weights)!r}). Pass an existing "
            ".pth/.pt/.safetensors file, or a known checkpoint name (`featx weights list`; get one with "
            "`featx weights download NAME`)",
            path=str(path),
        )
    path = path.resolve()
    return _load_file(path, wanted, arch, layout, None, mode)


def check_known_hash(path: Path, sha256: str, member: Optional[KnownCheckpoint], mode: str) -> Optional[bool]:
    """Compare a file with the known checkpoint it is loaded as (or named like): ``True``/``False``,
    ``None`` when there is nothing to compare with. A mismatch warns (every load) or raises.

    Args:
        path: the file.
        sha256: its full sha256.
        member: the checkpoint it is loaded as; ``None`` looks its file name up in the registry.
        mode: ``"warn"`` or ``"error"`` (see :func:`verify_mode`).

    Raises:
        HashMismatchError: a mismatch with ``mode="error"``.
    """
    known = member if member is not None else known_by_file_name(path.name)
    if known is None:
        return None
    if sha256.startswith(known.sha256_prefix):
        return True
    origin = "torchvision's" if known.kind == "backbone" else f"the {known.kind} project's"
    message = (
        f"{path} is named like {origin} {known.name} checkpoint, but its sha256 {sha256[:16]}... does not "
        f"start with {known.sha256_prefix[:16]}: it is a different or corrupted file "
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


def _sequential_layout(expected: Mapping[str, Any], arch: str) -> KeyLayout:
    """The default layout: a ``features`` Sequential up to the deepest index ``expected`` names."""
    indices = [FEATURE_KEY.fullmatch(key) if isinstance(key, str) else None for key in expected]
    if not indices or any(match is None for match in indices):
        raise FeatxValueError(
            f"expected keys look like 'features.0.weight' unless a layout is given, got {sorted(map(str, expected))[:5]}"
        )
    return KeyLayout.sequential(max(int(match[1]) for match in indices if match is not None), arch)


def _load_file(
    path: Path, wanted: Wanted, arch: str, layout: KeyLayout, member: Optional[KnownCheckpoint], mode: str
) -> LoadedWeights:
    """Load from a file: safetensors lazily, torch files through the features cache."""
    try:
        sha256, fresh = indexed_sha256(path)
    except OSError as error:  # permission denied, an I/O error: say so instead of a traceback
        raise WeightsLoadError(
            f"cannot read weights file {path} ({error.strerror or error}); check its permissions, "
            "or pass another file",
            path=str(path),
        ) from None
    verified = check_known_hash(path, sha256, member, mode)
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
        known = member if member is not None else known_by_file_name(path.name)
        extra = {} if known is None else {"checkpoint": known.name, "verified": verified}
        attempt(lambda: remember_sha256(path, stat, sha256, **extra))
    if path.suffix.lower() == ".safetensors":
        try:
            with safetensors.safe_open(path, framework="pt") as handle:
                state = select_tensors(safetensors_view(handle), wanted, str(path), arch, layout)
        except safetensors.SafetensorError as error:
            raise WeightsLoadError(f"cannot read safetensors file {path}: {error}", path=str(path)) from error
    else:
        cache = cache_file(path, sha256, layout)
        cached = None
        try:
            cached = read_cached(cache, sha256, wanted, f"{path} (via features cache {cache.name})", arch, layout)
        except OSError as error:
            problems.append(f"{type(error).__name__}: {error}")
        if cached is not None:
            state = cached
        else:
            full = read_checkpoint(path)
            state = select_tensors(dict_view(full), wanted, str(path), arch, layout)
            attempt(lambda: write_cache(cache, full, path, sha256, layout))
    if problems:
        warnings.warn(
            f"featx weights cache {cache_dir()} is not usable ({'; '.join(problems)}); loaded {path.name} without "
            "it. If the directory is not writable, set FEATX_HOME to one that is.",
            FeatxWarning,
            stacklevel=4,
        )
    return LoadedWeights(state, weights_id, sha256, str(path), verified)
