"""The ConvNeXt architectures featx builds and their tap names, as plain data (nothing here imports torch).

Tap names follow torchvision's module structure (``model.features``): ``stem`` is ``features.0``,
``stage1`` ... ``stage4`` the outputs of ``features.1/3/5/7``, ``downsample2`` ... ``downsample4`` the
downsampling layers ``features.2/4/6``, and ``stage3.4`` the output of block 4 of stage 3
(``features.5.4``). torchvision's paths are taps too, and name the same layers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Union

from featx._checks import check_choice, closest
from featx.backbones.taps import TapInfo, tap_names
from featx.errors import FeatxValueError

__all__ = [
    "CONVNEXT_ARCHS",
    "ConvNeXtLayer",
    "ConvNeXtSpec",
    "convnext_aliases",
    "convnext_layers",
    "convnext_min_input_size",
    "convnext_output_size",
    "convnext_taps",
    "resolve_convnext_taps",
]

LAYER_SCALE = 1e-6
"""Initial value of every block's ``layer_scale`` (torchvision's ``ConvNeXt`` default)."""
NORM_EPS = 1e-6
"""``eps`` of every LayerNorm in torchvision's ConvNeXt."""
NUM_CLASSES = 1000


@dataclass(frozen=True)
class ConvNeXtSpec:
    """One ConvNeXt, as torchvision's ``convnext_tiny/small/base`` define it (Liu et al. 2022, sec. 3).

    Attributes:
        dims: channels of the four stages.
        depths: blocks per stage.
        stochastic_depth_prob: torchvision's training value (featx's default is 0: deterministic features).
    """

    dims: tuple[int, int, int, int]
    depths: tuple[int, int, int, int]
    stochastic_depth_prob: float


# torchvision/models/convnext.py: convnext_tiny (96, 192, 384, 768 channels; 3, 3, 9, 3 blocks;
# stochastic depth 0.1), convnext_small (the same with 27 blocks in stage 3; 0.4), convnext_base
# (128, 256, 512, 1024 channels; 3, 3, 27, 3 blocks; 0.5).
CONVNEXT_ARCHS: dict[str, ConvNeXtSpec] = {
    "convnext_tiny": ConvNeXtSpec((96, 192, 384, 768), (3, 3, 9, 3), 0.1),
    "convnext_small": ConvNeXtSpec((96, 192, 384, 768), (3, 3, 27, 3), 0.4),
    "convnext_base": ConvNeXtSpec((128, 256, 512, 1024), (3, 3, 27, 3), 0.5),
}
"""Every ConvNeXt featx builds, by torchvision's model name."""


@dataclass(frozen=True)
class ConvNeXtLayer:
    """One tappable point of a ConvNeXt's ``features``.

    Attributes:
        name: the tap name (``stem``, ``stage1.0``, ``stage1``, ``downsample2``, ...).
        module: torchvision's module path (``features.0``, ``features.1.0``, ``features.1``, ``features.2``).
        position: place in depth order (the tap's ``TapInfo.index``).
        index: position in torchvision's ``features`` Sequential (0 to 7).
        block: the block within its stage (``stage3.4``: 4), or ``None`` for whole layers.
        kind: ``"stem"``, ``"block"``, ``"stage"`` (a stage's output: that of its last block) or ``"downsample"``.
        channels: channels of the output.
        stride: downsampling of the output relative to the input (exact: ``H // stride``).
        params: learnable parameters of the layer (0 for a stage: its blocks hold them).
    """

    name: str
    module: str
    position: int
    index: int
    block: Union[int, None]
    kind: str
    channels: int
    stride: int
    params: int


def _block_params(dim: int) -> int:
    # 7x7 depthwise conv, LayerNorm, Linear dim -> 4 dim, Linear 4 dim -> dim, layer_scale
    return (49 * dim + dim) + 2 * dim + (4 * dim * dim + 4 * dim) + (4 * dim * dim + dim) + dim


def convnext_layers(arch: str) -> tuple[ConvNeXtLayer, ...]:
    """Every tappable point of ``arch`` in depth order: the stem, each block, each stage, each downsampling.

    Raises:
        ValueError: unknown architecture (with the closest name).

    Example:
        >>> layers = convnext_layers("convnext_tiny")
        >>> [(layer.name, layer.module) for layer in layers[:6]]  # doctest: +NORMALIZE_WHITESPACE
        [('stem', 'features.0'), ('stage1.0', 'features.1.0'), ('stage1.1', 'features.1.1'),
         ('stage1.2', 'features.1.2'), ('stage1', 'features.1'), ('downsample2', 'features.2')]
        >>> len(layers), layers[-1].stride
        (26, 32)
    """
    spec = CONVNEXT_ARCHS[check_choice("arch", arch, tuple(CONVNEXT_ARCHS))]
    layers: list[ConvNeXtLayer] = []

    def add(name: str, module: str, index: int, block: Union[int, None], kind: str, dim: int, stride: int, params: int) -> None:
        layers.append(ConvNeXtLayer(name, module, len(layers), index, block, kind, dim, stride, params))

    first = spec.dims[0]
    add("stem", "features.0", 0, None, "stem", first, 4, 3 * first * 16 + first + 2 * first)  # 4x4/4 conv, LayerNorm
    stride = 4
    for stage, (dim, depth) in enumerate(zip(spec.dims, spec.depths, strict=True), start=1):
        index = 2 * stage - 1
        if stage > 1:
            stride *= 2
            before = spec.dims[stage - 2]
            params = 2 * before + before * dim * 4 + dim  # LayerNorm, 2x2/2 conv
            add(f"downsample{stage}", f"features.{index - 1}", index - 1, None, "downsample", dim, stride, params)
        for block in range(depth):
            add(f"stage{stage}.{block}", f"features.{index}.{block}", index, block, "block", dim, stride, _block_params(dim))
        add(f"stage{stage}", f"features.{index}", index, None, "stage", dim, stride, 0)
    return tuple(layers)


