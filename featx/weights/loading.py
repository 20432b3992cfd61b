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
    MissingWeights,
    RandomWeightsWarning,
    WeightsLoadError,
    WeightsNotFoundError,
)
from featx.weights.cache import cache_file, read_cached, write_cache
from featx.weights.checkpoint import read_checkpoint
from featx.weights.index import indexed_sha256, remember_sha256, remember_values_checked, values_checked
from featx.weights.info import Verification
from featx.weights.locations import cache_dir, locate
from featx.weights.matching import (
    FEATURE_KEY,
    KeyLayout,
    TensorView,
    Wanted,
    check_values,
    dict_view,
    parse_expected,
    safetensors_view,
    select_tensors,
)
from featx.weights.registry import (
    BACKBONE_ARCHS,
    KnownCheckpoint,
    WeightsSpec,
    default_backbone,
    from_torchvision_name,
    known_by_file_name,
    known_checkpoints,
    member_named,
)
from featx.weights.verification import REQUIRE_VERIFIED_ENV, VERIFY_MODES, HashCheck, check_known_hash, verify_mode

__all__ = [
    "LoadedWeights",
    "REQUIRE_VERIFIED_ENV",
    "VERIFY_MODES",
    "check_known_hash",
    "load_weights",
    "provenance_id",
    "verify_mode",
]


@dataclass(frozen=True, eq=False)
class LoadedWeights:
    """Tensors for the kept layers and where they came from.

    Attributes:
        state_dict: exactly the ``expected`` keys, in their order.
        weights_id: the checkpoint's name when it was loaded by name and its full sha256 matched
            (``"VGG19_IMAGENET1K_V1"``), ``"prefix-verified:<name>"`` (loaded by the name of a
            prefix-only entry, and its sha256 starts with that prefix), ``"unverified:<name>"``
            (loaded by name, and its size or sha256 differs), ``"file:<resolved path>"`` or
            ``"state_dict"``.
        sha256: full sha256 of the source file, ``None`` for in-memory state dicts.
        source: the file path, ``None`` for in-memory state dicts.
        verification: how far the file was checked (:class:`~featx.weights.Verification`):
            ``SHA256`` (size and full sha256 match the checkpoint it is loaded as, is named like, or
            whose content it is), ``PREFIX`` (a prefix-only entry's 8 hex digits match),
            ``MISMATCH`` or ``UNKNOWN`` (nothing to check against: another file, a state dict).
        checkpoint: the name of the known checkpoint it was compared with or recognised as.
    """

    state_dict: dict[str, Tensor] = field(repr=False)
    weights_id: str
    sha256: Union[str, None]
    source: Union[str, None]
    verification: Verification = Verification.UNKNOWN
    checkpoint: Optional[str] = None

    @property
    def verified(self) -> Optional[bool]:
        """``True`` only for a full sha256 match, ``False`` for a mismatch, ``None`` otherwise
        (a prefix-only match, or nothing to check against)."""
        return self.verification.verified


def provenance_id(name: str, verification: Verification) -> str:
    """The weights id of a checkpoint loaded by name: the name only when its full sha256 matched.

    Example:
        >>> provenance_id("VGG13_IMAGENET1K_V1", Verification.PREFIX)
        'prefix-verified:VGG13_IMAGENET1K_V1'
    """
    prefix = {Verification.SHA256: "", Verification.PREFIX: "prefix-verified:"}.get(verification, "unverified:")
    return prefix + name


def _looks_like_path(text: str) -> bool:
    return "/" in text or os.sep in text or text.startswith("~") or Path(text).suffix != ""


