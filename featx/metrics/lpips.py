"""``LPIPS``: the calibrated Learned Perceptual Image Patch Similarity (Zhang et al., CVPR 2018,
v0.1 weights) on an AlexNet, VGG16 or SqueezeNet 1.1 backbone, as a frozen module usable as a training loss."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Optional, Union, overload

import torch
from torch import nn

from featx._checks import InputRange, check_bool, check_choice
from featx.backbones._frozen import register_frozen_hooks
from featx.backbones.base import BackboneFeatures
from featx.backbones.catalog import build_backbone
from featx.losses._features import autocast_off, check_reduction, compute_dtype, reduce_batch
from featx.metrics._pair import PairMetric

if TYPE_CHECKING:
    from featx.weights import WeightsSpec
    from featx.weights.learned import LearnedSpec

__all__ = ["LPIPS", "LPIPS_NETS", "LPIPS_SCALE", "LPIPS_SHIFT"]

LPIPS_NETS: dict[str, tuple[str, tuple[str, ...], tuple[int, ...]]] = {
    # lpips/pretrained_networks.py: alexnet slices [0:2], [2:5], [5:8], [8:10], [10:12] end at
    # relu1..relu5; vgg16 slices [0:4], [4:9], [9:16], [16:23], [23:30] end at relu1_2..relu5_3.
    "alex": ("alexnet", ("relu1", "relu2", "relu3", "relu4", "relu5"), (64, 192, 384, 256, 256)),
    "vgg": ("vgg16", ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3"), (64, 128, 256, 512, 512)),
    # squeezenet1_1 slices [0:2], [2:5], [5:8], [8:10], [10:11], [11:12], [12:13] end at relu1, fire3,
    # fire5, fire6, fire7, fire8, fire9 (seven linear layers lin0..lin6).
    "squeeze": (
        "squeezenet1_1",
        ("relu1", "fire3", "fire5", "fire6", "fire7", "fire8", "fire9"),
        (64, 128, 256, 384, 384, 512, 512),
    ),
}
"""``net`` -> (backbone arch, taps, channels) of the LPIPS variants."""

LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
"""LPIPS's input scaling (lpips ``ScalingLayer``): ``(x - shift) / scale`` on inputs in ``[-1, 1]``.
In ``[0, 1]`` units it is ImageNet's mean ``(1 + shift) / 2`` and std ``scale / 2``; featx applies
lpips' constants itself (fused with the ``input_range`` mapping) and runs the backbone with
``input_range="normalized"``."""

_EPS = 1e-10  # lpips normalize_tensor: f / (||f||_2 over channels + eps)


def _lpips_affine(input_range: InputRange) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``scale, shift`` with ``x * scale + shift == (2 (x - lo) / (hi - lo) - 1 - SHIFT) / SCALE``.

    ``"normalized"`` (ImageNet-normalised) inputs need no mapping: lpips' scaling is ImageNet's
    mean and std written in ``[-1, 1]`` units, so it equals ImageNet normalisation (identity).
    """
    if isinstance(input_range, str):
        return (1.0, 1.0, 1.0), (0.0, 0.0, 0.0)
    lo, hi = input_range
    scale = tuple(2.0 / ((hi - lo) * s) for s in LPIPS_SCALE)
    shift = tuple((-2.0 * lo / (hi - lo) - 1.0 - t) / s for t, s in zip(LPIPS_SHIFT, LPIPS_SCALE, strict=True))
    return scale, shift


