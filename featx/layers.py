"""VGG configurations, canonical layer names, tap resolution and the named presets.

Everything here is plain data computed from one config table; nothing imports torch.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Union

__all__ = [
    "ARCHS",
    "POOLINGS",
    "PRESETS",
    "HEADS",
    "LayerRow",
    "LayerSpec",
    "Preset",
    "TapInfo",
    "check_arch",
    "check_pooling",
    "closest",
    "layer_names",
    "layer_table",
    "layer_specs",
    "min_input_size",
    "resolve_taps",
]

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

POOLINGS: tuple[str, ...] = ("max", "avg", "blur", "conv", "none")
"""Pooling variants: max (torchvision), avg (Gatys), blur (anti-aliased), conv (learnable), none."""


def closest(name: str, choices: Iterable[str]) -> str:
    """Return a "did you mean" hint for an unknown name, or an empty string.

    Example:
        >>> closest("rleu3_1", ["relu3_1", "conv3_1"])
        " Did you mean 'relu3_1'?"
    """
    matches = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" Did you mean {matches[0]!r}?" if matches else ""


def check_arch(arch: str) -> str:
    """Validate an architecture name and return it.

    Raises:
        TypeError: ``arch`` is not a string.
        ValueError: unknown architecture; the message lists the valid ones.
    """
    if not isinstance(arch, str):
        raise TypeError(f"arch must be a string such as 'vgg19', got {type(arch).__name__}")
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}.{closest(arch, ARCHS)} Valid archs: {', '.join(ARCHS)}")
    return arch


def check_pooling(pooling: str) -> str:
    """Validate a pooling variant name and return it.

    Raises:
        ValueError: unknown pooling; the message lists the valid ones.
    """
    if pooling not in POOLINGS:
        raise ValueError(
            f"unknown pooling {pooling!r}.{closest(str(pooling), POOLINGS)} Valid poolings: {', '.join(POOLINGS)}"
        )
    return pooling


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


def layer_specs(arch: str, pooling: str = "max") -> tuple[LayerSpec, ...]:
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
    check_pooling(pooling)
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


def min_input_size(arch: str, deepest_tap: str, pooling: str = "max") -> int:
    """Smallest height/width that still gives a non-empty map at ``deepest_tap``.

    Each 2x2 pooling layer at or before the tap halves the size (rounding down), so the
    minimum is ``2 ** pools``; with ``pooling="none"`` it is 1.

    Example:
        >>> min_input_size("vgg19", "relu5_1")
        16
    """
    spec = {s.name: s for s in layer_specs(arch, pooling)}[deepest_tap]
    return 1 if pooling == "none" else 2**spec.pools_before


@dataclass(frozen=True)
class Preset:
    """A named set of taps with their weights, as used by a published method.

    Attributes:
        arch: the architecture the method uses.
        layer_weights: ``(tap, weight)`` pairs of the feature (perceptual) term, or of the taps
            an extractor returns for extractor-only presets.
        criterion: distance of the feature term (``None`` for extractor-only presets).
        style_weights: ``(tap, weight)`` pairs of a Gram (style) term, empty when unused.
        pooling: pooling variant the method uses.
        normalize_channels: unit-normalise each feature vector across channels first (LPIPS).
        source: where the numbers come from.
    """

    arch: str
    layer_weights: tuple[tuple[str, float], ...]
    criterion: Union[str, None]
    source: str
    style_weights: tuple[tuple[str, float], ...] = ()
    pooling: str = "max"
    normalize_channels: bool = False

    @property
    def taps(self) -> tuple[str, ...]:
        """All taps the preset needs (feature and style terms), in depth order."""
        names = {name for name, _ in self.layer_weights + self.style_weights}
        return tuple(name for name in layer_names(self.arch) if name in names)


PRESETS: dict[str, Preset] = {
    # TTSR (Yang et al., CVPR 2020), model/LTE.py: VGG19 features sliced [0:2], [2:7], [7:12],
    # i.e. the outputs of relu1_1, relu2_1 and relu3_1.
    "ttsr_lte": Preset(
        arch="vgg19",
        layer_weights=(("relu1_1", 1.0), ("relu2_1", 1.0), ("relu3_1", 1.0)),
        criterion=None,
        source="TTSR model/LTE.py: slices [0:2], [2:7], [7:12] of vgg19.features",
    ),
    # TTSR model/Vgg19.py keeps features[:30] (relu5_1); loss/loss.py uses MSE on it, and the
    # training options (args.py) weight it with --per_w 1e-2.
    "ttsr": Preset(
        arch="vgg19",
        layer_weights=(("relu5_1", 1e-2),),
        criterion="mse",
        source="TTSR model/Vgg19.py (features[:30]), loss/loss.py PerceptualLoss, args.py --per_w 1e-2",
    ),
    # ESRGAN (Wang et al., ECCVW 2018): features before activation, conv5_4, L1; BasicSR
    # options/train/ESRGAN/train_ESRGAN_x4.yml: layer_weights {conv5_4: 1}, criterion l1.
    "esrgan": Preset(
        arch="vgg19",
        layer_weights=(("conv5_4", 1.0),),
        criterion="l1",
        source="ESRGAN paper sec. 3.3; BasicSR train_ESRGAN_x4.yml perceptual_opt",
    ),
    # Real-ESRGAN options/train_realesrgan_x4plus.yml perceptual_opt layer_weights.
    "real_esrgan": Preset(
        arch="vgg19",
        layer_weights=(("conv1_2", 0.1), ("conv2_2", 0.1), ("conv3_4", 1.0), ("conv4_4", 1.0), ("conv5_4", 1.0)),
        criterion="l1",
        source="Real-ESRGAN options/train_realesrgan_x4plus.yml perceptual_opt",
    ),
    # SRGAN (Ledig et al., CVPR 2017) "VGG54": after the 4th conv (and its ReLU) before the 5th
    # max pool, MSE. The paper also rescales the loss by 1/12.75; apply that as a loss weight.
    "srgan": Preset(
        arch="vgg19",
        layer_weights=(("relu5_4", 1.0),),
        criterion="mse",
        source="SRGAN paper sec. 2.2.2 (VGG5,4)",
    ),
    # Gatys, Ecker & Bethge, CVPR 2016: content relu4_2, style relu1_1..relu5_1 with equal
    # weights w_l = 1/5, average pooling instead of max pooling.
    "gatys": Preset(
        arch="vgg19",
        layer_weights=(("relu4_2", 1.0),),
        criterion="mse",
        style_weights=tuple((f"relu{block}_1", 0.2) for block in range(1, 6)),
        pooling="avg",
        source="Gatys et al., Image Style Transfer Using CNNs, CVPR 2016, sec. 2-3",
    ),
    # LPIPS (Zhang et al., CVPR 2018), VGG16 variant: the last ReLU of each block, features
    # unit-normalised over channels, squared L2. Uncalibrated: no learned linear layer weights.
    "lpips_vgg": Preset(
        arch="vgg16",
        layer_weights=tuple((name, 1.0) for name in ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")),
        criterion="l2",
        normalize_channels=True,
        source="LPIPS paper sec. 3 (lin=False 'baseline' variant), lpips/pretrained_networks.py vgg16 slices",
    ),
}


def resolve_taps(arch: str, taps: Union[str, Iterable[str]], pooling: str = "max") -> tuple[TapInfo, ...]:
    """Validate tap names, drop duplicates and order them by depth.

    Args:
        arch: one of :data:`ARCHS`.
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
    specs = {spec.name: spec for spec in layer_specs(arch, pooling)}
    if isinstance(taps, str):
        if taps in PRESETS:
            preset = PRESETS[taps]
            if preset.arch.removesuffix("_bn") != arch.removesuffix("_bn"):
                raise ValueError(f"preset {taps!r} is defined for {preset.arch!r}, got arch={arch!r}")
            names = list(preset.taps)
        else:
            names = [part.strip() for part in taps.split(",") if part.strip()]
    elif isinstance(taps, Iterable):
        names = list(taps)
    else:
        raise TypeError(f"taps must be a preset name, a tap name or a list of tap names, got {type(taps).__name__}")
    if not names:
        raise ValueError(f"taps must name at least one layer of {arch}, got {taps!r}")
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"tap names must be strings, got {name!r} ({type(name).__name__})")
        if name not in specs:
            hint = closest(name, list(specs) + list(PRESETS))
            raise ValueError(
                f"unknown tap {name!r} for {arch}.{hint} Valid taps: {', '.join(specs)}; "
                f"presets: {', '.join(PRESETS)}"
            )
    chosen = sorted({specs[name] for name in names}, key=lambda spec: spec.index)
    return tuple(TapInfo(s.name, s.index, s.out_channels, s.stride) for s in chosen)


