"""``VGGFeatures``: a VGG ``features`` stack cut after the deepest tap, returning named feature maps."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Optional, Union, cast

import torch
from torch import nn

from featx._checks import InputRange, check_bool, check_choice, check_input_range, range_warning
from featx.backbones.pooling import make_pool
from featx.backbones.taps import TapInfo, resolve_taps
from featx.backbones.vgg.layers import POOLINGS, LayerSpec, check_arch, layer_specs, min_input_size
from featx.errors import FeatxTypeError, FeatxValueError, FeatxWarning, InputRangeWarning
from featx.presets import PRESETS, get_preset

if TYPE_CHECKING:
    from featx.weights import WeightsSpec

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "VGGFeatures"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_RANGE_CHECKED_CALLS = 4  # forward calls whose input min/max are checked against input_range


def _input_affine(input_range: InputRange) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel ``scale, shift`` (float64 values) mapping ``input_range`` to ImageNet-normalised
    values in one affine.

    ``x01 = (x - lo) / (hi - lo)`` and ``(x01 - mean) / std`` fuse to ``x * scale + shift`` with
    ``scale = 1 / ((hi - lo) std)`` and ``shift = -(lo / (hi - lo) + mean) / std``.
    """
    if isinstance(input_range, str):  # "normalized", the only string check_input_range accepts
        return (1.0, 1.0, 1.0), (0.0, 0.0, 0.0)
    lo, hi = input_range
    scale = tuple(1.0 / ((hi - lo) * std) for std in IMAGENET_STD)
    shift = tuple(-(lo / (hi - lo) + mean) / std for mean, std in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True))
    return scale, shift


def _check_image_batch(x: object, *, gray: str, min_size: int, deepest_tap: str, dtype: torch.dtype) -> torch.Tensor:
    """Validate a batch of images for a VGG extractor and return it with 3 channels.

    Args:
        x: the input.
        gray: ``"repeat"`` to accept 1-channel input by repeating it to RGB, ``"error"`` otherwise.
        min_size: smallest height and width the deepest tap needs.
        deepest_tap: name of that tap, for the message.
        dtype: the extractor's parameter dtype; a different floating dtype is only accepted under autocast.

    Returns:
        ``x`` with shape ``(B, 3, H, W)`` (a broadcast view when a gray input was repeated).

    Raises:
        TypeError: not a tensor, not floating point, or a dtype that does not match the weights.
        ValueError: wrong number of dimensions or channels, an empty batch, a meta-device tensor,
            or too small for ``deepest_tap``.

    Shape:
        ``(B, 3, H, W)``, or ``(B, 1, H, W)`` with ``gray="repeat"``.
    """
    if not isinstance(x, torch.Tensor):
        raise FeatxTypeError(f"expected a torch.Tensor of shape (B, 3, H, W), got {type(x).__name__}")
    if not x.is_floating_point():
        raise FeatxTypeError(
            f"expected a floating point tensor, got dtype {x.dtype}; convert it first, "
            "e.g. x.float() / 255 for uint8 images (and keep input_range=(0, 1))"
        )
    if x.ndim != 4:
        hint = " Add a batch dimension with x.unsqueeze(0)." if x.ndim == 3 else ""
        raise FeatxValueError(f"expected a 4-D tensor (B, 3, H, W), got shape {tuple(x.shape)}.{hint}")
    if x.shape[0] == 0:
        raise FeatxValueError(f"expected at least one image, got an empty batch of shape {tuple(x.shape)}")
    if x.is_meta:
        raise FeatxValueError(
            "got a tensor on the meta device, which has a shape but no data; "
            "move it to a real device (x.to('cpu') or x.to('cuda')) first"
        )
    channels = x.shape[1]
    if channels == 1:
        if gray != "repeat":
            raise FeatxValueError(
                f"expected 3 channels (RGB), got 1 channel in shape {tuple(x.shape)}; "
                "pass gray='repeat' to repeat a gray or Y-channel image to RGB"
            )
        x = x.expand(-1, 3, -1, -1)
    elif channels != 3:
        hint = " Drop the alpha channel with x[:, :3]." if channels == 4 else ""
        raise FeatxValueError(f"expected 3 channels (RGB), got {channels} in shape {tuple(x.shape)}.{hint}")
    height, width = x.shape[-2:]
    if height < min_size or width < min_size:
        raise FeatxValueError(
            f"input of size {height}x{width} is too small for tap {deepest_tap!r}: "
            f"it needs at least {min_size}x{min_size}"
        )
    if x.dtype != dtype and not torch.is_autocast_enabled(x.device.type):
        raise FeatxTypeError(
            f"input dtype {x.dtype} does not match the extractor's dtype {dtype}; "
            f"cast the input (x.to({dtype})), the extractor (.to({x.dtype})), or run under torch.autocast"
        )
    return x


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


