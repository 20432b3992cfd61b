"""``SqueezeNetFeatures``: torchvision's SqueezeNet 1.1 ``features`` (built from its ``Fire`` modules) with
named taps (``conv1`` ... ``fire9`` and every Fire module's parts), cut after the deepest tap; LPIPS's
``"squeeze"`` backbone."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Union

import torch
from torch import nn

from featx._checks import InputRange, closest
from featx.backbones.base import BackboneFeatures
from featx.backbones.taps import TapInfo, tap_names
from featx.errors import FeatxValueError
from featx.presets import PRESETS

if TYPE_CHECKING:
    from featx.weights import WeightsSpec
    from featx.weights.matching import KeyLayout

__all__ = [
    "FIRE_PARTS",
    "SQUEEZENET_ALIASES",
    "SQUEEZENET_LAYERS",
    "SqueezeNetFeatures",
    "SqueezeNetLayer",
    "squeezenet_min_input_size",
    "squeezenet_output_size",
    "squeezenet_taps",
]

ARCH = "squeezenet1_1"

FIRE_PARTS: tuple[str, ...] = (
    "squeeze",
    "squeeze_activation",
    "expand1x1",
    "expand1x1_activation",
    "expand3x3",
    "expand3x3_activation",
)
"""The submodules of torchvision's ``Fire``, in the order its ``forward`` runs them; a Fire module's
output (``fire{k}``) is the concatenation of the two expand activations."""

_NEEDS: dict[str, tuple[str, ...]] = {
    "squeeze": ("squeeze",),
    "squeeze_activation": ("squeeze", "squeeze_activation"),
    "expand1x1": ("squeeze", "squeeze_activation", "expand1x1"),
    "expand1x1_activation": ("squeeze", "squeeze_activation", "expand1x1", "expand1x1_activation"),
    "expand3x3": ("squeeze", "squeeze_activation", "expand3x3"),
    "expand3x3_activation": ("squeeze", "squeeze_activation", "expand3x3", "expand3x3_activation"),
}
"""The parts a tap inside a Fire module needs (the other branch is not on its path)."""

# SqueezeNet 1.1 (Iandola et al. 2016; DeepScale's SqueezeNet_v1.1, as torchvision builds it):
# conv1 3x3/2 with 64 filters, max pools 3x3/2 (ceil mode) after conv1, fire3 and fire5, and eight
# Fire modules (in, squeeze, expand1x1, expand3x3) at these features indices.
_FIRES: dict[int, tuple[int, int, int, int]] = {
    3: (64, 16, 64, 64),
    4: (128, 16, 64, 64),
    6: (128, 32, 128, 128),
    7: (256, 32, 128, 128),
    9: (256, 48, 192, 192),
    10: (384, 48, 192, 192),
    11: (384, 64, 256, 256),
    12: (512, 64, 256, 256),
}
_TOP = ("conv1", "relu1", "pool1", "fire2", "fire3", "pool3", "fire4", "fire5", "pool5", "fire6", "fire7", "fire8", "fire9")


@dataclass(frozen=True)
class SqueezeNetLayer:
    """One tappable point of SqueezeNet 1.1's ``features``.

    Attributes:
        name: the tap name (``conv1``, ``relu1``, ``pool1``, ``fire2`` ... ``fire9``, ``pool3``,
            ``pool5``, or a Fire module's part such as ``fire2.squeeze``).
        module: torchvision's module path (``features.0``, ``features.3``, ``features.3.squeeze``),
            accepted as a tap name too.
        position: place in depth order (the tap's ``TapInfo.index``).
        block: index in torchvision's ``features`` Sequential.
        part: the Fire submodule (one of :data:`FIRE_PARTS`), or ``""`` for a whole layer.
        kind: ``"conv"``, ``"relu"``, ``"pool"`` or ``"fire"``.
        channels: channels of the output.
        stride: downsampling of the output relative to the input (nominal; see
            :func:`squeezenet_output_size` for exact sizes).
    """

    name: str
    module: str
    position: int
    block: int
    part: str
    kind: str
    channels: int
    stride: int


def _build_layers() -> tuple[SqueezeNetLayer, ...]:
    layers: list[SqueezeNetLayer] = []

    def add(name: str, block: int, part: str, kind: str, channels: int, stride: int) -> None:
        module = f"features.{block}" + (f".{part}" if part else "")
        layers.append(SqueezeNetLayer(name, module, len(layers), block, part, kind, channels, stride))

    stride = 1
    for block, name in enumerate(_TOP):
        if name == "conv1":
            stride *= 2
            add(name, block, "", "conv", 64, stride)
        elif name == "relu1":
            add(name, block, "", "relu", 64, stride)
        elif name.startswith("pool"):
            stride *= 2
            add(name, block, "", "pool", layers[-1].channels, stride)
        else:
            _, squeeze, expand1x1, expand3x3 = _FIRES[block]
            widths = {"squeeze": squeeze, "expand1x1": expand1x1, "expand3x3": expand3x3}
            for part in FIRE_PARTS:
                kind = "relu" if part.endswith("_activation") else "conv"
                add(f"{name}.{part}", block, part, kind, widths[part.removesuffix("_activation")], stride)
            add(name, block, "", "fire", expand1x1 + expand3x3, stride)
    return tuple(layers)


SQUEEZENET_LAYERS: tuple[SqueezeNetLayer, ...] = _build_layers()
"""Every tappable point of SqueezeNet 1.1 in depth order: the 13 layers of ``features`` (``conv1``=0,
``relu1``=1, ``pool1``=2, ``fire2``=3, ``fire3``=4, ``pool3``=5, ``fire4``=6, ``fire5``=7, ``pool5``=8,
``fire6``=9 ... ``fire9``=12, by ``block``) and the six parts of each Fire module before its output."""

_BY_NAME = {layer.name: layer for layer in SQUEEZENET_LAYERS}

SQUEEZENET_ALIASES: dict[str, str] = {layer.module: layer.name for layer in SQUEEZENET_LAYERS}
"""torchvision's module paths (``features.12``, ``features.3.squeeze``) -> tap names (``fire9``,
``fire2.squeeze``); either spelling is a valid tap, and the output is keyed by the one given."""


def squeezenet_taps() -> tuple[TapInfo, ...]:
    """Every SqueezeNet 1.1 tap in depth order: name, position, channels and stride (timm's ``feature_info``).

    Example:
        >>> taps = squeezenet_taps()
        >>> len(taps), taps[-1]
        (61, TapInfo(name='fire9', index=60, channels=512, stride=16))
    """
    return tuple(TapInfo(layer.name, layer.position, layer.channels, layer.stride) for layer in SQUEEZENET_LAYERS)


def _layer(tap: str) -> SqueezeNetLayer:
    """The layer a tap name (or torchvision module path) names; unknown names get the closest."""
    layer = _BY_NAME.get(SQUEEZENET_ALIASES.get(tap, tap))
    if layer is None:
        groups = [name for name, preset in PRESETS.items() if preset.arch == ARCH]
        hint = closest(tap, [*_BY_NAME, *SQUEEZENET_ALIASES, *groups])
        valid = ", ".join(repr(name) for name in _TOP)
        raise FeatxValueError(
            f"unknown tap {tap!r} for {ARCH}.{hint} Valid choices: {valid}; a Fire module's parts "
            f"'fire2.squeeze' ... 'fire9.expand3x3_activation' ({', '.join(FIRE_PARTS)}); torchvision's module "
            f"names 'features.0' ... 'features.12' and 'features.3.squeeze' ...; the presets {', '.join(map(repr, groups))}"
        )
    return layer


def squeezenet_output_size(size: int, tap: str) -> int:
    """Height (or width) of the map at ``tap`` for an input of height (or width) ``size``; 0 if too small.

    conv1 is 3x3 stride 2 without padding; the pools are 3x3 stride 2 in ceil mode (a last window
    may overhang the edge but must start inside it); Fire modules keep the size.

    Example:
        >>> [squeezenet_output_size(224, tap) for tap in ("conv1", "pool1", "pool3", "fire9")]
        [111, 55, 27, 13]
    """
    last = _layer(tap)
    if size < 3:
        return 0
    size = (size - 3) // 2 + 1
    for layer in SQUEEZENET_LAYERS[: last.position + 1]:
        if layer.kind == "pool":
            pooled = (size - 2) // 2 + 1  # ceil((size - 3) / 2) + 1
            if (pooled - 1) * 2 >= size:  # a window may not start past the edge
                pooled -= 1
            size = pooled
            if size < 1:
                return 0
    return size


def squeezenet_min_input_size(deepest_tap: str) -> int:
    """Smallest height/width that gives a non-empty map at ``deepest_tap``.

    Example:
        >>> squeezenet_min_input_size("conv1"), squeezenet_min_input_size("fire9")
        (3, 17)
    """
    size = 1
    while squeezenet_output_size(size, deepest_tap) < 1:
        size += 1
    return size


def _resolve(taps: Union[str, Iterable[str]]) -> tuple[TapInfo, ...]:
    """Tap infos named as the caller spelled them, duplicates dropped, in depth order."""
    groups = {name: preset.taps for name, preset in PRESETS.items() if preset.arch == ARCH}
    names = list(groups[taps]) if isinstance(taps, str) and taps in groups else tap_names(taps, arch=ARCH)
    spelled: dict[int, str] = {}
    for name in names:
        layer = _layer(name)
        if spelled.setdefault(layer.position, name) != name:
            raise FeatxValueError(
                f"taps {spelled[layer.position]!r} and {name!r} name the same layer of {ARCH}; pass one of them"
            )
    return tuple(
        TapInfo(spelled[position], position, SQUEEZENET_LAYERS[position].channels, SQUEEZENET_LAYERS[position].stride)
        for position in sorted(spelled)
    )


def _layout(deepest: SqueezeNetLayer, kept_parts: Optional[frozenset[str]]) -> KeyLayout:
    """torchvision's keys (``features.{i}.*``, or ``{i}.*`` of a ``features`` state dict; ``classifier.*``
    is the head) for the layers built up to ``deepest`` (only ``kept_parts`` of a cut Fire module)."""
    from featx.weights.matching import FEATURE_KEY, KeyLayout

    def built(key: str) -> bool:
        match = FEATURE_KEY.fullmatch(key)
        if match is None or int(match[1]) < deepest.block:
            return True
        if int(match[1]) > deepest.block:
            return False
        return kept_parts is None or match[2].split(".", 1)[0] in kept_parts

    cut = f" ({', '.join(sorted(kept_parts))} of its Fire module)" if kept_parts is not None else ""
    return dataclasses.replace(
        KeyLayout.sequential(deepest.block, ARCH),
        built=built,
        scope=f"{ARCH} up to {deepest.module}{cut}",
    )


def _fire(block: int, kept_parts: Optional[frozenset[str]]) -> nn.Module:
    """torchvision's Fire module at ``features[block]``, without the parts no tap needs when cut."""
    from torchvision.models.squeezenet import Fire

    fire: nn.Module = Fire(*_FIRES[block])
    for part in FIRE_PARTS:
        if kept_parts is not None and part not in kept_parts:
            delattr(fire, part)
    return fire


class SqueezeNetFeatures(BackboneFeatures):
    """SqueezeNet 1.1's ``features`` cut after the deepest tap, returning a dict of named feature maps.

    The SqueezeNet counterpart of :class:`~featx.VGGFeatures` with the same contract, built from
    torchvision's own ``Fire`` module class (so its checkpoints load as they are and the features
    equal torchvision's): only the layers up to the deepest tap are built and strictly loaded (a tap
    inside a Fire module builds only the parts on its path), ``conv*`` taps and a Fire module's
    ``squeeze``/``expand1x1``/``expand3x3`` taps are true pre-activation outputs (the in-place ReLU
    after them is made out-of-place), inputs are mapped from ``input_range`` and ImageNet-normalised,
    and a frozen module (the default) stays in eval mode and adds nothing to a parent's
    ``state_dict``.

    Tap names: ``conv1``, ``relu1``, ``pool1``, ``fire2``, ``fire3``, ``pool3``, ``fire4``, ``fire5``,
    ``pool5``, ``fire6`` ... ``fire9`` (the layers of torchvision's ``features``; DeepScale's names),
    a Fire module's parts (``fire5.squeeze``, ``fire5.expand3x3_activation``, ...), torchvision's
    module paths for any of them (``features.12`` is ``fire9``, ``features.3.squeeze`` is
    ``fire2.squeeze``; the output is keyed by the name given), or the preset ``"lpips_squeeze"``
    (LPIPS's seven slice ends ``relu1``, ``fire3``, ``fire5``, ``fire6``, ``fire7``, ``fire8``, ``fire9``).

    Args:
        taps: a preset name, a tap name, ``"a,b"`` or a list of names (see above).
        weights: ``"DEFAULT"`` (``SQUEEZENET1_1_IMAGENET1K_V1``, found offline), a checkpoint name,
            torchvision's ``SqueezeNet1_1_Weights.IMAGENET1K_V1``, a path (``.pth``/``.safetensors``),
            a state dict, or ``None`` (random; warns).
        input_range: ``(lo, hi)`` of the inputs, or ``"normalized"`` (already ImageNet-normalised).
        gray: ``"repeat"`` accepts 1-channel inputs by repeating them to RGB; ``"error"`` refuses them.
        requires_grad: make the backbone learnable.
        verify_weights: ``"warn"``/``"error"``/``None``, as for ``VGGFeatures``.

    Raises:
        ValueError: an unknown tap (with the closest name), the same layer named twice, a bad
            ``gray`` or ``input_range``.
        featx.errors.WeightsNotFoundError, featx.errors.WeightsLoadError: see
            :func:`featx.weights.load_weights`.

    Shape:
        - Input: ``(B, 3, H, W)`` floating point, at least :attr:`min_input_size` (17 for ``fire9``).
        - Output: ``{tap: (B, C, h, w)}`` in depth order, ``h = squeezenet_output_size(H, tap)``.

    Example:
        >>> import warnings, torch
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     squeeze = SqueezeNetFeatures("conv1,fire3,features.7", weights=None)
        >>> {name: tuple(f.shape) for name, f in squeeze(torch.rand(1, 3, 64, 64)).items()}
        {'conv1': (1, 64, 31, 31), 'fire3': (1, 128, 15, 15), 'features.7': (1, 256, 7, 7)}
        >>> len(squeeze.features)  # pool5 and fire6 ... fire9 are never built
        8
    """

    def __init__(
        self,
        taps: Union[str, Iterable[str]] = "lpips_squeeze",
        *,
        weights: WeightsSpec = "DEFAULT",
        input_range: InputRange = (0.0, 1.0),
        gray: str = "error",
        requires_grad: bool = False,
        verify_weights: Optional[str] = None,
    ) -> None:
        feature_info = _resolve(taps)
        deepest = SQUEEZENET_LAYERS[feature_info[-1].index]
        super().__init__(
            ARCH,
            feature_info,
            min_input_size=squeezenet_min_input_size(deepest.name),
            input_range=input_range,
            gray=gray,
        )
        self._tap_at: dict[int, str] = {}  # features index -> tap on that whole layer
        self._part_taps: dict[int, dict[str, str]] = {}  # features index -> {Fire part: tap}
        for info in self.feature_info:
            layer = SQUEEZENET_LAYERS[info.index]
            if layer.part:
                self._part_taps.setdefault(layer.block, {})[layer.part] = info.name
            else:
                self._tap_at[layer.block] = info.name
        kept_parts = None  # a tap inside the deepest Fire module keeps only the parts on its path
        if deepest.part:
            kept_parts = frozenset(part for tap in self._part_taps[deepest.block] for part in _NEEDS[tap])
        self.features = nn.Sequential(*self._build(deepest, kept_parts))
        self.load_and_freeze(
            weights,
            expected=self.loadable_shapes(),
            requires_grad=requires_grad,
            layout=_layout(deepest, kept_parts),
            verify=verify_weights,
        )

    def _build(self, deepest: SqueezeNetLayer, kept_parts: Optional[frozenset[str]]) -> list[nn.Module]:
        modules: list[nn.Module] = []
        for block in range(deepest.block + 1):
            kind = _BY_NAME[_TOP[block]].kind
            if kind == "conv":
                modules.append(nn.Conv2d(3, 64, kernel_size=3, stride=2))
            elif kind == "relu":
                modules.append(nn.ReLU(inplace=0 not in self._tap_at))  # in place would overwrite a conv1 tap
            elif kind == "pool":
                modules.append(nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True))
            else:
                fire = _fire(block, kept_parts if block == deepest.block else None)
                for part in self._part_taps.get(block, {}):
                    if not part.endswith("_activation") and hasattr(fire, f"{part}_activation"):
                        setattr(fire, f"{part}_activation", nn.ReLU(inplace=False))  # keep the conv's output
                modules.append(fire)
        for conv in (m for module in modules for m in module.modules() if isinstance(m, nn.Conv2d)):
            nn.init.kaiming_uniform_(conv.weight)  # torchvision's SqueezeNet initialisation (random weights)
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)
        return modules

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The truncated ``features`` on normalised input: the tapped maps, shallowest first."""
        out: dict[str, torch.Tensor] = {}
        for block, module in enumerate(self.features):
            parts = self._part_taps.get(block)
            if parts is None:
                x = module(x)
            else:
                result = _run_fire(module, x, parts, out)
                if result is None:  # the deepest tap was inside this (cut) Fire module
                    break
                x = result
            if block in self._tap_at:
                out[self._tap_at[block]] = x
        return out

    def extra_repr(self) -> str:
        return f"taps={self.taps}, weights={self.weights_id!r}"


def _run_fire(fire: nn.Module, x: torch.Tensor, taps: Mapping[str, str], out: dict[str, torch.Tensor]) -> Optional[torch.Tensor]:
    """torchvision's ``Fire.forward`` step by step, keeping the tapped parts' outputs; ``None`` when the
    module is cut (then nothing after its last built part is computed)."""
    parts = {name: getattr(fire, name) for name in FIRE_PARTS if hasattr(fire, name)}

    def step(name: str, h: torch.Tensor) -> torch.Tensor:
        h = parts[name](h)
        if name in taps:
            out[taps[name]] = h
        return h

    squeezed = step("squeeze", x)
    if "squeeze_activation" not in parts:
        return None
    squeezed = step("squeeze_activation", squeezed)
    branches = []
    for branch in ("expand1x1", "expand3x3"):
        if branch in parts:
            h = step(branch, squeezed)
            if f"{branch}_activation" in parts:
                branches.append(step(f"{branch}_activation", h))
    if len(branches) < 2:
        return None
    return torch.cat(branches, 1)