@dataclass(frozen=True)
class LayerRow:
    """One row of a layer table (see :func:`layer_table`).

    Attributes:
        name: canonical layer name, or ``fc6``/``fc7``/``fc8``/``gap``/``avgpool`` for head layers.
        kind: ``conv``, ``bn``, ``relu``, ``pool``, ``linear`` or ``gap``.
        shape: output shape ``(C, H, W)`` for one image (``(N,)`` after a linear layer).
        stride: downsampling of the output relative to the input (0 after global pooling).
        params: learnable parameters of the layer.
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    stride: int
    params: int


HEADS: tuple[str, ...] = ("none", "fc", "conv")
"""Classifier heads for :func:`layer_table`: none, fc (torchvision's), conv (fully convolutional)."""


def layer_table(
    arch: str, height: int = 224, width: int = 224, *, head: str = "none", pooling: str = "max"
) -> tuple[LayerRow, ...]:
    """The layer table of an architecture for one input size, optionally with a classifier head.

    ``head="fc"`` is torchvision's classifier (``AdaptiveAvgPool2d(7)``, then fc6/fc7/fc8 as linear
    layers). ``head="conv"`` is the fully convolutional form: fc6 as a 7x7 convolution
    (512 -> 4096, no padding), fc7 and fc8 as 1x1 convolutions, then global average pooling, so any
    input of at least 224x224 gives class scores (a 400x400 input gives a 6x6 score map before
    pooling). Both heads hold the same parameters (fc weights reshaped to convolution kernels).

    Args:
        arch: one of :data:`ARCHS`.
        height: input height.
        width: input width.
        head: one of :data:`HEADS`.
        pooling: one of :data:`POOLINGS`.

    Returns:
        One :class:`LayerRow` per layer.

    Raises:
        ValueError: unknown arch/pooling/head, or an input too small for the layers or the head.

    Example:
        >>> rows = layer_table("vgg16", 400, 400, head="conv")
        >>> [(r.name, r.shape) for r in rows if r.name in ("pool5", "fc8")]
        [('pool5', (512, 12, 12)), ('fc8', (1000, 6, 6))]
        >>> sum(r.params for r in rows)
        138357544
    """
    from featx._checks import check_choice

    check_choice("head", head, HEADS)
    if not (isinstance(height, int) and isinstance(width, int)) or height < 1 or width < 1:
        raise ValueError(f"input size must be two positive integers, got {height!r} x {width!r}")
    rows = []
    h, w = height, width
    for spec in layer_specs(arch, pooling):
        if spec.kind == "pool" and pooling != "none":
            h, w = h // 2, w // 2
            if h < 1 or w < 1:
                raise ValueError(
                    f"input {height}x{width} is too small for {arch}: {spec.name} would be empty "
                    f"(needs at least {2 ** spec.pools_before}x{2 ** spec.pools_before})"
                )
        rows.append(LayerRow(spec.name, spec.kind, (spec.out_channels, h, w), spec.stride, spec.params))
    channels, stride = rows[-1].shape[0], rows[-1].stride
    fc = ((channels * 49, 4096), (4096, 4096), (4096, 1000))
    if head == "fc":
        rows.append(LayerRow("avgpool", "pool", (channels, 7, 7), 0, 0))
        for i, (fan_in, fan_out) in enumerate(fc, start=6):
            rows.append(LayerRow(f"fc{i}", "linear", (fan_out,), 0, fan_in * fan_out + fan_out))
            if i < 8:
                rows.append(LayerRow(f"relu{i}", "relu", (fan_out,), 0, 0))
    elif head == "conv":
        h, w = h - 6, w - 6
        if h < 1 or w < 1:
            raise ValueError(
                f"input {height}x{width} is too small for the convolutional head: fc6 is a 7x7 "
                f"convolution on the pool5 map, which needs at least 7x7 (input >= {7 * stride}x{7 * stride})"
            )
        for i, (fan_in, fan_out) in enumerate(fc, start=6):
            rows.append(LayerRow(f"fc{i}", "conv", (fan_out, h, w), stride, fan_in * fan_out + fan_out))
            if i < 8:
                rows.append(LayerRow(f"relu{i}", "relu", (fan_out, h, w), stride, 0))
        rows.append(LayerRow("gap", "gap", (1000, 1, 1), 0, 0))
    return tuple(rows)
