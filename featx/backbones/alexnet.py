"""``AlexNetFeatures``: torchvision's AlexNet ``features`` stack with canonical layer names
(``conv1`` ... ``relu5``, ``pool5``), cut after the deepest tap; LPIPS's default backbone."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Union

import torch
from torch import nn

from featx._checks import InputRange, check_choice
from featx.backbones.base import BackboneFeatures, run_tapped
from featx.backbones.taps import TapInfo, select_taps

if TYPE_CHECKING:
    from featx.weights import WeightsSpec

__all__ = ["ALEXNET_LAYERS", "AlexNetFeatures", "AlexNetLayer", "alexnet_min_input_size", "alexnet_taps"]


@dataclass(frozen=True)
class AlexNetLayer:
    """One layer of AlexNet's ``features`` (torchvision ``alexnet().features``).

    Attributes:
        name: canonical name (``conv1``, ``relu1``, ``pool1``, ...).
        index: position in torchvision's ``features`` (state-dict key ``features.{index}.*``).
        kind: ``"conv"``, ``"relu"`` or ``"pool"``.
        in_channels, out_channels: channels entering and leaving the layer.
        kernel, stride, padding: of the convolution or max pool (0 for a ReLU).
    """

    name: str
    index: int
    kind: str
    in_channels: int
    out_channels: int
    kernel: int = 0
    stride: int = 0
    padding: int = 0


def _build_layers() -> tuple[AlexNetLayer, ...]:
    # Krizhevsky et al. 2012 as torchvision builds it ("one weird trick" widths 64-192-384-256-256).
    convs = ((3, 64, 11, 4, 2), (64, 192, 5, 1, 2), (192, 384, 3, 1, 1), (384, 256, 3, 1, 1), (256, 256, 3, 1, 1))
    layers: list[AlexNetLayer] = []
    for block, (cin, cout, kernel, stride, padding) in enumerate(convs, start=1):
        layers.append(AlexNetLayer(f"conv{block}", len(layers), "conv", cin, cout, kernel, stride, padding))
        layers.append(AlexNetLayer(f"relu{block}", len(layers), "relu", cout, cout))
        if block in (1, 2, 5):
            layers.append(AlexNetLayer(f"pool{block}", len(layers), "pool", cout, cout, 3, 2, 0))
    return tuple(layers)


ALEXNET_LAYERS: tuple[AlexNetLayer, ...] = _build_layers()
"""The 13 layers of AlexNet's ``features``: conv1=0, relu1=1, pool1=2, conv2=3, relu2=4, pool2=5,
conv3=6, relu3=7, conv4=8, relu4=9, conv5=10, relu5=11, pool5=12."""

_BY_NAME = {layer.name: layer for layer in ALEXNET_LAYERS}


def _output_size(size: int, deepest: int) -> int:
    for layer in ALEXNET_LAYERS[: deepest + 1]:
        if layer.kind != "relu":
            size = (size + 2 * layer.padding - layer.kernel) // layer.stride + 1
    return size


def alexnet_min_input_size(deepest_tap: str) -> int:
    """Smallest height/width that gives a non-empty map at ``deepest_tap``.

    Example:
        >>> alexnet_min_input_size("relu1"), alexnet_min_input_size("relu5")
        (7, 31)
    """
    index = check_choice("tap", deepest_tap, tuple(_BY_NAME), context=" for alexnet")
    deepest = _BY_NAME[index].index
    size = 1
    while _output_size(size, deepest) < 1:
        size += 1
    return size


def alexnet_taps() -> tuple[TapInfo, ...]:
    """Every AlexNet layer as a tap: name, index, channels and stride (timm's ``feature_info``).

    Example:
        >>> alexnet_taps()[-1]
        TapInfo(name='pool5', index=12, channels=256, stride=32)
    """
    taps, stride = [], 1
    for layer in ALEXNET_LAYERS:
        stride *= max(layer.stride, 1)
        taps.append(TapInfo(layer.name, layer.index, layer.out_channels, stride))
    return tuple(taps)


class AlexNetFeatures(BackboneFeatures):
    """AlexNet's ``features`` cut after the deepest tap, returning a dict of named feature maps.

    The AlexNet counterpart of :class:`~featx.VGGFeatures` with the same contract: only
    ``features[: deepest + 1]`` is built and strictly loaded from torchvision's
    ``alexnet-owt-7be5be79.pth`` (``features.*`` keys; ``weights="DEFAULT"`` is
    ``MetricWeights.ALEXNET_IMAGENET1K_V1``, found offline in :func:`~featx.weights.search_dirs`),
    ``conv*`` taps are true pre-activation outputs, inputs are mapped from ``input_range`` and
    ImageNet-normalised, and a frozen module (the default) stays in eval mode and adds nothing to a
    parent's ``state_dict``.

    Args:
        taps: a layer name (``"relu5"``), ``"relu1,relu2"`` or a list; names are those of
            :data:`ALEXNET_LAYERS`.
        weights: ``"DEFAULT"``, ``"ALEXNET_IMAGENET1K_V1"``, torchvision's
            ``AlexNet_Weights.IMAGENET1K_V1``, a path, a state dict, or ``None`` (random; warns).
        input_range: ``(lo, hi)`` of the inputs, or ``"normalized"`` (already ImageNet-normalised).
        gray: ``"repeat"`` accepts 1-channel inputs by repeating them to RGB; ``"error"`` refuses them.
        requires_grad: make the backbone learnable.
        verify_weights: ``"warn"``/``"error"``/``None``, as for ``VGGFeatures``.

    Shape:
        - Input: ``(B, 3, H, W)`` floating point, at least :attr:`min_input_size` (31 for ``relu5``).
        - Output: ``{tap: (B, C, h, w)}`` in depth order.

    Example:
        >>> import warnings, torch
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     alex = AlexNetFeatures("relu1,relu5", weights=None)
        >>> {name: tuple(f.shape) for name, f in alex(torch.rand(1, 3, 64, 64)).items()}
        {'relu1': (1, 64, 15, 15), 'relu5': (1, 256, 3, 3)}
        >>> len(alex.features)  # pool5 is never built
        12
    """

    def __init__(
        self,
        taps: Union[str, Iterable[str]] = ("relu1", "relu2", "relu3", "relu4", "relu5"),
        *,
        weights: WeightsSpec = "DEFAULT",
        input_range: InputRange = (0.0, 1.0),
        gray: str = "error",
        requires_grad: bool = False,
        verify_weights: Optional[str] = None,
    ) -> None:
        from featx.weights.matching import KeyLayout

        feature_info = select_taps(alexnet_taps(), taps, arch="alexnet")
        super().__init__(
            "alexnet",
            feature_info,
            min_input_size=alexnet_min_input_size(feature_info[-1].name),
            input_range=input_range,
            gray=gray,
        )
        self._tap_at = {info.index: info.name for info in self.feature_info}
        modules: list[nn.Module] = []
        for layer in ALEXNET_LAYERS[: self.feature_info[-1].index + 1]:
            if layer.kind == "conv":
                conv = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel, layer.stride, layer.padding)
                modules.append(conv)  # torch's default init, as torchvision's AlexNet
            elif layer.kind == "relu":
                modules.append(nn.ReLU(inplace=layer.index - 1 not in self._tap_at))
            else:
                modules.append(nn.MaxPool2d(kernel_size=layer.kernel, stride=layer.stride))
        self.features = nn.Sequential(*modules)
        self.load_and_freeze(
            weights,
            expected=self.loadable_shapes(),
            requires_grad=requires_grad,
            layout=KeyLayout.sequential(self.feature_info[-1].index, "alexnet"),
            verify=verify_weights,
        )

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The truncated ``features`` stack on normalised input: the tapped maps, shallowest first."""
        return run_tapped(self.features, self._tap_at, x)

    def extra_repr(self) -> str:
        return f"taps={self.taps}, weights={self.weights_id!r}"
