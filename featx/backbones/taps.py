"""Tap resolution: which layers an extractor returns, and where they sit (timm's ``feature_info``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Optional, Union

from featx._checks import check_choice
from featx.backbones.vgg.layers import layer_specs
from featx.errors import FeatxTypeError, FeatxValueError
from featx.presets import PRESETS

__all__ = ["TapInfo", "resolve_taps", "select_taps", "tap_names"]


@dataclass(frozen=True)
class TapInfo:
    """Where a tap sits and what it returns (timm's ``feature_info``).

    Attributes:
        name: canonical layer name.
        index: the layer's position in the family's depth order (for VGG and AlexNet, its index in
            the ``features`` Sequential).
        channels: channels of the tapped feature map.
        stride: spatial downsampling of the tapped map relative to the input.
    """

    name: str
    index: int
    channels: int
    stride: int


def tap_names(taps: object, *, arch: str) -> list[str]:
    """The names a ``taps`` argument lists: ``"a"``, ``"a,b"`` or an iterable of names (not checked yet).

    Raises:
        TypeError: ``taps`` is not a string or an iterable of strings.
        ValueError: no name at all.

    Example:
        >>> tap_names("relu1_1, relu2_1", arch="vgg19")
        ['relu1_1', 'relu2_1']
    """
    if isinstance(taps, str):
        names = [part.strip() for part in taps.split(",") if part.strip()]
    elif isinstance(taps, Iterable):
        names = list(taps)
    else:
        raise FeatxTypeError(f"taps must be a preset name, a tap name or a list of tap names, got {type(taps).__name__}")
    if not names:
        raise FeatxValueError(f"taps must name at least one layer of {arch}, got {taps!r}")
    for name in names:
        if not isinstance(name, str):
            raise FeatxTypeError(f"tap names must be strings, got {name!r} ({type(name).__name__})")
    return names


def select_taps(
    available: Sequence[TapInfo],
    taps: Union[str, Iterable[str]],
    *,
    arch: str,
    groups: Optional[Mapping[str, Sequence[str]]] = None,
) -> tuple[TapInfo, ...]:
    """Validate tap names against a family's layers, drop duplicates and order them by depth.

    Args:
        available: every tappable layer of the architecture, in depth order.
        taps: a group name (a preset such as ``"ttsr_lte"``), one tap, ``"a,b"`` or an iterable of names.
        arch: the architecture, for messages.
        groups: names that stand for several taps when given alone as a string (presets).

    Returns:
        One :class:`TapInfo` per distinct tap, shallowest first.

    Raises:
        TypeError: ``taps`` is not a string or an iterable of strings.
        ValueError: empty tap list or unknown tap (with the closest valid name).

    Example:
        >>> layers = (TapInfo("a", 0, 8, 1), TapInfo("b", 1, 16, 2))
        >>> [info.name for info in select_taps(layers, "b,a,b", arch="demo")]
        ['a', 'b']
    """
    by_name = {info.name: info for info in available}
    groups = groups or {}
    if isinstance(taps, str) and taps in groups:
        names = list(groups[taps])
    else:
        names = tap_names(taps, arch=arch)
    # a lone string may also have meant a group; inside a list only layer names are valid
    valid = (*by_name, *groups) if isinstance(taps, str) and len(names) == 1 else tuple(by_name)
    for name in names:
        if name not in by_name:
            check_choice("tap", name, valid, context=f" for {arch}")
    return tuple(sorted({by_name[name] for name in names}, key=lambda info: info.index))


def resolve_taps(arch: str, taps: Union[str, Iterable[str]], *, pooling: str = "max") -> tuple[TapInfo, ...]:
    """Validate VGG tap names, drop duplicates and order them by depth.

    Args:
        arch: one of :data:`featx.backbones.vgg.layers.ARCHS`.
        taps: a preset name (``"ttsr_lte"``), one tap (``"relu3_1"``), a comma-separated string
            (``"relu1_1,relu2_1"``) or an iterable of tap names.
        pooling: pooling variant (changes the strides only).

    Returns:
        One :class:`TapInfo` per distinct tap, shallowest first.

    Raises:
        TypeError: ``taps`` is not a string or an iterable of strings.
        ValueError: empty tap list, unknown tap (with the closest valid name), or a preset that
            belongs to another architecture.

    Example:
        >>> [t.name for t in resolve_taps("vgg19", ["relu3_1", "relu1_1", "relu3_1"])]
        ['relu1_1', 'relu3_1']
        >>> resolve_taps("vgg19", "ttsr_lte")[-1]
        TapInfo(name='relu3_1', index=11, channels=256, stride=4)
    """
    available = tuple(TapInfo(s.name, s.index, s.out_channels, s.stride) for s in layer_specs(arch, pooling=pooling))
    if isinstance(taps, str) and taps in PRESETS:
        preset = PRESETS[taps]
        if preset.arch.removesuffix("_bn") != arch.removesuffix("_bn"):
            raise FeatxValueError(f"preset {taps!r} is defined for {preset.arch!r}, got arch={arch!r}")
    family = arch.removesuffix("_bn")
    groups = {name: preset.taps for name, preset in PRESETS.items() if preset.arch.removesuffix("_bn") == family}
    return select_taps(available, taps, arch=arch, groups=groups)
