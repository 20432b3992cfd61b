"""``BackboneFeatures``: the contract every featx backbone shares (named taps, input range, checks,
offline weights with provenance, frozen by default); each family adds its layers and ``forward_features``."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Optional

import torch
from torch import nn

from featx._checks import InputRange, check_bool, check_choice, check_input_range, range_warning
from featx.backbones._frozen import register_frozen_hooks
from featx.backbones.taps import TapInfo
from featx.errors import FeatxTypeError, FeatxValueError, InputRangeWarning

if TYPE_CHECKING:
    from featx.weights import Verification, WeightsSpec
    from featx.weights.matching import KeyLayout

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "RANGE_CHECKED_CALLS",
    "BackboneFeatures",
    "check_image_batch",
    "input_affine",
    "run_tapped",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RANGE_CHECKED_CALLS = 4
"""Forward calls whose input min/max are checked against ``input_range`` (one host sync each)."""


def input_affine(
    input_range: InputRange, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel ``scale, shift`` (float64 values) mapping ``input_range`` to normalised values in one affine.

    ``x01 = (x - lo) / (hi - lo)`` and ``(x01 - mean) / std`` fuse to ``x * scale + shift`` with
    ``scale = 1 / ((hi - lo) std)`` and ``shift = -(lo / (hi - lo) + mean) / std``. ``"normalized"``
    inputs are already normalised: the identity.

    Example:
        >>> scale, shift = input_affine((0.0, 1.0), mean=(0.5,), std=(0.25,))
        >>> scale, shift
        ((4.0,), (-2.0,))
    """
    if isinstance(input_range, str):
        return tuple(1.0 for _ in mean), tuple(0.0 for _ in mean)
    lo, hi = input_range
    scale = tuple(1.0 / ((hi - lo) * s) for s in std)
    shift = tuple(-(lo / (hi - lo) + m) / s for m, s in zip(mean, std, strict=True))
    return scale, shift


def check_image_batch(x: object, *, gray: str, min_size: int, deepest_tap: str, dtype: torch.dtype) -> torch.Tensor:
    """Validate a batch of images for an extractor and return it with 3 channels.

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

    Example:
        >>> check_image_batch(torch.zeros(1, 1, 8, 8), gray="repeat", min_size=4, deepest_tap="x",
        ...                   dtype=torch.float32).shape
        torch.Size([1, 3, 8, 8])
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


def run_tapped(layers: nn.Sequential, tap_at: Mapping[int, str], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Run a Sequential and keep the outputs of the layers ``tap_at`` names, shallowest first.

    Example:
        >>> layers = nn.Sequential(nn.Identity(), nn.ReLU())
        >>> sorted(run_tapped(layers, {1: "relu"}, torch.zeros(1, 1, 2, 2)))
        ['relu']
    """
    out: dict[str, torch.Tensor] = {}
    for index, layer in enumerate(layers):
        x = layer(x)
        if index in tap_at:
            out[tap_at[index]] = x
    return out


