"""VGG configurations and canonical layer names (``conv3_4``, ``relu3_1``, ``pool2``).

Everything here is plain data computed from one config table; nothing imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from featx._checks import check_choice
from featx.errors import FeatxTypeError

__all__ = ["ARCHS", "POOLINGS", "LayerSpec", "check_arch", "layer_names", "layer_specs", "min_input_size"]

# Convolution widths per block, "M" marks a pooling layer (Simonyan & Zisserman 2015, table 1:
# configurations A, B, D, E; the same table torchvision builds its ``features`` from).
_CONFIGS: dict[str, tuple[Union[int, str], ...]] = {
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg13": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    "vgg19": (
        64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
        512, 512, 512, 512, "M", 512, 512, 512, 512, "M",
    ),
}  # fmt: skip

ARCHS: tuple[str, ...] = tuple(name + suffix for name in _CONFIGS for suffix in ("", "_bn"))
"""Supported architectures: ``vgg11``, ``vgg11_bn``, ..., ``vgg19_bn``."""

POOLINGS: tuple[str, ...] = ("max", "avg", "blur", "l2", "conv", "none")
"""Pooling variants: max (torchvision), avg (Gatys), blur (anti-aliased), conv (learnable), none."""


def check_arch(arch: object) -> str:
    """Validate an architecture name and return it.

    Raises:
        TypeError: ``arch`` is not a string.
        ValueError: unknown architecture; the message lists the valid ones.

    Example:
        >>> check_arch("vgg19_bn")
        'vgg19_bn'
    """
    if not isinstance(arch, str):
        raise FeatxTypeError(f"arch must be a string such as 'vgg19', got {type(arch).__name__}")
    return check_choice("arch", arch, ARCHS)


@dataclass(frozen=True)
class LayerSpec:
    """One layer of a VGG ``features`` stack.

    Attributes:
        name: canonical name (``conv3_4``, ``bn3_4``, ``relu3_4``, ``pool3``).
        index: position in torchvision's ``features`` Sequential (state-dict key ``features.{index}.*``).
        kind: ``"conv"``, ``"bn"``, ``"relu"`` or ``"pool"``.
        in_channels: channels entering the layer.
        out_channels: channels leaving the layer.
        stride: total downsampling factor of this layer's output relative to the input.
        params: number of learnable parameters (BN running statistics are buffers, not counted).
        pools_before: pooling layers at or before this one (sets the minimum input size).
    """

    name: str
    index: int
    kind: str
    in_channels: int
    out_channels: int
    stride: int
    params: int
    pools_before: int


def layer_specs(arch: str, *, pooling: str = "max") -> tuple[LayerSpec, ...]:
    """All layers of an architecture's ``features`` stack, in order, with canonical names.

    Args:
        arch: one of :data:`ARCHS`.
        pooling: one of :data:`POOLINGS`; ``"none"`` keeps stride 1 throughout and ``"conv"``
            adds a learnable 3x3 convolution per pooling layer to the parameter count.

    Returns:
        One :class:`LayerSpec` per layer; ``len`` is 37 for vgg19 and 53 for vgg19_bn.

    Raises:
        ValueError: unknown ``arch`` or ``pooling``.

    Example:
        >>> specs = layer_specs("vgg19")
        >>> [(s.name, s.index) for s in specs if s.name in ("relu1_1", "relu3_1", "conv5_4")]
        [('relu1_1', 1), ('relu3_1', 11), ('conv5_4', 34)]
        >>> sum(s.params for s in specs)
        20024384
    """
    check_arch(arch)
    check_choice("pooling", pooling, POOLINGS)
    base, batch_norm = arch.removesuffix("_bn"), arch.endswith("_bn")
    specs: list[LayerSpec] = []
    block, conv_in_block, channels, stride, pools = 1, 0, 3, 1, 0

    def add(name: str, kind: str, out_channels: int, params: int) -> None:
        specs.append(LayerSpec(name, len(specs), kind, channels, out_channels, stride, params, pools))

    for item in _CONFIGS[base]:
        if item == "M":
            if pooling != "none":
                stride *= 2
            pools += 1
            add(f"pool{block}", "pool", channels, channels * channels * 9 + channels if pooling == "conv" else 0)
            block, conv_in_block = block + 1, 0
            continue
        width = int(item)
        conv_in_block += 1
        suffix = f"{block}_{conv_in_block}"
        add(f"conv{suffix}", "conv", width, channels * width * 9 + width)
        channels = width
        if batch_norm:
            add(f"bn{suffix}", "bn", width, 2 * width)
        add(f"relu{suffix}", "relu", width, 0)
    return tuple(specs)


def layer_names(arch: str) -> tuple[str, ...]:
    """Canonical layer names of ``arch`` in ``features`` order.

    Example:
        >>> layer_names("vgg11")[:4]
        ('conv1_1', 'relu1_1', 'pool1', 'conv2_1')
    """
    return tuple(spec.name for spec in layer_specs(arch))


def min_input_size(arch: str, deepest_tap: str, *, pooling: str = "max") -> int:
    """Smallest height/width that still gives a non-empty map at ``deepest_tap``.

    Each 2x2 pooling layer at or before the tap halves the size (rounding down), so the
    minimum is ``2 ** pools``. L2 pooling (DISTS: a 3x3 filter at stride 2 with zero padding 1)
    gives ``ceil(size / 2)`` positions, never 0, so with ``pooling="l2"``, as with ``"none"``, any
    size from 1 works (DISTS_pytorch scores 1x1 images too).

    Example:
        >>> min_input_size("vgg19", "relu5_1"), min_input_size("vgg16", "relu5_3", pooling="l2")
        (16, 1)
    """
    spec = {s.name: s for s in layer_specs(arch, pooling=pooling)}[deepest_tap]
    return 1 if pooling in ("none", "l2") else 2**spec.pools_before
