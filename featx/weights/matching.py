"""Strict selection of the kept layers' tensors from a checkpoint: keys, shapes and values."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from featx.errors import FeatxTypeError, FeatxValueError, WeightsLoadError

__all__ = [
    "FEATURE_KEY",
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
"""Canonical ``features.{i}.{name}`` -> (key as the caller wrote it, shape)."""


def parse_expected(expected: Mapping[str, Any]) -> Wanted:
    """Canonical ``features.{i}.{name}`` -> (key as the caller wrote it, shape)."""
    if not isinstance(expected, Mapping) or not expected:
        raise FeatxTypeError(f"expected must be a non-empty mapping of state-dict keys to shapes, got {expected!r}")
    wanted = {}
    for key, shape in expected.items():
        match = FEATURE_KEY.fullmatch(key) if isinstance(key, str) else None
        if match is None:
            raise FeatxValueError(f"expected keys look like 'features.0.weight', got {key!r}")
        wanted[f"features.{match[1]}.{match[2]}"] = (key, tuple(int(size) for size in shape))
    return wanted


def _index_of(canonical: str) -> int:
    """The layer index of a canonical ``features.{i}.{name}`` key."""
    match = FEATURE_KEY.fullmatch(canonical)
    if match is None:  # canonical keys come from parse_expected
        raise FeatxValueError(f"not a features key: {canonical!r}")
    return int(match[1])


def _fmt(keys: list[str]) -> str:
    more = f" ... and {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else ""
    return f"{keys[:_SHOWN]}{more}"


def select_tensors(tensors: TensorView, wanted: Wanted, where: str, arch: str) -> dict[str, Tensor]:
    """Strictly pick the kept layers' tensors; classifier and layers past the deepest one are ignored."""
    deepest = max(_index_of(canonical) for canonical in wanted)
    found: dict[str, str] = {}
    unexpected = []
    for key in tensors.keys:
        match = FEATURE_KEY.fullmatch(key)
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
