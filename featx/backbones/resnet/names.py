"""The ResNet architectures featx builds and their taps, as plain data (nothing here imports torch):
tap names, channels, strides, map sizes and parameter counts of torchvision's ResNet-18/34/50/101.

Tap names are torchvision's module names: the stem ``conv1``, ``bn1``, ``relu``, ``maxpool``, the
stages ``layer1`` ... ``layer4`` and their residual blocks ``layer{i}.{j}``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Union

from featx._checks import check_choice, closest
from featx.backbones.taps import TapInfo, tap_names
from featx.errors import FeatxValueError
from featx.presets import PRESETS

__all__ = [
    "RESNET_ARCHS",
    "STEM",
    "ResNetLayer",
    "ResNetSpec",
    "block_params",
    "resnet_layers",
    "resnet_min_input_size",
    "resnet_layer",
    "resnet_output_size",
    "resolve_resnet_taps",
    "stem_params",
]


@dataclass(frozen=True)
class ResNetSpec:
    """One ResNet, as torchvision's ``resnet18`` ... ``resnet101`` build it (He et al. 2016).

    Attributes:
        block: ``"basic"`` (two 3x3 convolutions, torchvision's ``BasicBlock``) or ``"bottleneck"``
            (1x1, 3x3, 1x1, torchvision's ``Bottleneck``, stride on the 3x3: "ResNet v1.5").
        depths: residual blocks per stage (``layer1`` ... ``layer4``).
    """

    block: str
    depths: tuple[int, int, int, int]

    @property
    def expansion(self) -> int:
        """Output channels of a block over its width (torchvision's ``block.expansion``)."""
        return 1 if self.block == "basic" else 4


# torchvision/models/resnet.py: resnet18 BasicBlock [2, 2, 2, 2], resnet34 BasicBlock [3, 4, 6, 3],
# resnet50 Bottleneck [3, 4, 6, 3], resnet101 Bottleneck [3, 4, 23, 3].
RESNET_ARCHS: dict[str, ResNetSpec] = {
    "resnet18": ResNetSpec("basic", (2, 2, 2, 2)),
    "resnet34": ResNetSpec("basic", (3, 4, 6, 3)),
    "resnet50": ResNetSpec("bottleneck", (3, 4, 6, 3)),
    "resnet101": ResNetSpec("bottleneck", (3, 4, 23, 3)),
}
"""Every ResNet featx builds, by torchvision's model name."""

STEM: tuple[str, ...] = ("conv1", "bn1", "relu", "maxpool")
"""The stem's modules in the order torchvision's ``forward`` runs them."""

_WIDTHS = (64, 128, 256, 512)  # block width of each stage (torchvision's ``planes``)


@dataclass(frozen=True)
class ResNetLayer:
    """One tappable point of a ResNet.

    Attributes:
        name: torchvision's module name (``conv1``, ``bn1``, ``relu``, ``maxpool``, ``layer2``,
            ``layer3.1``).
        position: place in depth order (the tap's ``TapInfo.index``); a stage comes right after its
            last block, whose output it is.
        stage: 0 for the stem, 1 to 4 for ``layer1`` ... ``layer4``.
        block: the block's index in its stage; for a stage tap, its last block; -1 in the stem.
        kind: ``"conv"``, ``"bn"``, ``"relu"``, ``"pool"``, ``"block"`` or ``"stage"``.
        channels: channels of the output.
        stride: downsampling of the output relative to the input (the size is ``ceil(H / stride)``).
        params: parameters of the layer (of a block: all of it, its downsample included; 0 for a stage,
            whose blocks hold them).
    """

    name: str
    position: int
    stage: int
    block: int
    kind: str
    channels: int
    stride: int
    params: int


def stem_params(name: str) -> int:
    """Parameters of a stem module: conv1 is 7x7, 3 -> 64 without bias; bn1 has a weight and a bias.

    Example:
        >>> [stem_params(name) for name in STEM]
        [9408, 128, 0, 0]
    """
    return {"conv1": 3 * 64 * 7 * 7, "bn1": 2 * 64}.get(name, 0)


def block_params(arch: str, stage: int, block: int) -> int:
    """Parameters of block ``layer{stage}.{block}`` (convolutions without bias, BatchNorm weight and bias).

    Example:
        >>> block_params("resnet18", 1, 0), block_params("resnet50", 2, 0)
        (73984, 379392)
    """
    spec = RESNET_ARCHS[arch]
    width, out = _WIDTHS[stage - 1], _WIDTHS[stage - 1] * spec.expansion
    inplanes = (64 if stage == 1 else _WIDTHS[stage - 2] * spec.expansion) if block == 0 else out
    stride = 1 if stage == 1 or block > 0 else 2
    if spec.block == "basic":
        params = inplanes * width * 9 + 2 * width + width * width * 9 + 2 * width
    else:
        params = inplanes * width + 2 * width + width * width * 9 + 2 * width + width * out + 2 * out
    if stride != 1 or inplanes != out:  # torchvision's downsample: 1x1 conv and BatchNorm
        params += inplanes * out + 2 * out
    return params


def _build(arch: str) -> tuple[ResNetLayer, ...]:
    spec = RESNET_ARCHS[arch]
    layers: list[ResNetLayer] = []
    kinds = {"conv1": "conv", "bn1": "bn", "relu": "relu", "maxpool": "pool"}
    for name in STEM:
        stride = 4 if name == "maxpool" else 2
        layers.append(ResNetLayer(name, len(layers), 0, -1, kinds[name], 64, stride, stem_params(name)))
    for stage, depth in enumerate(spec.depths, start=1):
        channels, stride = _WIDTHS[stage - 1] * spec.expansion, 2 ** (stage + 1)
        for block in range(depth):
            params = block_params(arch, stage, block)
            layers.append(ResNetLayer(f"layer{stage}.{block}", len(layers), stage, block, "block", channels, stride, params))
        layers.append(ResNetLayer(f"layer{stage}", len(layers), stage, depth - 1, "stage", channels, stride, 0))
    return tuple(layers)


_LAYERS = {arch: _build(arch) for arch in RESNET_ARCHS}


def resnet_layers(arch: str) -> tuple[ResNetLayer, ...]:
    """Every tappable point of ``arch`` in depth order: the stem, then each stage's blocks and the stage.

    Raises:
        ValueError: unknown architecture (with the closest name).

    Example:
        >>> [layer.name for layer in resnet_layers("resnet18")][:8]
        ['conv1', 'bn1', 'relu', 'maxpool', 'layer1.0', 'layer1.1', 'layer1', 'layer2.0']
        >>> resnet_layers("resnet50")[-1]
        ResNetLayer(name='layer4', position=23, stage=4, block=2, kind='stage', channels=2048, stride=32, params=0)
    """
    return _LAYERS[check_choice("arch", arch, tuple(RESNET_ARCHS))]


def resnet_output_size(size: int, stride: int) -> int:
    """Height (or width) of a map at ``stride`` for an input of height (or width) ``size``.

    Every convolution and pool of a ResNet pads so that a stride-2 step maps ``n`` to ``ceil(n / 2)``
    (conv1 7x7 padding 3, maxpool 3x3 padding 1, 3x3 and 1x1 convolutions of stride 2), so the map
    at total stride ``s`` has ``ceil(size / s)`` rows.

    Example:
        >>> resnet_output_size(224, 32), resnet_output_size(65, 4), resnet_output_size(5, 32)
        (7, 17, 1)
    """
    while stride > 1:
        size, stride = (size + 1) // 2, stride // 2
    return size


def resnet_min_input_size(arch: str, deepest_tap: str) -> int:
    """Smallest height/width featx accepts for ``deepest_tap``: the tap's stride.

    torchvision's ResNet pads every layer and runs on any size down to 1x1, but below the deepest
    tap's stride the map no longer shrinks with the input and each of its positions sees mostly
    padding; featx refuses such inputs (the same rule as DINOv2's one patch).

    Example:
        >>> resnet_min_input_size("resnet18", "conv1"), resnet_min_input_size("resnet50", "layer4")
        (2, 32)
    """
    by_name = {layer.name: layer for layer in resnet_layers(arch)}
    return by_name[check_choice("tap", deepest_tap, tuple(by_name), context=f" for {arch}")].stride


def resnet_layer(arch: str, tap: str) -> ResNetLayer:
    """The layer a tap of ``arch`` names.

    Raises:
        ValueError: unknown tap, with the closest name and the valid spellings.

    Example:
        >>> resnet_layer("resnet34", "layer2.3").channels
        128
    """
    by_name = {layer.name: layer for layer in resnet_layers(arch)}
    if tap in by_name:
        return by_name[tap]
    depths = RESNET_ARCHS[arch].depths
    blocks = ", ".join(f"'layer{stage}.0' ... 'layer{stage}.{depth - 1}'" for stage, depth in enumerate(depths, start=1))
    raise FeatxValueError(
        f"unknown tap {tap!r} for {arch}.{closest(tap, by_name)} Valid choices: 'conv1', 'bn1', 'relu', 'maxpool', "
        f"'layer1', 'layer2', 'layer3', 'layer4' (torchvision's module names) and the residual blocks {blocks}"
    )


def resolve_resnet_taps(arch: str, taps: Union[str, Iterable[str]]) -> tuple[TapInfo, ...]:
    """Tap infos of the taps ``taps`` names (one name, ``"a,b"``, a list, or a preset of ``arch``),
    duplicates dropped, in depth order.

    Raises:
        TypeError: ``taps`` is not a string or an iterable of strings.
        ValueError: no tap, or an unknown one (with the closest name).

    Example:
        >>> [info.name for info in resolve_resnet_taps("resnet18", "layer2,conv1,layer2")]
        ['conv1', 'layer2']
    """
    groups = {name: preset.taps for name, preset in PRESETS.items() if preset.arch == arch}
    names = list(groups[taps]) if isinstance(taps, str) and taps in groups else tap_names(taps, arch=arch)
    layers = {layer.position: layer for layer in (resnet_layer(arch, name) for name in names)}
    return tuple(TapInfo(layer.name, layer.position, layer.channels, layer.stride) for _, layer in sorted(layers.items()))
