"""Tap resolution: which layers an extractor returns, and where they sit (timm's ``feature_info``)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Union

from featx._checks import check_choice
from featx.backbones.vgg.layers import layer_specs
from featx.errors import FeatxTypeError, FeatxValueError
from featx.presets import PRESETS

__all__ = ["TapInfo", "resolve_taps"]


@dataclass(frozen=True)
class TapInfo:
    """Where a tap sits and what it returns (timm's ``feature_info``).

    Attributes:
        name: canonical layer name.
        index: index in the ``features`` Sequential.
        channels: channels of the tapped feature map.
        stride: spatial downsampling of the tapped map relative to the input.
    """

    name: str
    index: int
    channels: int
    stride: int


def resolve_taps(arch: str, taps: Union[str, Iterable[str]], *, pooling: str = "max") -> tuple[TapInfo, ...]:
    """Validate tap names, drop duplicates and order them by depth.

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
    specs = {spec.name: spec for spec in layer_specs(arch, pooling=pooling)}
    if isinstance(taps, str):
        if taps in PRESETS:
            preset = PRESETS[taps]
            if preset.arch.removesuffix("_bn") != arch.removesuffix("_bn"):
                raise FeatxValueError(f"preset {taps!r} is defined for {preset.arch!r}, got arch={arch!r}")
            names = list(preset.taps)
        else:
            names = [part.strip() for part in taps.split(",") if part.strip()]
    elif isinstance(taps, Iterable):
        names = list(taps)
    else:
        raise FeatxTypeError(f"taps must be a preset name, a tap name or a list of tap names, got {type(taps).__name__}")
    if not names:
        raise FeatxValueError(f"taps must name at least one layer of {arch}, got {taps!r}")
    # a lone string may also have meant a preset; inside a list only layer names are valid
    valid = (*specs, *PRESETS) if isinstance(taps, str) and len(names) == 1 else tuple(specs)
    for name in names:
        if not isinstance(name, str):
            raise FeatxTypeError(f"tap names must be strings, got {name!r} ({type(name).__name__})")
        if name not in specs:
            check_choice("tap", name, valid, context=f" for {arch}")
    chosen = sorted({specs[name] for name in names}, key=lambda spec: spec.index)
    return tuple(TapInfo(s.name, s.index, s.out_channels, s.stride) for s in chosen)
