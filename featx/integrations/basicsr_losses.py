r"""Loss classes with BasicSR's options and return conventions, computed by featx.

:mod:`featx.integrations.basicsr` registers them in BasicSR's ``LOSS_REGISTRY``, so an options
file names them by ``type:``. The classes themselves are plain ``nn.Module``\ s and need no BasicSR.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Optional, Union

import torch
from torch import nn

from featx._checks import check_bool, check_choice, check_layer_weights, check_number
from featx.backbones.vgg.features import VGGFeatures
from featx.errors import FeatxTypeError, FeatxValueError
from featx.integrations._options import check_term_weight, input_options, options_file_hint, range_norm_input
from featx.losses.functional import gram_matrices, perceptual_loss
from featx.losses.modules import TextureLoss
from featx.metrics.dists import DISTS
from featx.metrics.lpips import LPIPS

if TYPE_CHECKING:
    from featx.weights import WeightsSpec
    from featx.weights.learned import LearnedSpec

__all__ = ["BASICSR_CRITERIA", "FeatxDISTSLoss", "FeatxLPIPSLoss", "FeatxPerceptualLoss", "FeatxTextureLoss"]

BASICSR_CRITERIA: tuple[str, ...] = ("l1", "l2", "fro")
"""The ``criterion`` values of BasicSR's ``PerceptualLoss``."""

LossPair = tuple[Optional[torch.Tensor], Optional[torch.Tensor]]


def _check_pair(x: object, gt: object) -> None:
    """Both images are floating point tensors of one shape (BasicSR's criteria need equal shapes)."""
    shapes = []
    for role, value in (("x", x), ("gt", gt)):
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            got = f"dtype {value.dtype}" if isinstance(value, torch.Tensor) else type(value).__name__
            raise FeatxTypeError(f"{role} must be a floating point tensor (B, 3, H, W), got {got}")
        shapes.append(tuple(value.shape))
    if shapes[0] != shapes[1]:
        raise FeatxValueError(f"x and gt must have the same shape, got {shapes[0]} and {shapes[1]}")


