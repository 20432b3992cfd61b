r"""DISTS (Ding et al., "Image Quality Assessment: Unifying Structure and Texture Similarity",
TPAMI 2020) as a frozen metric and training loss.

With the input :math:`x` (in ``[0, 1]``) as level 0 and the VGG16 maps ``relu1_2``, ``relu2_2``,
``relu3_3``, ``relu4_3``, ``relu5_3`` (L2 pooling in place of max pooling) as levels 1-5, each
channel :math:`i` of level :math:`k` compares global statistics of prediction and target:

.. math::

    l = \frac{2 \mu_x \mu_y + c_1}{\mu_x^2 + \mu_y^2 + c_1}, \qquad
    s = \frac{2 \sigma_{xy} + c_2}{\sigma_x^2 + \sigma_y^2 + c_2}, \qquad c_1 = c_2 = 10^{-6},

    D(x, y) = 1 - \sum_{k, i} (\alpha_{ki} l_{ki} + \beta_{ki} s_{ki}) / \textstyle\sum (\alpha + \beta),

with population variances and covariance over positions and the learned weights
:math:`\alpha, \beta` (1475 each) of the DISTS project.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import torch
from torch import nn

from featx._checks import InputRange, check_input_range
from featx.backbones.base import IMAGENET_MEAN, IMAGENET_STD
from featx.backbones.vgg.features import VGGFeatures
from featx.errors import FeatxValueError
from featx.losses._features import autocast_off, check_reduction, reduce_batch

if TYPE_CHECKING:
    from featx.weights import LoadedWeights, WeightsSpec
    from featx.weights.learned import LearnedSpec

__all__ = ["DISTS", "DISTS_CHANNELS", "DISTS_TAPS", "load_dists_weights"]

DISTS_TAPS: tuple[str, ...] = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")
"""The VGG16 levels DISTS compares (DISTS_pytorch ``forward_once``), after the input itself."""

DISTS_CHANNELS: tuple[int, ...] = (3, 64, 128, 256, 512, 512)
"""Channels of levels 0-5: the weights hold ``sum = 1475`` values each for alpha and beta."""

_C1 = _C2 = 1e-6


def load_dists_weights(
    dists_weights: LearnedSpec = "DEFAULT", *, verify: Optional[str] = None
) -> tuple[torch.Tensor, torch.Tensor, LoadedWeights]:
    """The learned ``alpha`` and ``beta`` of DISTS, each ``(1475,)`` in float32, and their provenance.

    Args:
        dists_weights: ``"DEFAULT"`` (:attr:`featx.weights.MetricWeights.DISTS_VGG16`, the DISTS
            project's ``weights.pt``, found in :func:`featx.weights.search_dirs` and checked
            against its sha256 at every load), a path to a file with ``alpha`` and ``beta`` of
            shape ``(1, 1475, 1, 1)``, or such a mapping.
        verify: what a mismatched ``DISTS_VGG16`` file does (``"warn"``/``"error"``), as in
            :func:`featx.weights.load_weights`.

    Raises:
        WeightsNotFoundError: the file is not on disk (the message names ``featx weights download DISTS_VGG16``).
        WeightsLoadError: missing keys, wrong shapes, or non-finite values.

    Example:
        >>> ones = {"alpha": torch.ones(1, 1475, 1, 1), "beta": torch.ones(1, 1475, 1, 1)}
        >>> alpha, beta, loaded = load_dists_weights(ones)
        >>> alpha.shape, loaded.weights_id
        (torch.Size([1475]), 'state_dict')
    """
    from featx.weights import MetricWeights
    from featx.weights.learned import load_learned

    shape = (1, sum(DISTS_CHANNELS), 1, 1)
    loaded = load_learned(
        dists_weights,
        default=MetricWeights.DISTS_VGG16,
        expected={"alpha": shape, "beta": shape},
        verify=verify,
        argument="dists_weights",
    )
    alpha, beta = (loaded.state_dict[key].detach().reshape(-1).float() for key in ("alpha", "beta"))
    return alpha, beta, loaded


class DISTS(nn.Module):
    """DISTS between images, per sample (lower is more similar; 0 for identical images).

    A frozen module: no parameter requires grad, the backbone stays in eval mode, and nothing is
    added to a parent's ``state_dict``. Gradients reach the prediction, so it also works as a
    training loss; the target branch runs under ``torch.no_grad()``. Statistics are computed in
    float32 (float64 for float64 inputs) with autocast off.

    Args:
        weights: VGG16 backbone weights (``"DEFAULT"``: torchvision's ImageNet VGG16 file, from the
            local cache), see :class:`~featx.backbones.vgg.features.VGGFeatures`; ``None`` for random weights.
        dists_weights: the learned alpha/beta (see :func:`load_dists_weights`).
        input_range: value range of the images (default ``(0, 1)``, DISTS' own).
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (one value per sample).
        verify_weights: what a known file with the wrong sha256 does (``"warn"``/``"error"``;
            ``None``: the ``FEATX_REQUIRE_VERIFIED`` environment variable decides).

    Attributes:
        dists_weights_id, dists_weights_sha256, dists_weights_verified: the alpha/beta provenance
            (the backbone's is on :attr:`extractor`).

    Shape:
        ``pred``, ``target``: ``(B, 3, H, W)`` (a target batch of 1 broadcasts); output ``()`` or ``(B,)``.

    Example:
        >>> import warnings
        >>> ones = {"alpha": torch.ones(1, 1475, 1, 1), "beta": torch.ones(1, 1475, 1, 1)}
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")  # random backbone: for the example only
        ...     metric = DISTS(weights=None, dists_weights=ones, reduction="none")
        >>> x = torch.rand(2, 3, 64, 64)
        >>> metric(x, x).abs().max() < 1e-6
        tensor(True)
    """

    alpha: torch.Tensor
    beta: torch.Tensor

    def __init__(
        self,
        *,
        weights: WeightsSpec = "DEFAULT",
        dists_weights: LearnedSpec = "DEFAULT",
        input_range: InputRange = (0.0, 1.0),
        reduction: str = "mean",
        verify_weights: Optional[str] = None,
    ) -> None:
        super().__init__()
        self.reduction = check_reduction(reduction)
        self.input_range = check_input_range(input_range)
        from featx.weights import gather_missing

        self.extractor, (alpha, beta, loaded) = gather_missing(  # every missing file in one error
            lambda: VGGFeatures(
                "vgg16", DISTS_TAPS, weights=weights, input_range=input_range, pooling="l2", verify_weights=verify_weights
            ),
            lambda: load_dists_weights(dists_weights, verify=verify_weights),
        )
        self.dists_weights_id, self.dists_weights_sha256 = loaded.weights_id, loaded.sha256
        self.dists_weights_verified, self.dists_weights_verification = loaded.verified, loaded.verification
        self.register_buffer("alpha", alpha, persistent=False)  # normalised in forward, in its dtype
        self.register_buffer("beta", beta, persistent=False)

    def _levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Level 0 (the image in ``[0, 1]``) and the five VGG16 levels."""
        feats = self.extractor(x)
        if isinstance(self.input_range, str):  # ImageNet-normalised inputs: undo the normalisation
            mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
            std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
            image = x * std + mean
        else:
            lo, hi = self.input_range
            image = (x - lo) / (hi - lo)
        return [image, *(feats[name] for name in DISTS_TAPS)]

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """DISTS of ``pred`` against ``target`` (see the module docstring for the formula)."""
        pred_levels = self._levels(pred)
        with torch.no_grad():
            target_levels = self._levels(target)
        dtype = torch.float64 if pred.dtype == torch.float64 else torch.float32
        score = torch.zeros((), dtype=dtype, device=pred.device)
        with autocast_off(pred.device):
            offsets = torch.cumsum(torch.tensor((0, *DISTS_CHANNELS)), 0).tolist()
            total = self.alpha.to(dtype).sum() + self.beta.to(dtype).sum()
            for level, (a, b) in enumerate(zip(pred_levels, target_levels, strict=True)):
                a, b = a.to(dtype).flatten(2), b.to(dtype).flatten(2)
                if b.shape[0] == 1 and a.shape[0] > 1:
                    b = b.expand(a.shape[0], -1, -1)
                if a.shape != b.shape:
                    shapes = f"{tuple(a.shape)} vs {tuple(b.shape)}"
                    raise FeatxValueError(f"pred and target differ in shape at DISTS level {level}: {shapes}")
                mu_a, mu_b = a.mean(dim=2), b.mean(dim=2)
                var_a = (a - mu_a[..., None]).pow(2).mean(dim=2)
                var_b = (b - mu_b[..., None]).pow(2).mean(dim=2)
                cov = (a * b).mean(dim=2) - mu_a * mu_b
                structure = (2 * mu_a * mu_b + _C1) / (mu_a**2 + mu_b**2 + _C1)
                texture = (2 * cov + _C2) / (var_a + var_b + _C2)
                weights = slice(offsets[level], offsets[level + 1])
                alpha, beta = self.alpha[weights].to(dtype) / total, self.beta[weights].to(dtype) / total
                score = score + (structure * alpha).sum(dim=1) + (texture * beta).sum(dim=1)
        return reduce_batch(1 - score, self.reduction)
