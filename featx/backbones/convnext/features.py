"""``ConvNeXtFeatures``: torchvision's ConvNeXt-T/S/B ``features`` (built from its own ``CNBlock`` and
``LayerNorm2d``) with named taps per stage and per block, cut after the deepest tap."""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from typing import TYPE_CHECKING, Optional, Union, cast

import torch
from torch import nn

from featx._checks import InputRange, check_choice, check_number
from featx.backbones.base import BackboneFeatures
from featx.backbones.convnext.names import (
    CONVNEXT_ARCHS,
    LAYER_SCALE,
    NORM_EPS,
    ConvNeXtLayer,
    convnext_layers,
    convnext_min_input_size,
    resolve_convnext_taps,
)
from featx.errors import FeatxValueError

if TYPE_CHECKING:
    from featx.weights import WeightsSpec
    from featx.weights.matching import KeyLayout

__all__ = ["ConvNeXtFeatures", "convnext_layout"]


def convnext_layout(arch: str, deepest: ConvNeXtLayer) -> KeyLayout:
    """How torchvision's ConvNeXt checkpoint keys map onto a model built up to ``deepest``.

    Keys are ``features.{i}.*`` (a torchvision model: ``features.5.3.block.0.weight``,
    ``features.5.3.layer_scale``) or ``{i}.*`` (a ``model.features`` state dict); ``classifier.*``
    (the last LayerNorm and the linear layer) is never built, nor are layers past ``deepest`` (when
    it is a block, the later blocks of its stage).

    Example:
        >>> layout = convnext_layout("convnext_tiny", convnext_layers("convnext_tiny")[15])  # stage3.4
        >>> layout.canonical("5.3.block.0.weight"), layout.canonical("classifier.2.weight")
        ('features.5.3.block.0.weight', None)
        >>> layout.built("features.5.4.layer_scale"), layout.built("features.5.5.layer_scale")
        (True, False)
    """
    from featx.weights.matching import FEATURE_KEY, KeyLayout

    last_block = deepest.block if deepest.kind == "block" else None
    # the key names are those of any torchvision ``features`` Sequential; only what is built differs
    canonical = KeyLayout.sequential(deepest.index).canonical

    def built(key: str) -> bool:
        match = FEATURE_KEY.fullmatch(key)
        if match is None or int(match[1]) < deepest.index:
            return True
        if int(match[1]) > deepest.index:
            return False
        block = match[2].split(".", 1)[0]
        return last_block is None or not block.isdigit() or int(block) <= last_block

    hint = (
        "Keys may be 'features.{i}.*' (a torchvision ConvNeXt) or '{i}.*' (a model.features state dict); "
        f"classifier.* and layers past {deepest.module} are ignored."
    )
    return KeyLayout(canonical, built, f"{arch} up to {deepest.module}", hint)


def _stage_blocks(dim: int, first: int, count: int, total: int, stochastic_depth_prob: float) -> nn.Sequential:
    """Blocks ``first`` ... ``first + count - 1`` (counted over the whole model) of one stage, with
    torchvision's stochastic-depth schedule (``p * block / (total - 1)``)."""
    from torchvision.models.convnext import CNBlock

    probs = [stochastic_depth_prob * (first + j) / (total - 1.0) for j in range(count)]
    return nn.Sequential(*(CNBlock(dim, LAYER_SCALE, prob) for prob in probs))


