"""``ResNetFeatures``: torchvision's ResNet-18/34/50/101 (its ``BasicBlock``/``Bottleneck`` modules) with
taps named as torchvision's modules (``conv1`` ... ``layer4``, blocks ``layer3.1``), cut after the deepest tap."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Optional, Union

import torch
from torch import nn

from featx._checks import InputRange, check_choice
from featx.backbones.base import BackboneFeatures
from featx.backbones.resnet.names import (
    RESNET_ARCHS,
    STEM,
    ResNetLayer,
    resnet_layers,
    resnet_min_input_size,
    resolve_resnet_taps,
)
from featx.backbones.taps import TapInfo

if TYPE_CHECKING:
    from featx.weights import WeightsSpec
    from featx.weights.matching import KeyLayout

__all__ = ["ResNetFeatures", "resnet_layout", "resnet_taps"]

_BLOCK_KEY = re.compile(r"layer(\d+)\.(\d+)\.")
_WIDTHS = (64, 128, 256, 512)


def resnet_taps(arch: str) -> tuple[TapInfo, ...]:
    """Every tap of ``arch`` in depth order: name, position, channels and stride (timm's ``feature_info``).

    Example:
        >>> resnet_taps("resnet50")[-1]
        TapInfo(name='layer4', index=23, channels=2048, stride=32)
    """
    return tuple(TapInfo(layer.name, layer.position, layer.channels, layer.stride) for layer in resnet_layers(arch))


def resnet_layout(arch: str, deepest: ResNetLayer) -> KeyLayout:
    """How torchvision's ResNet checkpoints map onto a model built up to ``deepest``.

    Keys are torchvision's (``conv1.weight``, ``bn1.running_mean``, ``layer3.1.conv2.weight``,
    ``layer2.0.downsample.1.num_batches_tracked``; timm's ResNets use the same names); ``fc.*`` (the
    classifier) is never built, and the stem modules and blocks past ``deepest`` are not built.

    Example:
        >>> layer3_1 = next(layer for layer in resnet_layers("resnet50") if layer.name == "layer3.1")
        >>> layout = resnet_layout("resnet50", layer3_1)
        >>> layout.canonical("fc.weight"), layout.built("layer3.1.bn3.bias"), layout.built("layer3.2.bn3.bias")
        (None, True, False)
    """
    from featx.weights.matching import KeyLayout

    stem_built = STEM if deepest.stage else STEM[: STEM.index(deepest.name) + 1]

    def canonical(key: str) -> Optional[str]:
        return None if key.startswith("fc.") else key

    def built(key: str) -> bool:
        match = _BLOCK_KEY.match(key)
        if match is not None:
            stage, block = int(match[1]), int(match[2])
            return stage < deepest.stage or (stage == deepest.stage and block <= deepest.block)
        module = key.split(".", 1)[0]
        return module not in STEM or module in stem_built

    scope = f"{arch} up to {deepest.name}" + (f" (layer{deepest.stage}.{deepest.block})" if deepest.kind == "stage" else "")
    hint = (
        "Keys are torchvision's (conv1.weight, bn1.*, layer{i}.{j}.conv1.weight, layer{i}.0.downsample.*; timm's "
        "ResNets use the same names); fc.* and the layers featx does not build are ignored."
    )
    return KeyLayout(canonical, built, scope, hint, cache_tag="resnet")


def _init(modules: Iterable[nn.Module]) -> None:
    """torchvision's ResNet initialisation: Kaiming-normal convolutions (fan out), BatchNorm 1 and 0."""
    for module in modules:
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.constant_(module.weight, 1)
            nn.init.constant_(module.bias, 0)