class BackboneFeatures(nn.Module):
    """What every featx backbone does the same way; a family builds its layers and ``forward_features``.

    A subclass calls ``super().__init__(...)`` with its resolved taps, builds only the layers up to
    the deepest tap, then calls :meth:`load_and_freeze`. :meth:`forward` checks the input (a
    floating ``(B, 3, H, W)`` batch, 1 channel with ``gray="repeat"``, at least
    :attr:`min_input_size`, the weights' dtype outside autocast), warns once if the first inputs look
    like another value range, maps ``input_range`` to normalised values with one fused affine, and
    returns :meth:`forward_features`, a dict of the taps in depth order.

    Frozen (the default): no parameter requires grad and the module stays in eval mode when a parent
    calls ``.train()``. What a parent's ``state_dict`` holds is decided at construction
    (:attr:`learnable`): a backbone built frozen adds nothing; one built learnable is always saved.

    Attributes:
        arch: the architecture name.
        taps: the tapped layers, shallowest first.
        feature_info: per tap, its name, index, channels and stride (timm's ``feature_info``).
        min_input_size: smallest height and width the deepest tap needs.
        input_range: ``(lo, hi)`` or ``"normalized"``.
        weights_id: where the weights came from: a checkpoint name (full sha256 verified),
            ``"prefix-verified:<name>"``, ``"unverified:<name>"``, ``"file:<path>"``,
            ``"state_dict"`` or ``"random"``.
        weights_sha256: full sha256 of the weights file (``None`` without a file).
        weights_verified: ``True`` only when the file's size and full sha256 matched its known
            checkpoint, ``False`` when they did not, ``None`` otherwise (a prefix-only match, or
            nothing to check against).
        weights_verification: how far the file was checked, a :class:`~featx.weights.Verification`
            (``"sha256"``, ``"prefix"``, ``"mismatch"``, ``"unknown"``).
        learnable: built with ``requires_grad=True`` (decides what parents' state dicts hold).
    """

    input_scale: torch.Tensor
    input_shift: torch.Tensor
    weights_id: str
    weights_sha256: Optional[str]
    weights_verified: Optional[bool]
    weights_verification: Verification

    def __init__(
        self,
        arch: str,
        feature_info: Iterable[TapInfo],
        *,
        min_input_size: int,
        input_range: InputRange = (0.0, 1.0),
        gray: str = "error",
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        self.arch = arch
        self.feature_info: tuple[TapInfo, ...] = tuple(feature_info)
        self.taps: tuple[str, ...] = tuple(info.name for info in self.feature_info)
        self.min_input_size = min_input_size
        self.gray = check_choice("gray", gray, ("error", "repeat"))
        self.input_range = check_input_range(input_range)
        self._range_checks_left = 0 if self.input_range == "normalized" else RANGE_CHECKED_CALLS
        # The affine in float64 (exact for float64 modules) and as float32 buffers that follow .to().
        self._affine64 = input_affine(self.input_range, mean, std)
        scale, shift = (torch.tensor(values).view(1, -1, 1, 1) for values in self._affine64)
        self.register_buffer("input_scale", scale, persistent=False)
        self.register_buffer("input_shift", shift, persistent=False)
        from featx.weights.info import Verification

        self.weights_id, self.weights_sha256, self.weights_verified = "random", None, None
        self.weights_verification = Verification.UNKNOWN
        self.learnable = False
        self.warned_not_saved = False  # the drop-on-save warning is given once

    def load_and_freeze(
        self,
        weights: WeightsSpec,
        *,
        expected: Mapping[str, Any],
        requires_grad: bool,
        layout: Optional[KeyLayout] = None,
        verify: Optional[str] = None,
    ) -> None:
        """Load the built layers' weights strictly (see :func:`featx.weights.load_weights`), record
        their provenance, then freeze (or not) and fix what parents' state dicts hold.

        Args:
            weights: the ``weights`` argument.
            expected: every state-dict key to load -> its shape (layers that no checkpoint holds,
                such as a learnable pooling, are left out and keep their initialisation).
            requires_grad: learnable (``True``) or frozen.
            layout: how the family's checkpoint keys map onto the module (default: a torchvision
                ``features`` Sequential).
            verify: ``"warn"``/``"error"``/``None`` for files whose sha256 does not match their name.

        Raises:
            TypeError: ``requires_grad`` is not a bool, or a bad ``weights`` argument.
            WeightsNotFoundError, WeightsLoadError, HashMismatchError: see :func:`~featx.weights.load_weights`.
        """
        from featx.weights import load_weights

        check_bool("requires_grad", requires_grad)
        loaded = load_weights(weights, arch=self.arch, expected=expected, layout=layout, verify=verify)
        if loaded is not None:
            parameters = dict(self.named_parameters())  # also those not named weight/bias (cls_token, ls1.gamma)
            with torch.no_grad():
                for key, value in loaded.state_dict.items():
                    target = parameters[key] if key in parameters else self.get_buffer(key)
                    target.copy_(value)
            self.weights_id, self.weights_sha256 = loaded.weights_id, loaded.sha256
            self.weights_verified, self.weights_verification = loaded.verified, loaded.verification
        self.learnable = requires_grad  # decides, once, whether parents' state dicts hold the weights
        self.requires_grad_(requires_grad)
        self.train(requires_grad)
        register_frozen_hooks(self)

    def loadable_shapes(self, *, skip: Iterable[str] = ()) -> dict[str, torch.Size]:
        """Every key of this module's own state dict -> shape, except keys under the ``skip`` prefixes.

        Example:
            >>> module = BackboneFeatures("demo", (), min_input_size=1)
            >>> module.loadable_shapes()
            {}
        """
        prefixes = tuple(skip)
        own = nn.Module.state_dict(self)  # nn.Module's own: no frozen-module hook is involved at the top level
        return {key: value.shape for key, value in own.items() if not (prefixes and key.startswith(prefixes))}

    @property
    def frozen(self) -> bool:
        """True when no parameter requires grad now (then the module is eval-locked)."""
        return not any(param.requires_grad for param in self.parameters())

    def train(self, mode: bool = True) -> BackboneFeatures:
        """Set train/eval mode; a frozen extractor always stays in eval mode."""
        return super().train(mode and not self.frozen)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Map inputs from ``input_range`` to normalised values (one fused affine).

        float64 inputs use the affine's exact float64 values; other dtypes use the buffers
        (float32 unless the module was cast).

        Shape:
            ``(B, 3, H, W) -> (B, 3, H, W)``.
        """
        if self.input_range == "normalized":
            return x
        if x.dtype == torch.float64:
            scale, shift = (
                torch.tensor(values, dtype=torch.float64, device=x.device).view(1, -1, 1, 1) for values in self._affine64
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
        """Check the input, map it from ``input_range`` and return the tapped maps in depth order.

        Args:
            x: images in ``input_range``.

        Returns:
            ``{tap: feature map}`` for every tap, shallowest first.

        Raises:
            TypeError: not a floating point tensor, or its dtype differs from the weights outside autocast.
            ValueError: not 4-D, not 3 channels (1 without ``gray="repeat"``), or smaller than
                :attr:`min_input_size`.
        """
        x = check_image_batch(
            x, gray=self.gray, min_size=self.min_input_size, deepest_tap=self.taps[-1], dtype=self.input_scale.dtype
        )
        if self._range_checks_left > 0 and not torch.compiler.is_compiling():
            self._check_range(x)
        return self.forward_features(self.normalize(x))

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The family's layers on normalised input: ``{tap: map}`` in depth order."""
        raise NotImplementedError(f"{type(self).__name__} does not define forward_features")

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}, taps={self.taps}, weights={self.weights_id!r}"