def convnext_aliases(arch: str) -> dict[str, str]:
    """torchvision's module paths -> tap names (``features.5.4`` -> ``stage3.4``, ``features.6`` -> ``downsample4``).

    Example:
        >>> aliases = convnext_aliases("convnext_tiny")
        >>> aliases["features.0"], aliases["features.5.4"], aliases["features.6"], aliases["features.7"]
        ('stem', 'stage3.4', 'downsample4', 'stage4')
    """
    return {layer.module: layer.name for layer in convnext_layers(arch)}


def convnext_taps(arch: str) -> tuple[TapInfo, ...]:
    """Every tap of ``arch`` in depth order: name, position, channels and stride (timm's ``feature_info``).

    Example:
        >>> convnext_taps("convnext_base")[-1]
        TapInfo(name='stage4', index=43, channels=1024, stride=32)
    """
    return tuple(TapInfo(layer.name, layer.position, layer.channels, layer.stride) for layer in convnext_layers(arch))


def convnext_output_size(size: int, stride: int) -> int:
    """Height (or width) of a map of the given stride for an input of height (or width) ``size``.

    The stem is a 4x4 convolution of stride 4 and each downsampling a 2x2 convolution of stride 2,
    none padded; the 7x7 depthwise convolutions of the blocks are padded and keep the size.

    Example:
        >>> [convnext_output_size(70, stride) for stride in (4, 8, 16, 32)]
        [17, 8, 4, 2]
    """
    size //= 4
    while stride > 4:
        size //= 2
        stride //= 2
    return size


def convnext_min_input_size(arch: str, deepest_tap: str) -> int:
    """Smallest height/width that gives a non-empty map at ``deepest_tap``: its stride.

    Example:
        >>> convnext_min_input_size("convnext_tiny", "stem"), convnext_min_input_size("convnext_tiny", "stage4")
        (4, 32)
    """
    return _layer(arch, deepest_tap).stride


def _closest(tap: str, names: list[str]) -> str:
    """The closest name of the same shape first (``stage5`` -> ``stage4``, not ``stage3.5``), else of any."""
    alike = [name for name in names if name.count(".") == tap.count(".")]
    return closest(tap, alike) or closest(tap, names)


def _layer(arch: str, tap: str) -> ConvNeXtLayer:
    """The layer a tap name (or torchvision module path) names; unknown names get the closest."""
    layers = convnext_layers(arch)
    by_name = {layer.name: layer for layer in layers}
    aliases = convnext_aliases(arch)
    layer = by_name.get(aliases.get(tap, tap))
    if layer is None:
        spec = CONVNEXT_ARCHS[arch]
        last = ", ".join(f"'stage{stage}.{depth - 1}'" for stage, depth in enumerate(spec.depths, start=1))
        raise FeatxValueError(
            f"unknown tap {tap!r} for {arch}.{_closest(tap, [*by_name, *aliases])} Valid choices: 'stem', "
            "'stage1' ... 'stage4', 'downsample2' ... 'downsample4', a block 'stage{s}.{b}' "
            f"(last blocks {last}), or torchvision's module names 'features.0' ... 'features.7' and "
            "'features.{i}.{b}' for a block"
        )
    return layer


def resolve_convnext_taps(arch: str, taps: Union[str, Iterable[str]]) -> tuple[TapInfo, ...]:
    """Tap infos named as the caller spelled them, duplicates dropped, in depth order.

    Raises:
        TypeError: ``taps`` is not a string or an iterable of strings.
        ValueError: an unknown tap (with the closest name), or one layer named by two spellings.

    Example:
        >>> [info.name for info in resolve_convnext_taps("convnext_tiny", "stage2,features.0,stage1.2")]
        ['features.0', 'stage1.2', 'stage2']
    """
    layers = convnext_layers(arch)
    spelled: dict[int, str] = {}
    for name in tap_names(taps, arch=arch):
        layer = _layer(arch, name)
        if spelled.setdefault(layer.position, name) != name:
            raise FeatxValueError(
                f"taps {spelled[layer.position]!r} and {name!r} name the same layer of {arch}; pass one of them"
            )
    return tuple(
        TapInfo(spelled[position], position, layers[position].channels, layers[position].stride) for position in sorted(spelled)
    )
