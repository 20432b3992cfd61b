"""Strict selection of the kept layers' tensors from a checkpoint: keys, shapes and values."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import Tensor

from featx.errors import FeatxTypeError, FeatxValueError, WeightsLoadError

__all__ = [
    "FEATURE_KEY",
    "KeyLayout",
    "backbone_tensors",
    "TensorView",
    "Wanted",
    "check_values",
    "dict_view",
    "parse_expected",
    "safetensors_view",
    "select_tensors",
]

FEATURE_KEY = re.compile(r"(?:features\.)?(\d+)\.(.+)")
_SHOWN = 20  # keys listed per category in an error message


def _identity(key: str) -> Optional[str]:
    return key


def _everything(key: str) -> bool:
    return True


@dataclass(frozen=True)
class KeyLayout:
    """How a family's checkpoint keys map onto the modules featx builds.

    Loading is strict for the layers featx builds and ignores the rest: a checkpoint key is first
    mapped by :attr:`canonical` to the module's own state-dict key (``None``: the classifier head or
    another part featx never builds, skipped); a canonical key that :attr:`built` rejects belongs to a
    layer past the deepest tap and is skipped too; every other key must be one the module expects.

    Attributes:
        canonical: checkpoint key -> the module's key, or ``None`` for parts featx never builds. Must
            be idempotent (the features cache stores canonical keys and maps them again when read).
        built: canonical key -> whether its layer is built (``False`` for layers past the deepest tap).
        scope: what was built, for messages (``"vgg19 up to features.11"``).
        hint: what the family's checkpoints look like, for messages.
        cache_tag: names the family's features-cache files (``{stem}-{sha256[:16]}-{cache_tag}.safetensors``).

    Example:
        >>> layout = KeyLayout.sequential(deepest=4)
        >>> layout.canonical("3.weight"), layout.canonical("classifier.0.weight"), layout.built("features.6.bias")
        ('features.3.weight', None, False)
    """

    canonical: Callable[[str], Optional[str]] = _identity
    built: Callable[[str], bool] = _everything
    scope: str = "the model"
    hint: str = ""
    cache_tag: str = "features"

    @classmethod
    def sequential(cls, deepest: int, arch: str = "the model") -> KeyLayout:
        """The layout of a torchvision ``features`` Sequential (VGG, AlexNet) built up to ``features[deepest]``.

        Keys may be ``features.{i}.*`` (a torchvision model) or ``{i}.*`` (a ``model.features`` state
        dict); ``classifier.*`` is never built.
        """

        def canonical(key: str) -> Optional[str]:
            if key.startswith("classifier."):
                return None
            match = FEATURE_KEY.fullmatch(key)
            return f"features.{match[1]}.{match[2]}" if match else key

        def built(key: str) -> bool:
            match = FEATURE_KEY.fullmatch(key)
            return match is None or int(match[1]) <= deepest

        hint = (
            "Keys may be 'features.{i}.*' (a torchvision model) or '{i}.*' (a model.features state dict); "
            f"classifier.* and layers past features.{deepest} are ignored."
        )
        return cls(canonical, built, f"{arch} up to features.{deepest}", hint)


@dataclass(frozen=True)
class TensorView:
    """A read-only view of named tensors whose shapes can be read before the data."""

    keys: tuple[str, ...]
    shape: Callable[[str], tuple[int, ...]]
    get: Callable[[str], Tensor]


def dict_view(state_dict: Mapping[str, Tensor]) -> TensorView:
    return TensorView(tuple(state_dict), lambda key: tuple(state_dict[key].shape), state_dict.__getitem__)


def safetensors_view(handle: Any) -> TensorView:
    return TensorView(tuple(handle.keys()), lambda key: tuple(handle.get_slice(key).get_shape()), handle.get_tensor)


Wanted = dict[str, tuple[str, tuple[int, ...]]]
"""Canonical key -> (key as the caller wrote it, shape)."""


def parse_expected(expected: Mapping[str, Any], layout: KeyLayout) -> Wanted:
    """Canonical key -> (key as the caller wrote it, shape), for every key the module needs.

    Raises:
        TypeError: ``expected`` is not a non-empty mapping.
        ValueError: a key the layout does not build.
    """
    if not isinstance(expected, Mapping) or not expected:
        raise FeatxTypeError(f"expected must be a non-empty mapping of state-dict keys to shapes, got {expected!r}")
    wanted = {}
    for key, shape in expected.items():
        canonical = layout.canonical(key) if isinstance(key, str) else None
        if canonical is None or not layout.built(canonical):
            raise FeatxValueError(f"expected key {key!r} is not a key of {layout.scope}")
        wanted[canonical] = (key, tuple(int(size) for size in shape))
    return wanted


def _fmt(keys: list[str]) -> str:
    more = f" ... and {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else ""
    return f"{keys[:_SHOWN]}{more}"


def backbone_tensors(state_dict: Mapping[str, Tensor], layout: KeyLayout) -> dict[str, Tensor]:
    """Every tensor of a checkpoint that belongs to the family's backbone (any depth), under its canonical key."""
    kept = {}
    for key, value in state_dict.items():
        canonical = layout.canonical(key)
        if canonical is not None:
            kept[canonical] = value
    return kept


def select_tensors(
    tensors: TensorView, wanted: Wanted, where: str, arch: str, layout: KeyLayout, *, check: bool = True
) -> dict[str, Tensor]:
    """Strictly pick the built layers' tensors; the head and layers past the deepest tap are ignored.

    Args:
        tensors: the checkpoint.
        wanted: from :func:`parse_expected`.
        where: the source, for messages.
        arch: the architecture, for messages.
        layout: how checkpoint keys map onto the module.
        check: check that the values are finite floats (``False`` only for a features cache whose
            values featx checked when it wrote it).

    Raises:
        WeightsLoadError: missing, unexpected or mis-shaped keys (sorted lists), non-float or
            non-finite values.
    """
    found: dict[str, str] = {}
    unexpected = []
    for key in tensors.keys:
        canonical = layout.canonical(key)
        if canonical is None or not layout.built(canonical):
            continue
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
        parts = [f"{where} does not fit {layout.scope} (loading is strict for the layers featx builds):"]
        if missing:
            parts.append(f"  missing keys ({len(missing)}): {_fmt(missing)}")
        if unexpected:
            parts.append(f"  unexpected keys ({len(unexpected)}): {_fmt(unexpected)}")
        if mismatched:
            parts.append(f"  shape mismatches ({len(mismatched)}): {_fmt(mismatched)}")
        parts.append(f"Is it a checkpoint of another architecture than {arch}? {layout.hint}".rstrip())
        raise WeightsLoadError(
            "\n".join(parts),
            path=where if where != "the in-memory state dict" else None,
            missing=missing,
            unexpected=unexpected,
            mismatched=mismatched,
        )
    selected = {wanted[canonical][0]: tensors.get(found[canonical]) for canonical in wanted if canonical in found}
    if check:
        check_values(selected, where)
    selected.update(filled)
    return {key: selected[key] for key, _ in wanted.values()}


def check_values(selected: Mapping[str, Tensor], where: str) -> None:
    """Weights, biases and BatchNorm statistics must be finite floating-point tensors."""
    path = where if where != "the in-memory state dict" else None
    for key, value in selected.items():
        if key.endswith(".num_batches_tracked"):
            continue  # BatchNorm's integer step counter
        if not value.is_floating_point():
            raise WeightsLoadError(
                f"{where}: {key} is {value.dtype}, not floating point; backbone weights are float tensors "
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
