"""``VGGFeatures``: a VGG ``features`` stack cut after the deepest tap, returning named feature maps."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Optional, Union, cast

import torch
from torch import nn

from featx._checks import InputRange, check_bool, check_choice
from featx.backbones.base import BackboneFeatures, run_tapped
from featx.backbones.pooling import make_pool
from featx.backbones.taps import resolve_taps
from featx.backbones.vgg.layers import POOLINGS, LayerSpec, check_arch, layer_specs, min_input_size
from featx.errors import FeatxValueError
from featx.presets import PRESETS, get_preset

if TYPE_CHECKING:
    from featx.weights import WeightsSpec

__all__ = ["VGGFeatures"]


def _make_layer(spec: LayerSpec, pooling: str, inplace_relu: bool) -> nn.Module:
    if spec.kind == "conv":
        conv = nn.Conv2d(spec.in_channels, spec.out_channels, kernel_size=3, padding=1)
        # torchvision's VGG initialisation, so random weights give well-scaled activations.
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(cast(torch.Tensor, conv.bias))
        return conv
    if spec.kind == "bn":
        return nn.BatchNorm2d(spec.out_channels)
    if spec.kind == "relu":
        return nn.ReLU(inplace=inplace_relu)
    return make_pool(pooling, spec.in_channels)


class VGGFeatures(BackboneFeatures):
    """A VGG backbone cut after its deepest tap that returns a dict of named feature maps.

    Only ``features[: deepest_tap + 1]`` is built and loaded; the classifier never is. ``conv*``
    taps are true pre-activation outputs (the ReLU right after a tapped layer is out-of-place;
    every other ReLU stays in-place). Inputs are mapped from ``input_range`` and ImageNet-normalised
    by one fused per-channel affine.

    Frozen (the default, ``requires_grad=False``): no parameter requires grad and the module stays
    in eval mode when a parent calls ``.train()``. Learnable (``requires_grad=True``) behaves like
    any module.

    What a parent's ``state_dict`` holds is decided at construction (:attr:`learnable`): an
    extractor built frozen adds nothing (a parent checkpoint without its entries loads strictly
    and keeps its weights); one built learnable is always saved, also after a later
    ``requires_grad_(False)`` (train, then freeze for fine-tuning or export: the trained weights
    stay in the checkpoint). Unfreezing an extractor built frozen makes it trainable, but it is
    still not saved, and the first parent ``state_dict()`` that drops it warns.

    Inputs that look like another value range than ``input_range`` (for example ``[-1, 1]``
    tanh outputs with the default ``(0, 1)``, or ``[0, 255]`` images) warn
    :class:`InputRangeWarning` once, from the min/max of the first calls only. Silence it with
    ``warnings.filterwarnings("ignore", category=featx.InputRangeWarning)``.

    Args:
        arch: ``vgg11``, ``vgg13``, ``vgg16``, ``vgg19`` or a ``_bn`` variant.
        taps: a preset name (``"ttsr_lte"``), a tap (``"conv5_4"``), ``"relu1_1,relu2_1"`` or a list.
        weights: ``"DEFAULT"`` (ImageNet checkpoint from the local cache), a ``VGGWeights`` member or
            name, a path (``.pth``/``.safetensors``), an in-memory state dict, or ``None`` for random
            weights (explicit opt-in; warns). Never downloads.
        input_range: ``(lo, hi)`` of the input values, e.g. ``(0, 1)``, ``(-1, 1)``, ``(0, 255)``;
            or ``"normalized"`` for inputs already ImageNet-normalised.
        gray: ``"repeat"`` accepts 1-channel inputs by repeating them to RGB; ``"error"`` refuses them.
        pooling: ``"max"``, ``"avg"``, ``"blur"`` (kornia MaxBlurPool2D), ``"l2"`` (DISTS' L2
            pooling, :class:`featx.backbones.pooling.L2Pool2d`), ``"conv"`` (learnable 3x3
            stride-2 convolutions; needs ``requires_grad=True``) or ``"none"``. Default: the
            preset's pooling when ``taps`` names a preset (``gatys``: ``"avg"``), else ``"max"``.
        requires_grad: make the backbone learnable.
        verify_weights: ``"warn"`` or ``"error"``: what a file at a known checkpoint's name whose
            sha256 does not match does (see :func:`featx.weights.load_weights`). ``None``
            (default): ``"error"`` when ``FEATX_REQUIRE_VERIFIED=1``, else ``"warn"``. Mismatched
            files are never recorded under the checkpoint's name: :attr:`weights_id` is
            ``"unverified:<name>"`` and :attr:`weights_verified` is ``False``.

    Attributes:
        weights_id: where the weights came from: a checkpoint name (sha256 verified),
            ``"unverified:<name>"``, ``"file:<path>"``, ``"state_dict"`` or ``"random"``.
        weights_sha256: full sha256 of the weights file (``None`` without a file).
        weights_verified: ``True`` when the file's sha256 matched its known checkpoint, ``False``
            when it did not, ``None`` when there was nothing to check against.

    Raises:
        ValueError: unknown arch, tap, pooling, gray mode or bad input range; ``pooling="conv"``
            with a frozen backbone.
        featx.errors.WeightsNotFoundError: ``weights`` names a checkpoint that is not on disk.
        featx.errors.WeightsLoadError: the checkpoint's keys or shapes do not match.
        featx.errors.HashMismatchError: a mismatched checkpoint with ``verify_weights="error"``.

    Shape:
        - Input: ``(B, 3, H, W)`` floating point (``(B, 1, H, W)`` with ``gray="repeat"``).
        - Output: ``{tap: (B, C_tap, H // stride_tap, W // stride_tap)}`` in depth order.

    Example:
        >>> import torch, warnings
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     vgg = VGGFeatures("vgg19", "ttsr_lte", weights=None)
        >>> feats = vgg(torch.rand(2, 3, 32, 32))
        >>> {name: tuple(f.shape) for name, f in feats.items()}
        {'relu1_1': (2, 64, 32, 32), 'relu2_1': (2, 128, 16, 16), 'relu3_1': (2, 256, 8, 8)}
        >>> len(vgg.features)  # layers after relu3_1 are never built
        12
    """

    def __init__(
        self,
        arch: str = "vgg19",
        taps: Union[str, Iterable[str]] = "ttsr_lte",
        *,
        weights: WeightsSpec = "DEFAULT",
        input_range: InputRange = (0.0, 1.0),
        gray: str = "error",
        pooling: Optional[str] = None,
        requires_grad: bool = False,
        verify_weights: Optional[str] = None,
    ) -> None:
        from featx.weights.matching import KeyLayout

        check_arch(arch)
        if pooling is None:  # a preset's taps come with its pooling (gatys: avg), anything else max
            pooling = PRESETS[taps].pooling if isinstance(taps, str) and taps in PRESETS else "max"
        pooling = check_choice("pooling", pooling, POOLINGS)
        check_bool("requires_grad", requires_grad)
        if pooling == "conv" and not requires_grad:
            raise FeatxValueError(
                "pooling='conv' replaces each pool with a new learnable strided convolution that "
                "must be trained; pass requires_grad=True"
            )
        feature_info = resolve_taps(arch, taps, pooling=pooling)
        super().__init__(
            arch,
            feature_info,
            min_input_size=min_input_size(arch, feature_info[-1].name, pooling=pooling),
            input_range=input_range,
            gray=gray,
        )
        self.pooling = pooling
        self._tap_at = {info.index: info.name for info in self.feature_info}
        specs = layer_specs(arch, pooling=pooling)[: self.feature_info[-1].index + 1]
        self.features = nn.Sequential(
            *(_make_layer(spec, pooling, inplace_relu=spec.index - 1 not in self._tap_at) for spec in specs)
        )
        pool_prefixes = tuple(f"features.{spec.index}." for spec in specs if spec.kind == "pool")
        self.load_and_freeze(
            weights,
            expected=self.loadable_shapes(skip=pool_prefixes),
            requires_grad=requires_grad,
            layout=KeyLayout.sequential(self.feature_info[-1].index, arch),
            verify=verify_weights,
        )

    @classmethod
    def from_preset(cls, name: str, **kwargs: Any) -> VGGFeatures:
        """Build the extractor a preset describes (its arch, taps and pooling).

        Args:
            name: a key of :data:`featx.presets.PRESETS`.
            **kwargs: any other constructor argument (``weights``, ``input_range``, ...).

        Raises:
            ValueError: unknown preset (lists the valid ones) or ``arch``/``taps`` also given.

        Example:
            >>> import warnings
            >>> with warnings.catch_warnings():
            ...     warnings.simplefilter("ignore")
            ...     VGGFeatures.from_preset("lpips_vgg", weights=None).taps
            ('relu1_2', 'relu2_2', 'relu3_3', 'relu4_3', 'relu5_3')
        """
        preset = get_preset(name)
        for key in ("arch", "taps"):
            if key in kwargs:
                raise FeatxValueError(f"from_preset({name!r}) sets {key} itself; do not pass {key}=")
        kwargs.setdefault("pooling", preset.pooling)
        return cls(preset.arch, preset.taps, **kwargs)

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The truncated ``features`` stack on normalised input: the tapped maps, shallowest first."""
        return run_tapped(self.features, self._tap_at, x)

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}, taps={self.taps}, pooling={self.pooling!r}, weights={self.weights_id!r}"