class FeatxPerceptualLoss(nn.Module):
    r"""BasicSR's ``PerceptualLoss`` (``basicsr/losses/basic_loss.py``), computed by featx.

    The options, their defaults and the return value are BasicSR's, so an options file changes
    only ``type:``. With :math:`\phi_l` the VGG feature at layer :math:`l` (``conv*`` taps are
    the true pre-activation outputs, as BasicSR's ``clone()`` gives) and
    :math:`G_l = F_l F_l^\top / (C_l H_l W_l)` its Gram matrix per sample:

    .. math:: L_{percep} = \lambda_p \sum_l w_l\, D(\phi_l(x), \phi_l(gt)),\qquad
              L_{style} = \lambda_s \sum_l w_l\, D(G_l(x), G_l(gt))

    where :math:`D` is ``l1`` (the mean absolute difference over all elements of the batch,
    ``torch.nn.L1Loss``), ``l2`` (the mean squared difference, ``torch.nn.MSELoss``; BasicSR
    1.4.2 names ``torch.nn.L2loss``, which does not exist, and BasicSR's later code uses
    ``MSELoss``) or ``fro`` (``torch.norm(d, p='fro')``: ONE Frobenius norm over the whole
    batch's difference, not one per sample). Layers are added in depth order, as BasicSR does.

    Differences from BasicSR: the VGG is built only up to the deepest layer, its weights come
    from ``vgg_weights`` (never downloaded), it holds nothing in ``state_dict()``, the ``gt``
    branch runs under ``torch.no_grad()``, and both terms share one VGG pass per image.

    Args:
        layer_weights: ``{layer: weight}``, e.g. ``{"conv5_4": 1.0}`` (BasicSR's layer names).
        vgg_type: ``vgg11``, ``vgg13``, ``vgg16``, ``vgg19`` or a ``_bn`` variant.
        use_input_norm: ImageNet-normalise the inputs (images in ``[0, 1]``).
        range_norm: inputs are in ``[-1, 1]``; map them to ``[0, 1]`` first.
        perceptual_weight: :math:`\lambda_p`; 0 switches the term off (it is returned as ``None``).
        style_weight: :math:`\lambda_s`; 0 (the default) switches the term off.
        criterion: ``"l1"``, ``"l2"`` or ``"fro"``.
        vgg_weights: the VGG's weights: ``"DEFAULT"`` (ImageNet, from featx's local cache; ``featx
            weights download VGG19_IMAGENET1K_V1`` fetches it once), a path to a local copy such as
            ``experiments/pretrained_models/vgg19-dcbb9e9d.pth``, or ``None`` for random weights
            (warns; for tests only). featx's ``weights`` argument, under a name that cannot be
            confused with ``layer_weights`` in an options file.

    Raises:
        ValueError: an unknown criterion, VGG type or layer (with the closest valid name), or a
            negative term weight.
        TypeError: a switch that is not a bool, a weight that is not a number.
        featx.errors.WeightsNotFoundError: ``vgg_weights="DEFAULT"`` and the file is not on disk
            (the message names the ``vgg_weights:`` key).

    Shape:
        ``x``, ``gt``: ``(B, 3, H, W)``; returns ``(percep, style)``, each a scalar or ``None``.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")  # vgg_weights=None: random weights, for the example only
        ...     loss = FeatxPerceptualLoss({"conv1_2": 0.1, "relu2_1": 1.0}, style_weight=0.5, vgg_weights=None)
        >>> x = torch.rand(2, 3, 16, 16, requires_grad=True)
        >>> percep, style = loss(x, torch.rand(2, 3, 16, 16))
        >>> (percep + style).backward()
        >>> percep.shape, x.grad.shape, list(loss.state_dict())
        (torch.Size([]), torch.Size([2, 3, 16, 16]), [])
        >>> FeatxPerceptualLoss({"conv1_2": 1.0}, vgg_weights=None)(x, x)[1] is None  # style_weight 0
        True
    """

    def __init__(
        self,
        layer_weights: Mapping[str, float],
        *,
        vgg_type: str = "vgg19",
        use_input_norm: bool = True,
        range_norm: bool = False,
        perceptual_weight: float = 1.0,
        style_weight: float = 0.0,
        criterion: str = "l1",
        vgg_weights: WeightsSpec = "DEFAULT",
    ) -> None:
        super().__init__()
        weights = check_layer_weights(layer_weights)
        self.perceptual_weight = check_term_weight("perceptual_weight", perceptual_weight)
        self.style_weight = check_term_weight("style_weight", style_weight)
        self.criterion = check_choice("criterion", criterion, BASICSR_CRITERIA)
        input_range = input_options(use_input_norm, range_norm)
        self.use_input_norm, self.range_norm = use_input_norm, range_norm
        with options_file_hint("vgg_weights"):
            self.vgg = VGGFeatures(vgg_type, list(weights), weights=vgg_weights, input_range=input_range)
        self.layer_weights = {tap: weights[tap] for tap in self.vgg.taps}  # depth order, as BasicSR adds them

    def _batch_as_one(self, maps: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``fro`` takes one norm over the batch: each ``(B, C, ...)`` map becomes one sample ``(1, B*C, ...)``."""
        if self.criterion != "fro":
            return dict(maps)
        return {name: value.reshape(1, -1, *value.shape[2:]) for name, value in maps.items()}

    def forward(self, x: torch.Tensor, gt: torch.Tensor) -> LossPair:
        """``(percep, style)``: BasicSR's return value, ``None`` for a term whose weight is 0.

        Args:
            x: the network's output.
            gt: the ground truth (no gradient flows to it).
        """
        _check_pair(x, gt)
        if self.perceptual_weight == 0 and self.style_weight == 0:
            return None, None
        switches = {"use_input_norm": self.use_input_norm, "range_norm": self.range_norm}
        x_feats = self.vgg(range_norm_input(x, **switches))
        with torch.no_grad():
            gt_feats = self.vgg(range_norm_input(gt.detach(), **switches))
        percep = style = None
        if self.perceptual_weight > 0:
            percep = self.perceptual_weight * perceptual_loss(
                self._batch_as_one(x_feats), self._batch_as_one(gt_feats), self.layer_weights, criterion=self.criterion
            )
        if self.style_weight > 0:
            # (B, C, C) Grams as (B, 1, C, C) maps: the criterion's mean runs over all entries of the batch
            x_grams = {k: g.unsqueeze(1) for k, g in gram_matrices(x_feats, normalize="chw").items()}
            with torch.no_grad():
                gt_grams = {k: g.unsqueeze(1) for k, g in gram_matrices(gt_feats, normalize="chw").items()}
            style = self.style_weight * perceptual_loss(
                self._batch_as_one(x_grams), self._batch_as_one(gt_grams), self.layer_weights, criterion=self.criterion
            )
        return percep, style

    def extra_repr(self) -> str:
        return (
            f"layer_weights={self.layer_weights}, criterion={self.criterion!r}, "
            f"perceptual_weight={self.perceptual_weight}, style_weight={self.style_weight}"
        )


class _WeightedImageLoss(nn.Module):
    """``loss_weight * measure(pred, target)`` as one tensor, as BasicSR's ``L1Loss`` returns, or
    as the ``(loss, None)`` pair of a ``perceptual_opt`` block with ``return_pair=True``."""

    measure: nn.Module

    def _setup(self, loss_weight: object, return_pair: object) -> None:
        self.loss_weight = check_number("loss_weight", loss_weight)
        self.return_pair = check_bool("return_pair", return_pair)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Map images before ``measure`` (identity here)."""
        return images

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> Union[torch.Tensor, LossPair]:
        """The weighted loss of ``pred`` against ``target`` (no gradient flows to ``target``)."""
        value: torch.Tensor = self.loss_weight * self.measure(self.prepare(pred), self.prepare(target.detach()))
        return (value, None) if self.return_pair else value

    def extra_repr(self) -> str:
        return f"loss_weight={self.loss_weight}, return_pair={self.return_pair}"


class FeatxLPIPSLoss(_WeightedImageLoss):
    """LPIPS as a BasicSR loss: ``loss_weight * LPIPS(pred, target)`` (:class:`featx.LPIPS`).

    Args:
        loss_weight: the multiplier, as in BasicSR's ``L1Loss``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` over the batch (``"none"`` gives one value
            per sample, shape ``(B,)``; BasicSR's pixel losses give an elementwise map there).
        net: ``"alex"`` (LPIPS's default) or ``"vgg"``.
        range_norm: images are in ``[-1, 1]`` (default ``[0, 1]``, BasicSR's).
        backbone_weights: the AlexNet/VGG16 weights (featx's ``weights``: ``"DEFAULT"`` from the
            local cache, a path, or ``None`` for random).
        lin_weights: LPIPS's learned linear layers (``"DEFAULT"`` or a path; the ``lpips``
            package ships them as ``lpips/weights/v0.1/alex.pth``).
        return_pair: return ``(loss, None)`` so the loss fits a ``perceptual_opt`` block of
            ``SRGANModel``/``ESRGANModel``/``RealESRGANModel``, which unpack ``(percep, style)``.

    Raises:
        ValueError: unknown ``net`` or ``reduction``.
        featx.errors.WeightsNotFoundError: a ``"DEFAULT"`` file is not on disk (names the keys).

    Example:
        >>> import warnings
        >>> from featx.metrics.lpips import LPIPS_NETS
        >>> lin = {f"lin{k}.model.1.weight": torch.full((1, c, 1, 1), 0.1) for k, c in enumerate(LPIPS_NETS["alex"][2])}
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")  # random backbone: for the example only
        ...     loss = FeatxLPIPSLoss(loss_weight=0.5, backbone_weights=None, lin_weights=lin)
        >>> image = torch.rand(1, 3, 64, 64)
        >>> float(loss(image, image))
        0.0
    """

    def __init__(
        self,
        *,
        loss_weight: float = 1.0,
        reduction: str = "mean",
        net: str = "alex",
        range_norm: bool = False,
        backbone_weights: WeightsSpec = "DEFAULT",
        lin_weights: LearnedSpec = "DEFAULT",
        return_pair: bool = False,
    ) -> None:
        super().__init__()
        self._setup(loss_weight, return_pair)
        input_range = input_options(True, range_norm)
        with options_file_hint("backbone_weights", "lin_weights"):
            self.measure = LPIPS(
                net, weights=backbone_weights, lin_weights=lin_weights, input_range=input_range, reduction=reduction
            )


class FeatxDISTSLoss(_WeightedImageLoss):
    """DISTS as a BasicSR loss: ``loss_weight * DISTS(pred, target)`` (:class:`featx.DISTS`).

    Args:
        loss_weight, reduction, range_norm, return_pair: as for :class:`FeatxLPIPSLoss`.
        vgg_weights: the VGG16 weights (``"DEFAULT"`` from the local cache, a path, or ``None``).
        dists_weights: DISTS's learned alpha/beta (``"DEFAULT"`` or a path; the ``DISTS_pytorch``
            package ships them as ``DISTS_pytorch/weights.pt``).

    Raises:
        ValueError: unknown ``reduction``.
        featx.errors.WeightsNotFoundError: a ``"DEFAULT"`` file is not on disk (names the keys).

    Example:
        >>> import warnings
        >>> ones = {"alpha": torch.ones(1, 1475, 1, 1), "beta": torch.ones(1, 1475, 1, 1)}
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")  # random backbone: for the example only
        ...     loss = FeatxDISTSLoss(vgg_weights=None, dists_weights=ones, return_pair=True)
        >>> value, style = loss(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32))
        >>> value.shape, style
        (torch.Size([]), None)
    """

    def __init__(
        self,
        *,
        loss_weight: float = 1.0,
        reduction: str = "mean",
        range_norm: bool = False,
        vgg_weights: WeightsSpec = "DEFAULT",
        dists_weights: LearnedSpec = "DEFAULT",
        return_pair: bool = False,
    ) -> None:
        super().__init__()
        self._setup(loss_weight, return_pair)
        input_range = input_options(True, range_norm)
        with options_file_hint("vgg_weights", "dists_weights"):
            self.measure = DISTS(weights=vgg_weights, dists_weights=dists_weights, input_range=input_range, reduction=reduction)


class FeatxTextureLoss(_WeightedImageLoss):
    """A texture loss on VGG features as a BasicSR loss: ``loss_weight * TextureLoss(pred, target)``.

    ``kind`` picks sliced Wasserstein (default), ``moments``, ``contextual`` or ``gram`` statistics
    (:class:`featx.TextureLoss`); the remaining keys of the block are that loss's options
    (``num_projections``, ``seed``, ``band_width``, ``max_positions``, ``criterion``, ...;
    unknown ones are refused with the valid list). Inputs follow BasicSR's ``PerceptualLoss``:
    ``use_input_norm``, ``range_norm``, ``vgg_type``.

    Args:
        layer_weights: ``{layer: weight}``, e.g. ``{"relu1_1": 1.0, "relu2_1": 1.0}``.
        kind: ``"sliced_wasserstein"``, ``"moments"``, ``"contextual"`` or ``"gram"``.
        vgg_type, use_input_norm, range_norm, vgg_weights: as for :class:`FeatxPerceptualLoss`.
        loss_weight, reduction, return_pair: as for :class:`FeatxLPIPSLoss`.
        **options: keyword options of the chosen texture loss.

    Raises:
        ValueError: unknown kind, layer, option or reduction (with the valid choices).
        featx.errors.WeightsNotFoundError: ``vgg_weights="DEFAULT"`` and the file is not on disk.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")  # random weights: for the example only
        ...     loss = FeatxTextureLoss({"relu1_1": 1.0}, kind="moments", vgg_weights=None)
        >>> image = torch.rand(1, 3, 16, 16)
        >>> float(loss(image, image))
        0.0
    """

    def __init__(
        self,
        layer_weights: Mapping[str, float],
        *,
        kind: str = "sliced_wasserstein",
        vgg_type: str = "vgg19",
        use_input_norm: bool = True,
        range_norm: bool = False,
        loss_weight: float = 1.0,
        reduction: str = "mean",
        vgg_weights: WeightsSpec = "DEFAULT",
        return_pair: bool = False,
        **options: Any,
    ) -> None:
        super().__init__()
        self._setup(loss_weight, return_pair)
        input_range = input_options(use_input_norm, range_norm)
        self.use_input_norm, self.range_norm = use_input_norm, range_norm
        with options_file_hint("vgg_weights"):
            self.measure = TextureLoss(
                check_layer_weights(layer_weights), kind=kind, arch=vgg_type, weights=vgg_weights,
                reduction=reduction, input_range=input_range, **options,
            )  # fmt: skip

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """``(x + 1) / 2`` for ``range_norm`` without ``use_input_norm`` (BasicSR's order)."""
        return range_norm_input(images, use_input_norm=self.use_input_norm, range_norm=self.range_norm)
