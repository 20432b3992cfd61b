"""``AlexNetFeatures``: torchvision's AlexNet ``features`` stack with canonical layer names
(``conv1`` ... ``relu5``, ``pool5``), cut after the deepest tap; LPIPS's default backbone."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Union, cast

import torch
from torch import nn

from featx._checks import InputRange, check_bool, check_choice, check_input_range, range_warning
from featx.backbones._frozen import register_frozen_hooks
from featx.backbones.vgg.features import IMAGENET_MEAN, IMAGENET_STD
from featx.errors import FeatxTypeError, FeatxValueError, InputRangeWarning

if TYPE_CHECKING:
    from featx.weights import WeightsSpec

__all__ = ["ALEXNET_LAYERS", "AlexNetFeatures", "AlexNetLayer", "alexnet_min_input_size"]

_RANGE_CHECKED_CALLS = 4  # forward calls whose input min/max are checked against input_range, as VGGFeatures


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


def _resolve(taps: Union[str, Iterable[str]]) -> tuple[AlexNetLayer, ...]:
    if isinstance(taps, str):
        names = [name.strip() for name in taps.split(",") if name.strip()]
    elif isinstance(taps, Iterable):
        names = list(taps)
    else:
        raise FeatxTypeError(f"taps must be a layer name, 'a,b' or a list of names, got {type(taps).__name__}")
    if not names:
        raise FeatxValueError("taps must name at least one layer, e.g. 'relu5'")
    for name in names:
        if not isinstance(name, str):
            raise FeatxTypeError(f"tap names must be strings, got {name!r}")
        check_choice("tap", name, tuple(_BY_NAME), context=" for alexnet")
    return tuple(layer for layer in ALEXNET_LAYERS if layer.name in set(names))


class AlexNetFeatures(nn.Module):
    """AlexNet's ``features`` cut after the deepest tap, returning a dict of named feature maps.

    The AlexNet counterpart of :class:`~featx.VGGFeatures` with the same contract: only
    ``features[: deepest + 1]`` is built and strictly loaded from torchvision's
    ``alexnet-owt-7be5be79.pth`` (``features.*`` keys; ``weights="DEFAULT"`` is
    ``MetricWeights.ALEXNET_IMAGENET1K_V1``, found offline in :func:`~featx.weights.search_dirs`),
    ``conv*`` taps are true pre-activation outputs, inputs are mapped from ``input_range`` and
    ImageNet-normalised, inputs of the first calls that look like another range warn
    :class:`~featx.InputRangeWarning` once, and a frozen module (the default) stays in eval mode and
    adds nothing to a parent's ``state_dict``.

    Args:
        taps: a layer name (``"relu5"``), ``"relu1,relu2"`` or a list; names are those of
            :data:`ALEXNET_LAYERS`.
        weights: ``"DEFAULT"``, ``"ALEXNET_IMAGENET1K_V1"``, torchvision's
            ``AlexNet_Weights.IMAGENET1K_V1``, a path, a state dict, or ``None`` (random; warns).
        input_range: ``(lo, hi)`` of the inputs, or ``"normalized"`` (already ImageNet-normalised).
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

    input_scale: torch.Tensor
    input_shift: torch.Tensor

    def __init__(
        self,
        taps: Union[str, Iterable[str]] = ("relu1", "relu2", "relu3", "relu4", "relu5"),
        *,
        weights: WeightsSpec = "DEFAULT",
        input_range: InputRange = (0.0, 1.0),
        requires_grad: bool = False,
        verify_weights: Optional[str] = None,
    ) -> None:
        super().__init__()
        from featx.weights import load_weights

        self.arch = "alexnet"
        tapped = _resolve(taps)
        self.taps: tuple[str, ...] = tuple(layer.name for layer in tapped)
        self.input_range = check_input_range(input_range)
        check_bool("requires_grad", requires_grad)
        self.min_input_size = alexnet_min_input_size(self.taps[-1])
        self._range_checks_left = 0 if self.input_range == "normalized" else _RANGE_CHECKED_CALLS
        self._tap_at = {layer.index: layer.name for layer in tapped}
        kept = ALEXNET_LAYERS[: tapped[-1].index + 1]
        modules: list[nn.Module] = []
        for layer in kept:
            if layer.kind == "conv":
                conv = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel, layer.stride, layer.padding)
                modules.append(conv)  # torch's default init, as torchvision's AlexNet
            elif layer.kind == "relu":
                modules.append(nn.ReLU(inplace=layer.index - 1 not in self._tap_at))
            else:
                modules.append(nn.MaxPool2d(kernel_size=layer.kernel, stride=layer.stride))
        self.features = nn.Sequential(*modules)
        scale: tuple[float, ...] = (1.0, 1.0, 1.0)  # "normalized": inputs are ImageNet-normalised already
        shift: tuple[float, ...] = (0.0, 0.0, 0.0)
        if not isinstance(self.input_range, str):
            lo, hi = self.input_range
            scale = tuple(1.0 / ((hi - lo) * std) for std in IMAGENET_STD)
            shift = tuple(-(lo / (hi - lo) + mean) / std for mean, std in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True))
        self._affine64 = (scale, shift)
        self.register_buffer("input_scale", torch.tensor(scale).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("input_shift", torch.tensor(shift).view(1, 3, 1, 1), persistent=False)

        expected = {f"features.{key}": value.shape for key, value in self.features.state_dict().items()}
        loaded = load_weights(weights, arch="alexnet", expected=expected, verify=verify_weights)
        self.weights_verified: Optional[bool] = None if loaded is None else loaded.verified
        self.weights_id: str = "random" if loaded is None else loaded.weights_id
        self.weights_sha256: Optional[str] = None if loaded is None else loaded.sha256
        if loaded is not None:
            with torch.no_grad():
                for key, value in loaded.state_dict.items():
                    self.get_parameter(key).copy_(value)
        self.learnable = requires_grad
        self.requires_grad_(requires_grad)
        self.train(requires_grad)
        register_frozen_hooks(self)

    @property
    def frozen(self) -> bool:
        """True when no parameter requires grad now (then the module is eval-locked)."""
        return not any(param.requires_grad for param in self.parameters())

    def train(self, mode: bool = True) -> AlexNetFeatures:
        """Set train/eval mode; a frozen extractor always stays in eval mode."""
        return super().train(mode and not self.frozen)

    def _check_range(self, x: torch.Tensor) -> None:
        """Warn once if one of the first inputs looks like another value range (one host sync a call)."""
        self._range_checks_left -= 1
        low, high = torch.stack([x.detach().min(), x.detach().max()]).float().tolist()
        message = range_warning(low, high, cast(tuple[float, float], self.input_range))
        if message is not None:
            self._range_checks_left = 0
            warnings.warn(message, InputRangeWarning, stacklevel=5)  # the caller of the module (nn.Module.__call__)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run the truncated backbone and return the tapped feature maps, shallowest first.

        Raises:
            TypeError: not a floating point tensor, or a dtype other than the weights' outside autocast.
            ValueError: not ``(B, 3, H, W)``, or smaller than :attr:`min_input_size`.
        """
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            got = f"dtype {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise FeatxTypeError(f"expected a floating point torch.Tensor of shape (B, 3, H, W), got {got}")
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[0] == 0:
            raise FeatxValueError(f"expected a non-empty batch of shape (B, 3, H, W), got {tuple(x.shape)}")
        if min(x.shape[-2:]) < self.min_input_size:
            raise FeatxValueError(
                f"input of size {x.shape[-2]}x{x.shape[-1]} is too small for tap {self.taps[-1]!r}: "
                f"it needs at least {self.min_input_size}x{self.min_input_size}"
            )
        dtype = self.input_scale.dtype
        if x.dtype != dtype and not torch.is_autocast_enabled(x.device.type):
            raise FeatxTypeError(
                f"input dtype {x.dtype} does not match the extractor's dtype {dtype}; cast one of them "
                "or run under torch.autocast"
            )
        if self._range_checks_left > 0 and not torch.compiler.is_compiling():
            self._check_range(x)
        if self.input_range != "normalized":
            if x.dtype == torch.float64:
                scale, shift = (torch.tensor(v, dtype=x.dtype, device=x.device).view(1, 3, 1, 1) for v in self._affine64)
            else:
                scale, shift = self.input_scale.to(x.dtype), self.input_shift.to(x.dtype)
            x = x * scale + shift
        out: dict[str, torch.Tensor] = {}
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self._tap_at:
                out[self._tap_at[index]] = x
        return out

    def extra_repr(self) -> str:
        return f"taps={self.taps}, weights={self.weights_id!r}"