def _drop_frozen_weights(module: VGGFeatures, state_dict: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    """State-dict post hook: an extractor built frozen contributes no entries to a parent's state dict."""
    if not prefix or module.learnable:
        return
    if not module.frozen and not module.warned_not_saved:
        module.warned_not_saved = True
        warnings.warn(
            f"the VGGFeatures at {prefix.rstrip('.')!r} was built frozen and later unfrozen: its parameters "
            "require grad but are not saved in the parent's state_dict (what is saved is decided at "
            "construction). Build it with requires_grad=True to train and save it.",
            FeatxWarning,
            stacklevel=4,
        )
    for key in [key for key in state_dict if key.startswith(prefix)]:
        del state_dict[key]


def _keep_frozen_weights(
    module: VGGFeatures, state_dict: dict[str, Any], prefix: str, local_metadata: Any, strict: bool, *args: Any
) -> None:
    """Load pre hook: a parent checkpoint without an extractor built frozen keeps its weights."""
    if module.learnable:
        return
    own = module.state_dict()  # unprefixed: the hook above only drops entries when nested
    if not any(prefix + key in state_dict for key in own):
        for key, value in own.items():
            state_dict[prefix + key] = value


class VGGFeatures(nn.Module):
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

    input_scale: torch.Tensor
    input_shift: torch.Tensor
    weights_id: str
    weights_sha256: Optional[str]

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
        super().__init__()
        from featx.weights import load_weights

        self.arch = check_arch(arch)
        if pooling is None:  # a preset's taps come with its pooling (gatys: avg), anything else max
            pooling = PRESETS[taps].pooling if isinstance(taps, str) and taps in PRESETS else "max"
        self.pooling = check_choice("pooling", pooling, POOLINGS)
        self.gray = check_choice("gray", gray, ("error", "repeat"))
        self.input_range = check_input_range(input_range)
        check_bool("requires_grad", requires_grad)
        if pooling == "conv" and not requires_grad:
            raise FeatxValueError(
                "pooling='conv' replaces each pool with a new learnable strided convolution that "
                "must be trained; pass requires_grad=True"
            )
        self.feature_info: tuple[TapInfo, ...] = resolve_taps(arch, taps, pooling=pooling)
        self.taps: tuple[str, ...] = tuple(info.name for info in self.feature_info)
        self.min_input_size = min_input_size(arch, self.taps[-1], pooling=pooling)
        self._tap_at = {info.index: info.name for info in self.feature_info}
        self._range_checks_left = 0 if self.input_range == "normalized" else _RANGE_CHECKED_CALLS
        self.warned_not_saved = False  # the drop-on-save warning is given once

        specs = layer_specs(arch, pooling=pooling)[: self.feature_info[-1].index + 1]
        self.features = nn.Sequential(
            *(_make_layer(spec, pooling, inplace_relu=spec.index - 1 not in self._tap_at) for spec in specs)
        )
        # The affine in float64 (exact for float64 modules) and as float32 buffers that follow .to().
        self._affine64 = _input_affine(self.input_range)
        scale, shift = (torch.tensor(values).view(1, 3, 1, 1) for values in self._affine64)
        self.register_buffer("input_scale", scale, persistent=False)
        self.register_buffer("input_shift", shift, persistent=False)

        pool_prefixes = tuple(f"features.{spec.index}." for spec in specs if spec.kind == "pool")
        expected = {
            f"features.{key}": value.shape
            for key, value in self.features.state_dict().items()
            if not f"features.{key}".startswith(pool_prefixes)
        }
        loaded = load_weights(weights, arch=arch, expected=expected, verify=verify_weights)
        self.weights_verified: Optional[bool] = None if loaded is None else loaded.verified
        if loaded is None:
            self.weights_id, self.weights_sha256 = "random", None
        else:
            with torch.no_grad():
                for key, value in loaded.state_dict.items():
                    target = self.get_parameter(key) if key.endswith(("weight", "bias")) else self.get_buffer(key)
                    target.copy_(value)
            self.weights_id, self.weights_sha256 = loaded.weights_id, loaded.sha256
        self.learnable = requires_grad  # decides, once, whether parents' state dicts hold the weights
        self.requires_grad_(requires_grad)
        self.train(requires_grad)
        self.register_state_dict_post_hook(_drop_frozen_weights)  # type: ignore[no-untyped-call]
        self.register_load_state_dict_pre_hook(_keep_frozen_weights)  # type: ignore[no-untyped-call]

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

    @property
    def frozen(self) -> bool:
        """True when no parameter requires grad now (then the module is eval-locked)."""
        return not any(param.requires_grad for param in self.parameters())

    def train(self, mode: bool = True) -> VGGFeatures:
        """Set train/eval mode; a frozen extractor always stays in eval mode."""
        return super().train(mode and not self.frozen)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Map inputs from ``input_range`` to ImageNet-normalised values (one fused affine).

        float64 inputs use the affine's exact float64 values; other dtypes use the buffers
        (float32 unless the module was cast).

        Shape:
            ``(B, 3, H, W) -> (B, 3, H, W)``.
        """
        if self.input_range == "normalized":
            return x
        if x.dtype == torch.float64:
            scale, shift = (
                torch.tensor(values, dtype=torch.float64, device=x.device).view(1, 3, 1, 1)
                for values in self._affine64
            )
            return x * scale + shift
        return x * self.input_scale.to(x.dtype) + self.input_shift.to(x.dtype)

    def _check_range(self, x: torch.Tensor) -> None:
        """Warn once if one of the first inputs looks like another value range (one host sync a call)."""
        self._range_checks_left -= 1
        low, high = torch.stack([x.detach().min(), x.detach().max()]).float().tolist()
        if isinstance(self.input_range, str):  # "normalized" inputs are not checked
            return
        message = range_warning(low, high, self.input_range)
        if message is not None:
            self._range_checks_left = 0
            warnings.warn(message, InputRangeWarning, stacklevel=5)  # the caller of the module (nn.Module.__call__)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run the truncated backbone and return the tapped feature maps in depth order.

        Args:
            x: images in ``input_range``.

        Returns:
            ``{tap: feature map}`` for every tap, shallowest first.

        Raises:
            TypeError: not a floating point tensor, or its dtype differs from the weights outside autocast.
            ValueError: not 4-D, not 3 channels (1 without ``gray="repeat"``), or smaller than
                ``min_input_size``.
        """
        x = _check_image_batch(
            x,
            gray=self.gray,
            min_size=self.min_input_size,
            deepest_tap=self.taps[-1],
            dtype=self.input_scale.dtype,
        )
        if self._range_checks_left > 0 and not torch.compiler.is_compiling():
            self._check_range(x)
        x = self.normalize(x)
        out: dict[str, torch.Tensor] = {}
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self._tap_at:
                out[self._tap_at[index]] = x
        return out

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}, taps={self.taps}, pooling={self.pooling!r}, weights={self.weights_id!r}"

