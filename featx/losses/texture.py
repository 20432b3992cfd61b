"""Texture losses beyond the Gram matrix: sliced Wasserstein, mean/std moments and contextual loss.

Each is a function on feature dicts plus a thin module holding its settings, named
``...OnFeatures`` because it takes feature dicts, not images; for losses on images (with a VGG
backbone inside) use :class:`featx.losses.modules.TextureLoss`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import ClassVar, Literal, Optional, cast, overload

import torch
import torch.nn.functional as F
from torch import nn

from featx._checks import check_int, check_layer_weights, check_number
from featx.losses._features import (
    FeatureDict,
    LossResult,
    autocast_off,
    check_reduction,
    compute_dtype,
    cpu_generator,
    flat_positions,
    layer_loop,
    reduce_batch,
)

__all__ = [
    "ContextualOnFeatures",
    "MomentsOnFeatures",
    "SlicedWassersteinOnFeatures",
    "contextual_loss",
    "moment_loss",
    "sliced_wasserstein_loss",
]


# --------------------------------------------------------------------------------------------
# sliced Wasserstein
# --------------------------------------------------------------------------------------------


@overload
def sliced_wasserstein_loss(
    pred_feats: FeatureDict, target_feats: FeatureDict, layer_weights: Mapping[str, float], *,
    num_projections: Optional[int] = ..., seed: Optional[int] = ..., generator: Optional[torch.Generator] = ...,
    reduction: str = ..., check_finite: bool = ...,
    return_terms: Literal[False] = ...,
) -> torch.Tensor: ...  # fmt: skip
@overload
def sliced_wasserstein_loss(
    pred_feats: FeatureDict, target_feats: FeatureDict, layer_weights: Mapping[str, float], *,
    num_projections: Optional[int] = ..., seed: Optional[int] = ..., generator: Optional[torch.Generator] = ...,
    reduction: str = ..., check_finite: bool = ...,
    return_terms: Literal[True],
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...  # fmt: skip
def sliced_wasserstein_loss(
    pred_feats: FeatureDict,
    target_feats: FeatureDict,
    layer_weights: Mapping[str, float],
    *,
    num_projections: Optional[int] = None,
    seed: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
    reduction: str = "mean",
    check_finite: bool = False,
    return_terms: bool = False,
) -> LossResult:
    r"""Sliced Wasserstein texture loss (Heitz et al., "A Sliced Wasserstein Loss for Neural Texture
    Synthesis", CVPR 2021).

    Each layer's map is a set of :math:`N = HW` feature vectors in :math:`\mathbb{R}^C`. For
    :math:`P` random unit directions :math:`v_k` (Gaussian draws, normalised), project both sets,
    sort the projections and compare them in order:

    .. math:: L_l = \frac{1}{P N} \sum_{k=1}^{P} \sum_{n=1}^{N}
              \big(\mathrm{sort}(v_k^\top \hat F)_n - \mathrm{sort}(v_k^\top F)_n\big)^2

    which is the squared 1-D Wasserstein-2 distance averaged over the slices. Sorting discards the
    positions, so the loss is invariant to any spatial permutation of either map and is 0 for
    identical inputs. When the target has :math:`M \ne N` positions (another image size) its sorted
    projections are resampled to :math:`N` quantiles at levels :math:`(n + 1/2)/N` by linear
    interpolation (``F.interpolate(mode="linear", align_corners=False)``, ends clamped).

    Directions are drawn per layer, in ``layer_weights`` order, on the CPU in float32: from
    ``generator``, from a fresh generator seeded with ``seed`` (the same directions on every call:
    a deterministic loss), or, by default, from torch's global RNG (new directions each call, as
    in the paper; reproducible under ``torch.manual_seed``). fp16/bf16 features are projected in
    float32 with autocast off.

    Args:
        pred_feats: ``{layer: (B, C, H, W)}`` of the prediction.
        target_feats: ``{layer: (B or 1, C, H', W')}``; the spatial size may differ.
        layer_weights: ``{layer: weight}``.
        num_projections: directions per layer :math:`P`; ``None`` uses :math:`C` (as in the paper).
        seed: seed for the directions.
        generator: a CPU ``torch.Generator`` to draw the directions from (not with ``seed``).
        reduction: ``"mean"``/``"sum"`` over the batch of per-sample :math:`L_l`, or ``"none"`` ``(B,)``.
        check_finite: raise if a feature map holds NaN/Inf.
        return_terms: also return ``{layer: weighted term}``.

    Returns:
        The loss, or ``(loss, terms)``.

    Raises:
        ValueError: missing layer, channel mismatch, unknown reduction, bad ``num_projections``.

    Example:
        >>> f = {"relu1_1": torch.rand(1, 4, 8, 8)}
        >>> shuffled = {"relu1_1": f["relu1_1"].flatten(2)[..., torch.randperm(64)].view(1, 4, 8, 8)}
        >>> float(sliced_wasserstein_loss(f, shuffled, {"relu1_1": 1.0}, seed=0)) < 1e-12
        True
    """
    check_reduction(reduction)
    check_int("num_projections", num_projections, allow_none=True)
    gen = cpu_generator(seed, generator)

    def term(layer: str, pred: torch.Tensor, target: Optional[torch.Tensor]) -> torch.Tensor:
        channels = pred.shape[1]
        directions = torch.randn(num_projections or channels, channels, generator=gen)
        directions = directions / torch.linalg.vector_norm(directions, dim=1, keepdim=True)
        with autocast_off(pred.device):
            dtype = compute_dtype(pred, target)  # type: ignore[arg-type]
            directions = directions.to(device=pred.device, dtype=dtype)
            pred_sorted = torch.matmul(directions, flat_positions(pred, dtype)).sort(dim=-1).values
            target_sorted = torch.matmul(directions, flat_positions(target, dtype)).sort(dim=-1).values  # type: ignore[arg-type]
            if target_sorted.shape[-1] != pred_sorted.shape[-1]:
                target_sorted = F.interpolate(
                    target_sorted, size=pred_sorted.shape[-1], mode="linear", align_corners=False
                )
            per_sample = (pred_sorted - target_sorted).pow(2).mean(dim=(1, 2))
        return reduce_batch(per_sample, reduction)

    return layer_loop(
        pred_feats,
        target_feats,
        layer_weights,
        term,
        return_terms=return_terms,
        check_finite_values=check_finite,
        same_size=False,
    )


# --------------------------------------------------------------------------------------------
# moments
# --------------------------------------------------------------------------------------------


@overload
def moment_loss(
    pred_feats: FeatureDict, target_feats: FeatureDict, layer_weights: Mapping[str, float], *,
    eps: float = ..., reduction: str = ..., check_finite: bool = ...,
    return_terms: Literal[False] = ...,
) -> torch.Tensor: ...  # fmt: skip
@overload
def moment_loss(
    pred_feats: FeatureDict, target_feats: FeatureDict, layer_weights: Mapping[str, float], *,
    eps: float = ..., reduction: str = ..., check_finite: bool = ...,
    return_terms: Literal[True],
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...  # fmt: skip
def moment_loss(
    pred_feats: FeatureDict,
    target_feats: FeatureDict,
    layer_weights: Mapping[str, float],
    *,
    eps: float = 1e-5,
    reduction: str = "mean",
    check_finite: bool = False,
    return_terms: bool = False,
) -> LossResult:
    r"""Mean/std moment matching per channel (the AdaIN style statistics, Huang & Belongie, ICCV 2017).

    With :math:`\mu_c` the mean over positions and :math:`\sigma_c = \sqrt{\mathrm{Var}_c + \varepsilon}`
    (population variance over positions; ``eps`` keeps the gradient finite on constant channels),

    .. math:: L_l = \frac1C \sum_c (\hat\mu_c - \mu_c)^2 + \frac1C \sum_c (\hat\sigma_c - \sigma_c)^2 .

    Only statistics over positions enter, so the loss is invariant to spatial permutations and
    works across image sizes; it is 0 for identical inputs.

    Args:
        pred_feats: ``{layer: (B, C, H, W)}``.
        target_feats: ``{layer: (B or 1, C, H', W')}``; the spatial size may differ.
        layer_weights: ``{layer: weight}``.
        eps: added to the variance before the square root.
        reduction: over the batch of per-sample :math:`L_l`; ``"none"`` gives ``(B,)``.
        check_finite: raise if a feature map holds NaN/Inf.
        return_terms: also return ``{layer: weighted term}``.

    Returns:
        The loss, or ``(loss, terms)``.

    Raises:
        ValueError: missing layer, channel mismatch, unknown reduction.

    Example:
        >>> pred = {"relu1_1": torch.zeros(1, 1, 2, 2)}
        >>> target = {"relu1_1": torch.tensor([[[[0.0, 2.0], [0.0, 2.0]]]])}  # mean 1, std 1
        >>> round(float(moment_loss(pred, target, {"relu1_1": 1.0}, eps=0.0)), 6)
        2.0
    """
    check_reduction(reduction)

    def stats(feat: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        flat = flat_positions(feat, dtype)
        mean = flat.mean(dim=2)
        var = (flat - mean.unsqueeze(2)).pow(2).mean(dim=2)
        return mean, torch.sqrt(var + eps)

    def term(layer: str, pred: torch.Tensor, target: Optional[torch.Tensor]) -> torch.Tensor:
        with autocast_off(pred.device):
            dtype = compute_dtype(pred, target)  # type: ignore[arg-type]
            pred_mean, pred_std = stats(pred, dtype)
            target_mean, target_std = stats(target, dtype)  # type: ignore[arg-type]
            per_sample = (pred_mean - target_mean).pow(2).mean(dim=1) + (pred_std - target_std).pow(2).mean(dim=1)
        return reduce_batch(per_sample, reduction)

    return layer_loop(
        pred_feats,
        target_feats,
        layer_weights,
        term,
        return_terms=return_terms,
        check_finite_values=check_finite,
        same_size=False,
    )


# --------------------------------------------------------------------------------------------
# contextual
# --------------------------------------------------------------------------------------------


def _sample_positions(count: int, limit: int, gen: Optional[torch.Generator]) -> Optional[torch.Tensor]:
    if count <= limit:
        return None
    return torch.randperm(count, generator=gen)[:limit]


@overload
def contextual_loss(
    pred_feats: FeatureDict, target_feats: FeatureDict, layer_weights: Mapping[str, float], *,
    band_width: float = ..., eps: float = ..., max_positions: int = ..., seed: Optional[int] = ...,
    generator: Optional[torch.Generator] = ..., reduction: str = ..., check_finite: bool = ...,
    return_terms: Literal[False] = ...,
) -> torch.Tensor: ...  # fmt: skip
@overload
def contextual_loss(
    pred_feats: FeatureDict, target_feats: FeatureDict, layer_weights: Mapping[str, float], *,
    band_width: float = ..., eps: float = ..., max_positions: int = ..., seed: Optional[int] = ...,
    generator: Optional[torch.Generator] = ..., reduction: str = ..., check_finite: bool = ...,
    return_terms: Literal[True],
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...  # fmt: skip
def contextual_loss(
    pred_feats: FeatureDict,
    target_feats: FeatureDict,
    layer_weights: Mapping[str, float],
    *,
    band_width: float = 0.5,
    eps: float = 1e-5,
    max_positions: int = 1024,
    seed: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
    reduction: str = "mean",
    check_finite: bool = False,
    return_terms: bool = False,
) -> LossResult:
    r"""Contextual loss (Mechrez, Talmi & Zelnik-Manor, "The Contextual Loss for Image
    Transformation with Non-Aligned Data", ECCV 2018).

    Feature vectors :math:`x_i` (prediction) and :math:`y_j` (target) are centred by the target's
    mean vector :math:`\mu_y` (per sample, over target positions) and unit-normalised; then, as in
    the paper's definition (sec. 3),

    .. math::
        d_{ij} = 1 - \frac{(x_i - \mu_y)^\top (y_j - \mu_y)}{\lVert x_i - \mu_y\rVert\,\lVert y_j - \mu_y\rVert},\quad
        \tilde d_{ij} = \frac{d_{ij}}{\min_k d_{ik} + \varepsilon},\quad
        w_{ij} = e^{(1 - \tilde d_{ij})/h},\quad
        cx_{ij} = \frac{w_{ij}}{\sum_k w_{ik}},

    .. math:: CX = \frac1M \sum_j \max_i cx_{ij},\qquad L_l = -\log CX .

    Rows (index :math:`i`) are prediction vectors and are normalised over the target vectors
    :math:`j`; :math:`CX` averages, over target vectors, the affinity of their best-matching
    prediction vector (the paper's CX(X, Y)). ``cx`` is computed as a softmax (numerically stable).

    Minimum: :math:`L \ge 0`. For identical inputs whose feature vectors are pairwise distinct,
    :math:`cx_{jj} = 1` up to terms of order :math:`e^{-d/(h\varepsilon)}` and the loss is 0;
    repeated vectors (e.g. flat regions after a ReLU) share their affinity, which leaves a positive
    minimum. The loss ignores positions and accepts different spatial sizes.

    Memory is :math:`B \times N \times M` per layer, so at most ``max_positions`` positions of
    each map are used: a random subset drawn without replacement (from ``generator``, a fresh
    generator seeded with ``seed``, or torch's global RNG). When pred and target have the same
    spatial size the same positions are taken from both.

    Args:
        pred_feats: ``{layer: (B, C, H, W)}``.
        target_feats: ``{layer: (B or 1, C, H', W')}``.
        layer_weights: ``{layer: weight}``.
        band_width: :math:`h > 0`.
        eps: :math:`\varepsilon` of the relative distance (paper: 1e-5).
        max_positions: cap on positions per map.
        seed: seed for the position sample.
        generator: CPU ``torch.Generator`` for the position sample (not with ``seed``).
        reduction: over the batch of per-sample :math:`L_l`; ``"none"`` gives ``(B,)``.
        check_finite: raise if a feature map holds NaN/Inf.
        return_terms: also return ``{layer: weighted term}``.

    Returns:
        The loss, or ``(loss, terms)``.

    Raises:
        ValueError: missing layer, channel mismatch, unknown reduction, ``band_width <= 0``,
            bad ``max_positions``.

    Example:
        >>> f = {"relu1_1": torch.randn(1, 8, 4, 4)}
        >>> abs(float(contextual_loss(f, f, {"relu1_1": 1.0}))) < 1e-6
        True
    """
    check_reduction(reduction)
    check_int("max_positions", max_positions)
    check_number("band_width", band_width, positive=True)
    gen = cpu_generator(seed, generator)

    def unit(v: torch.Tensor) -> torch.Tensor:
        norm: torch.Tensor = torch.linalg.vector_norm(v, dim=1, keepdim=True)
        return v / (norm + 1e-10)

    def term(layer: str, pred: torch.Tensor, target: Optional[torch.Tensor]) -> torch.Tensor:
        target = cast(torch.Tensor, target)  # always given: target_feats is required
        with autocast_off(pred.device):
            dtype = compute_dtype(pred, target)
            x, y = flat_positions(pred, dtype), flat_positions(target, dtype)
            keep_x = _sample_positions(x.shape[2], max_positions, gen)
            if pred.shape[2:] == target.shape[2:]:
                keep_y = keep_x
            else:
                keep_y = _sample_positions(y.shape[2], max_positions, gen)
            if keep_x is not None:
                x = x[:, :, keep_x.to(x.device)]
            if keep_y is not None:
                y = y[:, :, keep_y.to(y.device)]
            mu = y.mean(dim=2, keepdim=True)
            x, y = unit(x - mu), unit(y - mu)
            dist = (1.0 - torch.bmm(x.transpose(1, 2), y)).clamp_min(0.0)  # (B, N, M)
            relative = dist / (dist.min(dim=2, keepdim=True).values + eps)
            cx = torch.softmax((1.0 - relative) / band_width, dim=2)
            similarity = cx.max(dim=1).values.mean(dim=1)  # (B,)
            per_sample = -torch.log(similarity)
        return reduce_batch(per_sample, reduction)

    return layer_loop(
        pred_feats,
        target_feats,
        layer_weights,
        term,
        return_terms=return_terms,
        check_finite_values=check_finite,
        same_size=False,
    )


# --------------------------------------------------------------------------------------------
# thin modules
# --------------------------------------------------------------------------------------------


class _OnFeatures(nn.Module):
    """Common part of the modules below: validated layer weights and a forward on feature dicts."""

    def __init__(self, layer_weights: Mapping[str, float], reduction: str) -> None:
        super().__init__()
        self.layer_weights = check_layer_weights(layer_weights)
        self.reduction = check_reduction(reduction)

    loss_function: ClassVar[Callable[..., LossResult]]

    def _options(self) -> dict[str, object]:
        return {}

    @overload
    def forward(
        self, pred_feats: FeatureDict, target_feats: FeatureDict, *, return_terms: Literal[False] = ...
    ) -> torch.Tensor: ...
    @overload
    def forward(
        self, pred_feats: FeatureDict, target_feats: FeatureDict, *, return_terms: Literal[True]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...
    def forward(self, pred_feats: FeatureDict, target_feats: FeatureDict, *, return_terms: bool = False) -> LossResult:
        """Loss between two feature dicts (see the function of the same name for the formula)."""
        return type(self).loss_function(
            pred_feats,
            target_feats,
            self.layer_weights,
            reduction=self.reduction,
            return_terms=return_terms,
            **self._options(),
        )

    def extra_repr(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self._options().items())
        return f"layer_weights={self.layer_weights}, reduction={self.reduction!r}, {options}"


class SlicedWassersteinOnFeatures(_OnFeatures):
    """Module form of :func:`sliced_wasserstein_loss` on feature dicts.

    Args:
        layer_weights: ``{layer: weight}``.
        num_projections: directions per layer (``None``: the channel count).
        seed: ``None`` draws new directions from torch's global RNG on every call (the paper's
            training setting); an int draws the same directions on every call.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Example:
        >>> loss = SlicedWassersteinOnFeatures({"relu1_1": 1.0}, seed=0)
        >>> f = {"relu1_1": torch.rand(2, 4, 8, 8)}
        >>> float(loss(f, f))
        0.0
    """

    loss_function = staticmethod(sliced_wasserstein_loss)

    def __init__(
        self,
        layer_weights: Mapping[str, float],
        *,
        num_projections: Optional[int] = None,
        seed: Optional[int] = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__(layer_weights, reduction)
        check_int("num_projections", num_projections, allow_none=True)
        cpu_generator(seed, None)
        self.num_projections, self.seed = num_projections, seed

    def _options(self) -> dict[str, object]:
        return {"num_projections": self.num_projections, "seed": self.seed}


class MomentsOnFeatures(_OnFeatures):
    """Module form of :func:`moment_loss` on feature dicts.

    Example:
        >>> loss = MomentsOnFeatures({"relu1_1": 1.0})
        >>> f = {"relu1_1": torch.rand(2, 4, 8, 8)}
        >>> float(loss(f, f))
        0.0
    """

    loss_function = staticmethod(moment_loss)

    def __init__(self, layer_weights: Mapping[str, float], *, eps: float = 1e-5, reduction: str = "mean") -> None:
        super().__init__(layer_weights, reduction)
        self.eps = eps

    def _options(self) -> dict[str, object]:
        return {"eps": self.eps}


class ContextualOnFeatures(_OnFeatures):
    """Module form of :func:`contextual_loss` on feature dicts.

    Example:
        >>> loss = ContextualOnFeatures({"relu1_1": 1.0}, band_width=0.5, max_positions=256, seed=0)
        >>> f = {"relu1_1": torch.randn(1, 8, 4, 4)}
        >>> abs(float(loss(f, f))) < 1e-6
        True
    """

    loss_function = staticmethod(contextual_loss)

    def __init__(
        self,
        layer_weights: Mapping[str, float],
        *,
        band_width: float = 0.5,
        eps: float = 1e-5,
        max_positions: int = 1024,
        seed: Optional[int] = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__(layer_weights, reduction)
        check_int("max_positions", max_positions)
        check_number("band_width", band_width, positive=True)
        cpu_generator(seed, None)
        self.band_width, self.eps, self.max_positions, self.seed = float(band_width), eps, max_positions, seed

    def _options(self) -> dict[str, object]:
        return {"band_width": self.band_width, "eps": self.eps, "max_positions": self.max_positions, "seed": self.seed}