class ResNetFeatures(BackboneFeatures):
    """A torchvision ResNet cut after the deepest tap, returning a dict of named feature maps.

    The ResNet counterpart of :class:`~featx.VGGFeatures` with the same contract, built from
    torchvision's own ``BasicBlock`` and ``Bottleneck`` classes, stage by stage as torchvision's
    ``ResNet`` builds them, so checkpoints load as they are and the maps equal torchvision's: only the
    modules up to the deepest tap are built and strictly loaded (``layer3.1`` builds the stem,
    ``layer1``, ``layer2`` and the first two blocks of ``layer3``; never ``avgpool`` or ``fc``), inputs
    are mapped from ``input_range`` and ImageNet-normalised, and a frozen module (the default) stays
    in eval mode and adds nothing to a parent's ``state_dict``.

    Taps are torchvision's module names: ``conv1``, ``bn1`` (the BatchNorm output before the ReLU:
    torchvision's in-place ReLU is made out-of-place when ``bn1`` is tapped), ``relu``, ``maxpool``,
    the stages ``layer1`` ... ``layer4`` and their blocks ``layer{i}.{j}``; a block's (and so a
    stage's) output is taken after its final ReLU, as torchvision's ``forward`` returns it.

    Args:
        arch: ``"resnet18"``, ``"resnet34"``, ``"resnet50"`` or ``"resnet101"``.
        taps: a tap name, ``"layer1,layer3.1"`` or a list of names.
        weights: ``"DEFAULT"`` (torchvision's ``IMAGENET1K_V1``, found offline), a
            :class:`~featx.weights.ResNetWeights` member or its name (``"RESNET50_IMAGENET1K_V2"``),
            torchvision's ``ResNet50_Weights.IMAGENET1K_V2``, a path (``.pth``/``.safetensors``), a
            state dict, or ``None`` (random, torchvision's initialisation; warns).
        input_range: ``(lo, hi)`` of the inputs, or ``"normalized"`` (already ImageNet-normalised).
        gray: ``"repeat"`` accepts 1-channel inputs by repeating them to RGB; ``"error"`` refuses them.
        requires_grad: make the backbone learnable (BatchNorm then trains too, as in torchvision).
        verify_weights: ``"warn"``/``"error"``/``None``, as for ``VGGFeatures``.

    Raises:
        ValueError: an unknown arch or tap (with the closest name), a bad ``gray`` or ``input_range``.
        featx.errors.WeightsNotFoundError, featx.errors.WeightsLoadError: see
            :func:`featx.weights.load_weights`.

    Shape:
        - Input: ``(B, 3, H, W)`` floating point, at least :attr:`min_input_size` (the deepest tap's
          stride: 32 for ``layer4``).
        - Output: ``{tap: (B, C, ceil(H / s), ceil(W / s))}`` in depth order, ``s`` the tap's stride.

    Example:
        >>> import warnings, torch
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     resnet = ResNetFeatures("resnet18", "bn1,layer1,layer3.0", weights=None)
        >>> {name: tuple(f.shape) for name, f in resnet(torch.rand(1, 3, 64, 64)).items()}
        {'bn1': (1, 64, 32, 32), 'layer1': (1, 64, 16, 16), 'layer3.0': (1, 256, 4, 4)}
        >>> len(resnet.layer3), hasattr(resnet, "layer4")  # layer3.1 and layer4 are never built
        (1, False)
    """

    def __init__(
        self,
        arch: str = "resnet50",
        taps: Union[str, Iterable[str]] = ("layer1", "layer2", "layer3", "layer4"),
        *,
        weights: WeightsSpec = "DEFAULT",
        input_range: InputRange = (0.0, 1.0),
        gray: str = "error",
        requires_grad: bool = False,
        verify_weights: Optional[str] = None,
    ) -> None:
        arch = check_choice("arch", arch, tuple(RESNET_ARCHS))
        feature_info = resolve_resnet_taps(arch, taps)
        layers = resnet_layers(arch)
        deepest = layers[feature_info[-1].index]
        super().__init__(
            arch,
            feature_info,
            min_input_size=resnet_min_input_size(arch, deepest.name),
            input_range=input_range,
            gray=gray,
        )
        self._taps_after: dict[str, list[str]] = {}  # module path (conv1, layer2.1) -> taps on its output
        for info in self.feature_info:
            layer = layers[info.index]
            path = layer.name if layer.stage == 0 else f"layer{layer.stage}.{layer.block}"
            self._taps_after.setdefault(path, []).append(info.name)
        if weights is None:
            self._build(arch, deepest)
            _init(self.modules())
        else:  # a checkpoint fills every built tensor: create them on the meta device, then allocate
            with torch.device("meta"):
                self._build(arch, deepest)
            for module in self.children():  # not the input-range buffers of BackboneFeatures
                module.to_empty(device="cpu")
        self.load_and_freeze(
            weights,
            expected=self.loadable_shapes(),
            requires_grad=requires_grad,
            layout=resnet_layout(arch, deepest),
            verify=verify_weights,
        )

    def _build(self, arch: str, deepest: ResNetLayer) -> None:
        """The stem modules and stages up to ``deepest``, under torchvision's names."""
        from torchvision.models.resnet import BasicBlock, Bottleneck, conv1x1

        stem: dict[str, Callable[[], nn.Module]] = {
            "conv1": lambda: nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False),
            "bn1": lambda: nn.BatchNorm2d(64),
            "relu": lambda: nn.ReLU(inplace="bn1" not in self._taps_after),  # in place would overwrite a bn1 tap
            "maxpool": lambda: nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        }
        self._stem: tuple[str, ...] = STEM if deepest.stage else STEM[: STEM.index(deepest.name) + 1]
        for name in self._stem:
            self.add_module(name, stem[name]())
        spec = RESNET_ARCHS[arch]
        block_class = BasicBlock if spec.block == "basic" else Bottleneck
        inplanes = 64
        self._stages = deepest.stage
        for stage in range(1, deepest.stage + 1):
            width, stride = _WIDTHS[stage - 1], 1 if stage == 1 else 2
            out = width * spec.expansion
            count = spec.depths[stage - 1] if stage < deepest.stage else deepest.block + 1
            blocks: list[nn.Module] = []
            for block in range(count):
                downsample = None
                if block == 0 and (stride != 1 or inplanes != out):  # torchvision's downsample
                    downsample = nn.Sequential(conv1x1(inplanes, out, stride), nn.BatchNorm2d(out))
                blocks.append(block_class(inplanes, width, stride if block == 0 else 1, downsample))
                inplanes = out
            self.add_module(f"layer{stage}", nn.Sequential(*blocks))

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The truncated ResNet on normalised input: the tapped maps, shallowest first."""
        out: dict[str, torch.Tensor] = {}
        for name in self._stem:
            x = self.get_submodule(name)(x)
            for tap in self._taps_after.get(name, ()):
                out[tap] = x
        for stage in range(1, self._stages + 1):
            blocks: nn.Sequential = self.get_submodule(f"layer{stage}")  # type: ignore[assignment]
            for block, module in enumerate(blocks):
                x = module(x)
                for tap in self._taps_after.get(f"layer{stage}.{block}", ()):
                    out[tap] = x
        return out

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}, taps={self.taps}, weights={self.weights_id!r}"