def _resolve_name(weights: WeightsSpec, arch: str) -> Union[KnownCheckpoint, None]:
    """The known checkpoint ``weights`` names, ``None`` for paths; raises for wrong or unknown names."""
    member: Union[KnownCheckpoint, None] = None
    if isinstance(weights, KnownCheckpoint):
        member = weights
    elif isinstance(weights, enum.Enum) and isinstance(getattr(weights, "url", None), str):
        # A torchvision WeightsEnum member, e.g. torchvision.models.ResNet50_Weights.IMAGENET1K_V2.
        url: str = getattr(weights, "url")  # noqa: B009 (mypy: Enum has no url)
        member = known_by_file_name(url.rsplit("/", 1)[-1])
        if member is None:
            raise FeatxValueError(f"{weights} ({url}) is not a checkpoint featx knows; pass weights=PATH to its file")
    elif isinstance(weights, enum.Enum):
        raise FeatxTypeError(f"weights={weights!r} is an enum member but not a registry (or torchvision weights) member")
    elif isinstance(weights, str):
        if weights == "DEFAULT":
            return default_backbone(arch)
        tagged = [m for m in known_checkpoints() if m.kind == "backbone" and m.arch == arch and m.tag == weights]
        if tagged:  # torchvision's tag alone ("IMAGENET1K_V2"): the model's own arch
            return tagged[0]
        member = member_named(weights)
        if member is None and (from_torchvision := from_torchvision_name(weights)) is not None:
            member = from_torchvision  # "VGG19_Weights.IMAGENET1K_V1": a name, not a path with a suffix
        if member is None:
            if Path(weights).expanduser().is_file() or _looks_like_path(weights):
                return None
            choices = ["DEFAULT", *(m.name for m in known_checkpoints())]
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
    only the ``expected`` tensors from that cache. Values (finite floats) are checked once per
    verified file (a registry match by size and full sha256, or a features cache featx wrote),
    remembered in the index by the content's sha256 and size; other files at every load.

    Args:
        weights: ``"DEFAULT"`` (``default_backbone(arch)``: the first checkpoint of the arch's
            family enum, e.g. ``VGGWeights.VGG19_IMAGENET1K_V1``, ``ResNetWeights.RESNET50_IMAGENET1K_V1``),
            a registry member or its name, a torchvision weights member or name
            (``ResNet50_Weights.IMAGENET1K_V2``; ``.DEFAULT`` as torchvision means it; or the tag
            alone, ``"IMAGENET1K_V1"``, for ``arch``'s), a path (``.pth``, ``.pt``, ``.safetensors``),
            an in-memory state dict, or ``None`` (random weights: warns :class:`RandomWeightsWarning`
            and returns ``None``).
        arch: the architecture being built (one of :data:`~featx.weights.registry.BACKBONE_ARCHS`).
        expected: every key the truncated extractor needs (``"features.0.weight"``, ...) -> shape.
        layout: how the family's checkpoint keys map onto the module (:class:`KeyLayout`): which
            keys are the head or deeper layers (ignored) and how key variants are written. Default:
            a torchvision ``features`` Sequential up to the deepest expected index (VGG, AlexNet):
            keys ``features.{i}.*`` or bare ``{i}.*``, ``classifier.*`` ignored.
        verify: what a known checkpoint's file (loaded by name, named like it) does when it is not
            fully verified (:func:`~featx.weights.verification.check_known_hash`): ``"warn"`` (a
            size or sha256 mismatch warns :class:`UnverifiedWeightsWarning` at every load and is
            recorded as ``"unverified:<name>"`` with its real sha256; a prefix-only entry loads as
            ``"prefix-verified:<name>"``) or ``"error"`` (a mismatch raises
            :class:`HashMismatchError`, a prefix-only entry :class:`UnverifiableWeightsError`).
            ``None`` (default): ``"error"`` when ``FEATX_REQUIRE_VERIFIED=1``, else ``"warn"``.

    Returns:
        :class:`LoadedWeights`, or ``None`` for ``weights=None``.

    Raises:
        TypeError: ``weights`` of an unsupported type, or a state dict with non-tensor values.
        ValueError: unknown checkpoint name (with the closest valid one), one of another arch, or
            an invalid ``verify`` / ``FEATX_REQUIRE_VERIFIED``.
        HashMismatchError: with ``verify="error"``, a checkpoint whose size or sha256 does not match.
        UnverifiableWeightsError: with ``verify="error"``, a prefix-only checkpoint.
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
            "weights must be 'DEFAULT', a registry member (VGGWeights, ResNetWeights, ...) or its name, a path, "
            "a state dict or None, "
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
            missing=[MissingWeights("weights", str(path.absolute()))],
        )
    path = path.resolve()
    return _load_file(path, wanted, arch, layout, None, mode)


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
    """Load from a file: safetensors lazily, torch files through the features cache.

    Values (finite floats) are checked once per verified file: a file whose size and full sha256
    match a known checkpoint has every backbone tensor checked at its first load, and the index
    remembers it under that sha256 and size (:func:`~featx.weights.index.values_checked`); later
    loads of the same content skip the check. Any other file is checked at every load (a ``.pth``
    file's features cache is a verified file of featx's own: see :func:`read_cached`).
    """
    try:
        stat = path.stat()
        sha256, fresh = indexed_sha256(path)
    except OSError as error:  # permission denied, an I/O error: say so instead of a traceback
        raise WeightsLoadError(
            f"cannot read weights file {path} ({error.strerror or error}); check its permissions, or pass another file",
            path=str(path),
        ) from None
    check = check_known_hash(path, sha256, member, mode, size=stat.st_size)
    weights_id = f"file:{path}" if member is None else provenance_id(member.name, check.verification)
    verified = check.verification is Verification.SHA256
    problems: list[str] = []

    def attempt(action: Callable[[], None]) -> None:
        try:
            action()
        except Exception as error:  # the cache is an optimisation: never fail a load because of it
            problems.append(f"{type(error).__name__}: {error}")

    if fresh:
        extra = _index_extra(check)
        attempt(lambda: remember_sha256(path, stat, sha256, **extra))
    checked = verified and values_checked(sha256, stat.st_size, layout.cache_tag)

    def remember_checked() -> None:  # every backbone tensor of this verified file is a finite float
        if verified and not checked:
            attempt(lambda: remember_values_checked(sha256, stat.st_size, layout.cache_tag))

    if path.suffix.lower() == ".safetensors":
        try:
            with safetensors.safe_open(path, framework="pt") as handle:
                view = safetensors_view(handle)
                state = select_tensors(view, wanted, str(path), arch, layout, check=not checked)
                if verified and not checked and _all_finite(view, layout):
                    remember_checked()
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
            state = select_tensors(dict_view(full), wanted, str(path), arch, layout, check=not checked)
            finite = checked or _all_finite(dict_view(full), layout)
            if finite:
                remember_checked()
                attempt(lambda: write_cache(cache, full, path, sha256, layout, checked=True))
    if problems:
        warnings.warn(
            f"featx weights cache {cache_dir()} is not usable ({'; '.join(problems)}); loaded {path.name} without "
            "it. If the directory is not writable, set FEATX_HOME to one that is.",
            FeatxWarning,
            stacklevel=4,
        )
    return LoadedWeights(state, weights_id, sha256, str(path), check.verification, _name_of(check))


def _all_finite(tensors: TensorView, layout: KeyLayout) -> bool:
    """Whether every backbone tensor (any depth, the head left out) is a finite float (one at a time)."""
    for key in tensors.keys:
        canonical = layout.canonical(key)
        if canonical is None:
            continue
        try:
            check_values({canonical: tensors.get(key)}, "")
        except WeightsLoadError:  # in layers this load did not need: nothing remembered, no cache
            return False
    return True


def _index_extra(check: HashCheck) -> dict[str, str]:
    """What the sha256 index records about a known checkpoint's file besides its hash."""
    if check.checkpoint is None:
        return {}
    return {"checkpoint": check.checkpoint.name, "verification": str(check.verification)}


def _name_of(check: HashCheck) -> Optional[str]:
    return None if check.checkpoint is None else check.checkpoint.name