class ConvNeXtFeatures(BackboneFeatures):
    """ConvNeXt-T/S/B's ``features`` cut after the deepest tap, returning a dict of named feature maps.

    The ConvNeXt counterpart of :class:`~featx.VGGFeatures` with the same contract, built from
    torchvision's own modules (``torchvision.models.convnext.CNBlock``, ``LayerNorm2d`` and
    ``torchvision.ops.Conv2dNormActivation``, assembled as ``torchvision.models.convnext_*`` assembles
    them), so torchvision's checkpoints load as they are and the features equal torchvision's. Only the
    layers up to the deepest tap are built and strictly loaded (a block tap builds its stage only up
    to that block); the whole model is never created. Inputs are mapped from ``input_range`` and
    ImageNet-normalised, and a frozen module (the default) stays in eval mode (stochastic depth off)
    and adds nothing to a parent's ``state_dict``.

    Taps (depth order): ``stem`` (``features.0``: 4x4/4 conv and LayerNorm), the blocks ``stage1.0``,
    ``stage1.1``, ... (``features.1.0``, ...), ``stage1`` (``features.1``: the stage's output, equal to
    its last block's), ``downsample2`` (``features.2``: LayerNorm and 2x2/2 conv), ``stage2.0``, ...,
    ``stage4``. torchvision's module paths are taps too (``features.5.4`` is ``stage3.4``); the output
    is keyed by the spelling given, and naming one layer twice is an error.

    Args:
        arch: ``"convnext_tiny"``, ``"convnext_small"`` or ``"convnext_base"``.
        taps: a tap name, ``"a,b"`` or a list of names (see above).
        weights: ``"DEFAULT"`` (the arch's ``IMAGENET1K_V1`` checkpoint, found offline), a checkpoint
            name (``"CONVNEXT_TINY_IMAGENET1K_V1"``), torchvision's ``ConvNeXt_Tiny_Weights.IMAGENET1K_V1``,
            a path (``.pth``/``.safetensors``), a state dict, or ``None`` (random, torchvision's
            initialisation; warns).
        input_range: ``(lo, hi)`` of the inputs, or ``"normalized"`` (already ImageNet-normalised).
        gray: ``"repeat"`` accepts 1-channel inputs by repeating them to RGB; ``"error"`` refuses them.
        requires_grad: make the backbone learnable.
        verify_weights: ``"warn"``/``"error"``/``None``, as for ``VGGFeatures``.
        stochastic_depth_prob: stochastic depth of a learnable module in train mode, with torchvision's
            per-block schedule over the whole model (torchvision trains with 0.1, 0.4, 0.5 for T/S/B).
            Default 0: features are deterministic. It never acts in eval mode, hence never when frozen.

    Raises:
        ValueError: an unknown arch or tap (with the closest name), the same layer named twice, a
            bad ``gray``, ``input_range`` or ``stochastic_depth_prob``.
        featx.errors.WeightsNotFoundError, featx.errors.WeightsLoadError: see
            :func:`featx.weights.load_weights`.

    Shape:
        - Input: ``(B, 3, H, W)`` floating point, at least :attr:`min_input_size` (the deepest tap's
          stride: 4 for ``stem`` and ``stage1``, 32 for ``stage4``).
        - Output: ``{tap: (B, C, H // stride, W // stride)}`` in depth order.

    Example:
        >>> import warnings, torch
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     convnext = ConvNeXtFeatures("convnext_tiny", "stem,stage1,stage3.1", weights=None)
        >>> {name: tuple(f.shape) for name, f in convnext(torch.rand(1, 3, 64, 48)).items()}
        {'stem': (1, 96, 16, 12), 'stage1': (1, 96, 16, 12), 'stage3.1': (1, 384, 4, 3)}
        >>> len(convnext.features), len(convnext.features[5])  # stage 3 cut after block 1, stage 4 never built
        (6, 2)
    """

    def __init__(
        self,
        arch: str = "convnext_tiny",
        taps: Union[str, Iterable[str]] = ("stage1", "stage2", "stage3", "stage4"),
        *,
        weights: WeightsSpec = "DEFAULT",
        input_range: InputRange = (0.0, 1.0),
        gray: str = "error",
        requires_grad: bool = False,
        verify_weights: Optional[str] = None,
        stochastic_depth_prob: float = 0.0,
    ) -> None:
        check_choice("arch", arch, tuple(CONVNEXT_ARCHS))
        if not 0.0 <= check_number("stochastic_depth_prob", stochastic_depth_prob) < 1.0:
            raise FeatxValueError(f"stochastic_depth_prob must be in [0, 1), got {stochastic_depth_prob}")
        feature_info = resolve_convnext_taps(arch, taps)
        layers = convnext_layers(arch)
        deepest = layers[feature_info[-1].index]
        super().__init__(
            arch,
            feature_info,
            min_input_size=convnext_min_input_size(arch, deepest.name),
            input_range=input_range,
            gray=gray,
        )
        self.stochastic_depth_prob = float(stochastic_depth_prob)
        self._tap_at: dict[int, str] = {}  # features index -> tap on that whole layer
        self._block_taps: dict[int, dict[int, str]] = {}  # features index -> {block: tap}
        for info in self.feature_info:
            layer = layers[info.index]
            if layer.block is None:
                self._tap_at[layer.index] = info.name
            else:
                self._block_taps.setdefault(layer.index, {})[layer.block] = info.name
        if weights is None:
            self.features = self._build(arch, deepest)
            self._initialise()
        else:  # the weights are copied in: create the modules without allocating or initialising them
            with torch.device("meta"):
                features = self._build(arch, deepest)
            self.features = features.to_empty(device="cpu")
        self.load_and_freeze(
            weights,
            expected=self.loadable_shapes(),
            requires_grad=requires_grad,
            layout=convnext_layout(arch, deepest),
            verify=verify_weights,
        )

    def _build(self, arch: str, deepest: ConvNeXtLayer) -> nn.Sequential:
        """torchvision's ``features`` layers ``0 ... deepest.index`` (the last stage cut after a tapped block)."""
        from torchvision.models.convnext import LayerNorm2d
        from torchvision.ops import Conv2dNormActivation

        spec = CONVNEXT_ARCHS[arch]
        norm = partial(LayerNorm2d, eps=NORM_EPS)
        total, first = sum(spec.depths), 0
        modules: list[nn.Module] = [
            Conv2dNormActivation(
                3, spec.dims[0], kernel_size=4, stride=4, padding=0, norm_layer=norm, activation_layer=None, bias=True
            )
        ]
        for stage, (dim, depth) in enumerate(zip(spec.dims, spec.depths, strict=True), start=1):
            index = 2 * stage - 1
            if stage > 1:
                if index - 1 > deepest.index:
                    break
                before = spec.dims[stage - 2]
                modules.append(nn.Sequential(norm(before), nn.Conv2d(before, dim, kernel_size=2, stride=2)))
            if index > deepest.index:
                break
            count = depth if index < deepest.index or deepest.block is None else deepest.block + 1
            modules.append(_stage_blocks(dim, first, count, total, self.stochastic_depth_prob))
            first += depth
        return nn.Sequential(*modules)

    def _initialise(self) -> None:
        """torchvision's ConvNeXt initialisation: truncated normal (std 0.02) convolution and linear
        weights, zero biases; LayerNorms at one and zero, ``layer_scale`` at 1e-6."""
        for module in self.features.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The truncated ``features`` on normalised input: the tapped maps, shallowest first."""
        out: dict[str, torch.Tensor] = {}
        for index, module in enumerate(self.features):
            blocks = self._block_taps.get(index)
            if blocks is None:
                x = module(x)
            else:
                for block, layer in enumerate(cast(nn.Sequential, module)):  # a stage's blocks
                    x = layer(x)
                    if block in blocks:
                        out[blocks[block]] = x
            if index in self._tap_at:
                out[self._tap_at[index]] = x
        return out

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}, taps={self.taps}, weights={self.weights_id!r}"