class LPIPS(PairMetric):
    """LPIPS distance between two image batches, equal to the ``lpips`` package (v0.1) on the same weights.

    For each tap ``l`` (AlexNet ``relu1..relu5``, VGG16 ``relu1_2..relu5_3``, SqueezeNet's 7 slice ends) the features of
    both images are unit-normalised over channels, ``f / (||f||_2 + 1e-10)``, their squared
    difference is weighted per channel by the learned linear layer ``w_l`` (1x1 convolution, no
    bias) and averaged over space; the layers add up::

        d(x, y) = sum_l mean_{h,w} sum_c w_{l,c} (f_l(x)/|f_l(x)| - f_l(y)/|f_l(y)|)^2_{c,h,w}

    Inputs are mapped from ``input_range`` to ``[-1, 1]`` and through LPIPS's own scaling layer
    (:data:`LPIPS_SHIFT`, :data:`LPIPS_SCALE`, not ImageNet's mean/std) in one fused affine. The
    module follows the metrics' grammar (docs/api.md, "Metrics"): frozen (no parameter requires
    grad, always in eval mode, nothing in a parent's ``state_dict``) but differentiable with
    respect to both inputs, as lpips is, so it works as a training loss. Under autocast the
    backbone runs in low precision and the normalisation, differences, linear layers and means
    run in float32 (float64 stays float64).

    Args:
        net: ``"alex"`` (LPIPS's default, the number most SR papers report), ``"vgg"`` or ``"squeeze"``.
        weights: the backbone: ``"DEFAULT"`` (``ALEXNET_IMAGENET1K_V1`` / ``VGG16_IMAGENET1K_V1`` /
            ``SQUEEZENET1_1_IMAGENET1K_V1`` from the local cache), a registry member or name, torchvision's enum name, a path,
            a state dict or ``None`` (random; warns), as for :class:`~featx.VGGFeatures`.
        lin_weights: the linear layers: ``"DEFAULT"`` (``LPIPS_ALEX_V0_1`` / ``LPIPS_VGG_V0_1`` /
            ``LPIPS_SQUEEZE_V0_1`` from the local cache; ``featx weights download NAME`` fetches
            them), a :class:`~featx.weights.MetricWeights` name, a path to a file in the lpips format
            (keys ``lin0.model.1.weight`` ... ``lin4.model.1.weight``, up to ``lin6`` for
            ``"squeeze"``, shape ``(1, C, 1, 1)``), or a state dict with those keys.
        input_range: ``(lo, hi)`` of the input values: ``(0, 1)`` is lpips' ``normalize=True``,
            ``(-1, 1)`` its default; ``"normalized"`` for ImageNet-normalised inputs (lpips'
            scaling layer is ImageNet's normalisation, so they go to the backbone unchanged).
            Inputs of the first calls that look like another range (lpips' ``[-1, 1]`` fed to the
            default ``(0, 1)``) warn :class:`~featx.InputRangeWarning` once.
        reduction: ``"mean"``, ``"sum"`` (over the batch) or ``"none"`` (one value per sample).
        spatial: return the distance map (each layer's map upsampled bilinearly to the input size,
            as lpips ``spatial=True``) instead of its spatial mean.
        gray: ``"repeat"`` accepts 1-channel images (repeated to RGB); ``"error"`` refuses them.
        verify_weights: ``"warn"``/``"error"``/``None``: what a file at a known name with another
            sha256 does (both the backbone and the linear layers; ``None``: ``FEATX_REQUIRE_VERIFIED``
            decides).

    Attributes:
        weights_id, weights_sha256, weights_verified: the backbone's provenance.
        lin_weights_id, lin_weights_sha256, lin_weights_verified: the linear layers' provenance.
        min_input_size: the smallest height and width (31 for ``"alex"``, 16 for ``"vgg"``).

    Raises:
        ValueError: unknown ``net``, ``reduction`` or ``gray``; a bad ``input_range``.
        featx.errors.WeightsNotFoundError: a ``"DEFAULT"`` or named file is not on disk.
        featx.errors.WeightsLoadError: a file whose keys or shapes do not fit.

    Shape:
        - Inputs: ``pred`` ``(B, 3, H, W)`` and ``target`` ``(B, 3, H, W)`` or ``(1, 3, H, W)``
          (``(., 1, H, W)`` with ``gray="repeat"``), at least :attr:`min_input_size` (31x31 for
          ``"alex"``, 16x16 for ``"vgg"`` and 17x17 for ``"squeeze"``).
        - Output: ``()`` for ``"mean"``/``"sum"``, ``(B,)`` for ``"none"``; with ``spatial=True``
          ``(B, 1, H, W)`` for ``"none"`` and the batch mean/sum ``(1, H, W)`` otherwise.

    Example:
        >>> import warnings, torch
        >>> lin = {f"lin{k}.model.1.weight": torch.full((1, c, 1, 1), 0.1) for k, c in enumerate(LPIPS_NETS["alex"][2])}
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")  # weights=None: a random backbone, for the example only
        ...     metric = LPIPS("alex", weights=None, lin_weights=lin, reduction="none")
        >>> x = torch.rand(2, 3, 64, 64)
        >>> metric(x, torch.rand(2, 3, 64, 64)).shape, metric(x, x).tolist()
        (torch.Size([2]), [0.0, 0.0])
        >>> metric.lin_weights_id, metric.min_input_size
        ('state_dict', 31)
    """

    metric_name = "LPIPS"

    def __init__(
        self,
        net: str = "alex",
        *,
        weights: WeightsSpec = "DEFAULT",
        lin_weights: LearnedSpec = "DEFAULT",
        input_range: InputRange = (0.0, 1.0),
        reduction: str = "mean",
        spatial: bool = False,
        gray: str = "error",
        verify_weights: Optional[str] = None,
    ) -> None:
        super().__init__()
        from featx.weights import MetricWeights, gather_missing, load_learned

        self.net = check_choice("net", net, tuple(LPIPS_NETS))
        arch, taps, channels = LPIPS_NETS[self.net]
        self.setup_inputs(input_range, gray)
        self.reduction = check_reduction(reduction)
        self.spatial = check_bool("spatial", spatial)
        self.taps = taps

        def make_backbone() -> BackboneFeatures:
            return build_backbone(arch, taps, weights=weights, input_range="normalized", verify_weights=verify_weights)

        expected = {f"lin{k}.model.1.weight": (1, c, 1, 1) for k, c in enumerate(channels)}
        backbone, loaded = gather_missing(  # every missing file (backbone and linear layers) in one error
            make_backbone,
            lambda: load_learned(lin_weights, default=MetricWeights.lpips(arch), expected=expected, verify=verify_weights),
        )
        self.backbone = backbone
        self.weights_id, self.weights_sha256 = backbone.weights_id, backbone.weights_sha256
        self.weights_verified, self.weights_verification = backbone.weights_verified, backbone.weights_verification
        self.min_input_size = backbone.min_input_size
        self.lin = nn.ParameterList(
            nn.Parameter(loaded.state_dict[key].detach().to(torch.float32).clone(), requires_grad=False) for key in expected
        )
        self.lin_weights_id, self.lin_weights_sha256 = loaded.weights_id, loaded.sha256
        self.lin_weights_verified, self.lin_weights_verification = loaded.verified, loaded.verification
        self._affine64 = _lpips_affine(self.input_range)
        self.learnable = False
        self.requires_grad_(False)
        self.eval()
        register_frozen_hooks(self)

    def _scale(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.input_range, str):  # ImageNet-normalised already: lpips' scaling is the identity
            return x
        scale, shift = (torch.tensor(v, dtype=x.dtype, device=x.device).view(1, 3, 1, 1) for v in self._affine64)
        return x * scale + shift

    @overload
    def forward(self, pred: torch.Tensor, target: torch.Tensor, *, return_terms: Literal[False] = ...) -> torch.Tensor: ...

    @overload
    def forward(
        self, pred: torch.Tensor, target: torch.Tensor, *, return_terms: Literal[True]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...

    def forward(
        self, pred: torch.Tensor, target: torch.Tensor, *, return_terms: bool = False
    ) -> Union[torch.Tensor, tuple[torch.Tensor, dict[str, torch.Tensor]]]:
        """The LPIPS distance of ``pred`` and ``target``.

        Args:
            pred: images in ``input_range``.
            target: images in ``input_range`` (the batch of ``pred``, or 1 for one reference).
            return_terms: also return each tap's contribution (reduced the same way; they add up).

        Returns:
            The distance (see Shape), or ``(distance, {tap: term})``.

        Raises:
            TypeError: not floating point tensors, or a dtype other than the module's outside autocast.
            ValueError: bad shapes, batches that do not fit (both shapes are shown), images
                smaller than :attr:`min_input_size`.
        """
        pred, target = self.check_inputs(pred, target)
        pred_feats = self.backbone(self._scale(pred))
        target_feats = self.backbone(self._scale(target))
        terms: dict[str, torch.Tensor] = {}
        with autocast_off(pred.device):
            for tap, weight in zip(self.taps, self.lin, strict=True):
                a, b = pred_feats[tap], target_feats[tap]
                dtype = compute_dtype(a, b)
                a, b = a.to(dtype), b.to(dtype)
                a = a / (a.square().sum(dim=1, keepdim=True).sqrt() + _EPS)
                b = b / (b.square().sum(dim=1, keepdim=True).sqrt() + _EPS)
                weighted = nn.functional.conv2d((a - b).square(), weight.to(dtype))
                if self.spatial:
                    size = (int(pred.shape[-2]), int(pred.shape[-1]))
                    terms[tap] = nn.functional.interpolate(weighted, size=size, mode="bilinear", align_corners=False)
                else:
                    terms[tap] = weighted.mean(dim=(1, 2, 3))
        values = list(terms.values())
        total = values[0]
        for value in values[1:]:  # in tap order, as lpips adds them
            total = total + value
        result = self._reduce(total)
        if return_terms:
            return result, {tap: self._reduce(term) for tap, term in terms.items()}
        return result

    def _reduce(self, value: torch.Tensor) -> torch.Tensor:
        if not self.spatial:
            return reduce_batch(value, self.reduction)
        if self.reduction == "none":
            return value
        return value.mean(dim=0) if self.reduction == "mean" else value.sum(dim=0)

    def extra_repr(self) -> str:
        return (
            f"net={self.net!r}, input_range={self.input_range}, reduction={self.reduction!r}, spatial={self.spatial}, "
            f"gray={self.gray!r}, weights={self.weights_id!r}, lin_weights={self.lin_weights_id!r}"
        )
