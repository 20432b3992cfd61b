"""Loss functions on feature dicts: Gram matrices, feature distances, perceptual and style losses.

Every function here takes feature maps (``{layer: (B, C, H, W)}``) and holds no network, so the
same features can feed several terms; :mod:`featx.losses.modules` wraps them in modules that own a
backbone. Options are keyword-only, ``reduction`` means the same everywhere (see
:func:`feature_distance`) and ``return_terms=True`` adds the per-layer terms.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Literal, Optional, cast, overload

import torch

from featx._checks import check_choice
from featx.errors import FeatxTypeError, FeatxValueError
from featx.losses._features import (
    REDUCTIONS,
    FeatureDict,
    LossResult,
    autocast_off,
    check_reduction,
    compute_dtype,
    layer_loop,
    lookup,
    match_batch,
    per_sample_l1,
    reduce_batch,
)

__all__ = [
    "CRITERIA",
    "GRAM_NORMALIZATIONS",
    "REDUCTIONS",
    "feature_distance",
    "gram_matrices",
    "gram_matrix",
    "perceptual_loss",
    "style_loss",
]

CRITERIA: tuple[str, ...] = ("l1", "l2", "mse", "charbonnier", "fro")
"""Feature distances: ``l2`` and ``mse`` are the same (mean squared error)."""

GRAM_NORMALIZATIONS: tuple[Optional[str], ...] = ("chw", "hw", None)
"""Gram normalisations: divide ``F F^T`` by ``C*H*W`` (TTSR, BasicSR), by ``H*W``, or not at all."""


def gram_matrix(feat: torch.Tensor, *, normalize: Optional[str] = "chw") -> torch.Tensor:
    r"""Gram matrix of each sample's feature map, computed in float32 so low precision cannot overflow.

    With :math:`F \in \mathbb{R}^{C \times HW}` the flattened map of one sample,

    .. math:: G = \frac{F F^\top}{C H W} \;(\texttt{"chw"}),\qquad
              \frac{F F^\top}{H W} \;(\texttt{"hw"}),\qquad F F^\top \;(\texttt{None}).

    ``"chw"`` is the TTSR/BasicSR convention (``_gram_mat`` in BasicSR's PerceptualLoss); piq's
    StyleLoss uses ``None``. Autocast is switched off inside, features are cast to float32 and
    multiplied by :math:`1/\sqrt{HW}` *before* the product, so fp16/bf16 features with activations in
    the thousands give a finite Gram (a plain fp16 ``F @ F.T`` overflows at 65504).

    Args:
        feat: feature map.
        normalize: ``"chw"`` (default), ``"hw"`` or ``None``.

    Returns:
        The Gram matrices in float32 (float64 if ``feat`` is float64).

    Raises:
        TypeError: ``feat`` is not a floating point tensor.
        ValueError: ``feat`` is not 4-D, has no channels or positions, or unknown ``normalize``.

    Shape:
        ``(B, C, H, W) -> (B, C, C)``.

    Example:
        >>> f = torch.ones(1, 2, 3, 3)
        >>> gram_matrix(f)  # every entry: 9 / (2 * 3 * 3)
        tensor([[[0.5000, 0.5000],
                 [0.5000, 0.5000]]])
        >>> gram_matrix(f.half() * 1000, normalize="hw").dtype  # 1e6 per entry: finite in float32
        torch.float32
    """
    if not isinstance(feat, torch.Tensor) or not feat.is_floating_point():
        raise FeatxTypeError(f"feat must be a floating point tensor (B, C, H, W), got {type(feat).__name__}")
    if feat.ndim != 4:
        raise FeatxValueError(f"feat must be 4-D (B, C, H, W), got shape {tuple(feat.shape)}")
    check_choice("normalize", normalize, GRAM_NORMALIZATIONS)
    batch, channels, height, width = feat.shape
    positions = height * width
    if positions == 0 or channels == 0:
        raise FeatxValueError(
            f"feat of shape {tuple(feat.shape)} has no channels or no positions; a Gram matrix needs C, H, W >= 1"
        )
    with autocast_off(feat.device):
        flat = feat.reshape(batch, channels, positions).to(compute_dtype(feat))
        if normalize is None:
            return torch.bmm(flat, flat.transpose(1, 2))
        flat = flat * (1.0 / math.sqrt(positions))
        gram = torch.bmm(flat, flat.transpose(1, 2))
        return gram / channels if normalize == "chw" else gram


def gram_matrices(
    feats: FeatureDict, *, layers: Optional[Iterable[str]] = None, normalize: Optional[str] = "chw"
) -> dict[str, torch.Tensor]:
    """Gram matrices of several layers, e.g. to cache a fixed style target for :func:`style_loss`.

    Args:
        feats: ``{layer: (B, C, H, W)}``.
        layers: names of the layers to use (a ``layer_weights`` mapping works: its keys); all if ``None``.
        normalize: see :func:`gram_matrix`.

    Returns:
        ``{layer: (B, C, C)}`` in float32 (float64 for float64 features).

    Raises:
        ValueError: a requested layer is missing (the message lists the available ones).

    Example:
        >>> grams = gram_matrices({"relu1_1": torch.rand(1, 4, 8, 8)})
        >>> grams["relu1_1"].shape
        torch.Size([1, 4, 4])
    """
    names = list(feats) if layers is None else list(layers)
    return {name: gram_matrix(lookup(feats, name, "input"), normalize=normalize) for name in names}


def feature_distance(
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    criterion: str = "l1",
    reduction: str = "mean",
    eps: float = 1e-3,
) -> torch.Tensor:
    r"""Distance between two feature tensors, reduced over the batch.

    With :math:`d = a - b` and :math:`N` the number of elements per sample, the per-sample value
    :math:`v_b` (what ``reduction="none"`` returns, shape ``(B,)``) is

    ============== ========================================================
    ``l1``          :math:`\frac1N \sum |d|`
    ``l2``/``mse``  :math:`\frac1N \sum d^2` (the same criterion under two names)
    ``charbonnier`` :math:`\frac1N \sum \sqrt{d^2 + \varepsilon^2}` (LapSRN form; minimum
                    :math:`\varepsilon` at :math:`d = 0`, gradient 0 there)
    ``fro``         :math:`\lVert d \rVert_F` of the sample (a norm, not a mean)
    ============== ========================================================

    The reductions are the same for every criterion and every featx loss:
    ``"mean"`` is :math:`\frac1B \sum_b v_b` and ``"sum"`` is :math:`\sum_b v_b`. For
    ``l1``/``mse``/``charbonnier``, ``"mean"`` equals the mean over all elements
    (``torch.nn.functional.l1_loss``/``mse_loss``); torch's ``reduction="sum"`` over all elements
    is ``N`` times featx's ``"sum"``.

    Charbonnier ``eps`` convention: ``eps`` is squared inside the root. BasicSR's
    ``CharbonnierLoss(eps=e)`` adds ``e`` unsquared, so it equals ``eps=sqrt(e)`` here
    (its default ``1e-12`` is ``eps=1e-6``).

    Inputs in float16/bfloat16 (e.g. from a backbone under autocast) are cast to float32 first and
    autocast is disabled inside, so squares of large activations cannot overflow; float32 and
    float64 inputs are computed in their own dtype.

    Args:
        a: prediction features.
        b: target features, same shape as ``a`` (a batch of 1 broadcasts).
        criterion: one of :data:`CRITERIA`.
        reduction: one of :data:`REDUCTIONS`.
        eps: Charbonnier constant (ignored by the other criteria).

    Returns:
        A scalar, or shape ``(B,)`` with ``reduction="none"``.

    Raises:
        ValueError: unknown criterion or reduction (lists the valid ones), or shapes that differ.

    Shape:
        ``a``: ``(B, ...)``; ``b``: ``(B, ...)`` or ``(1, ...)``.

    Example:
        >>> a, b = torch.zeros(2, 1, 2, 2), torch.ones(2, 1, 2, 2)
        >>> feature_distance(a, b, criterion="mse", reduction="none")
        tensor([1., 1.])
        >>> feature_distance(a, b, criterion="fro", reduction="none")  # sqrt(4) per sample
        tensor([2., 2.])
        >>> feature_distance(a, b, criterion="l1", reduction="sum")  # sum of the per-sample means
        tensor(2.)
    """
    check_choice("criterion", criterion, CRITERIA)
    check_reduction(reduction)
    for name, value in (("a", a), ("b", b)):
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            raise FeatxTypeError(f"{name} must be a floating point tensor, got {type(value).__name__}")
    if a.ndim < 1 or a.numel() == 0:
        raise FeatxValueError(f"a must have a batch dimension and at least one element, got shape {tuple(a.shape)}")
    b = match_batch(a, b, "input", same_size=True) if a.shape != b.shape else b
    with autocast_off(a.device):
        dtype = compute_dtype(a, b)
        if criterion == "l1":
            return reduce_batch(per_sample_l1(a.to(dtype), b.to(dtype)), reduction)
        diff = (a.to(dtype) - b.to(dtype)).reshape(a.shape[0], -1)
        if criterion == "fro":
            per_sample = torch.linalg.vector_norm(diff, dim=1)
        elif criterion == "charbonnier":
            per_sample = torch.sqrt(diff * diff + eps * eps).mean(dim=1)
        else:
            per_sample = (diff * diff).mean(dim=1)
        return reduce_batch(per_sample, reduction)


def _unit_channels(feat: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Divide each position's feature vector by its L2 norm over channels (LPIPS, piq: ``x / (|x| + eps)``)."""
    norm: torch.Tensor = torch.linalg.vector_norm(feat, dim=1, keepdim=True)
    return feat / (norm + eps)


@overload
def perceptual_loss(
    pred_feats: FeatureDict, target_feats: FeatureDict, layer_weights: Mapping[str, float], *,
    criterion: str = ..., reduction: str = ..., normalize_channels: bool = ..., eps: float = ...,
    check_finite: bool = ..., return_terms: Literal[False] = ...,
) -> torch.Tensor: ...  # fmt: skip
@overload
def perceptual_loss(
    pred_feats: FeatureDict, target_feats: FeatureDict, layer_weights: Mapping[str, float], *,
    criterion: str = ..., reduction: str = ..., normalize_channels: bool = ..., eps: float = ...,
    check_finite: bool = ..., return_terms: Literal[True],
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...  # fmt: skip
def perceptual_loss(
    pred_feats: FeatureDict,
    target_feats: FeatureDict,
    layer_weights: Mapping[str, float],
    *,
    criterion: str = "l1",
    reduction: str = "mean",
    normalize_channels: bool = False,
    eps: float = 1e-3,
    check_finite: bool = False,
    return_terms: bool = False,
) -> LossResult:
    r"""Weighted sum of feature distances over layers (content / perceptual loss).

    .. math:: L = \sum_{l} w_l \, D(\phi_l(\hat y), \phi_l(y))

    with :math:`D` the :func:`feature_distance` of ``criterion`` under ``reduction``. With
    ``normalize_channels`` each feature vector is first divided by its L2 norm over channels plus
    1e-10 (LPIPS' ``normalize_tensor``, piq's ``normalize_features``).

    Args:
        pred_feats: ``{layer: (B, C, H, W)}`` of the prediction.
        target_feats: the same layers for the target (a batch of 1 broadcasts).
        layer_weights: ``{layer: weight}``; only these layers are used.
        criterion: one of :data:`CRITERIA`.
        reduction: one of :data:`REDUCTIONS`.
        normalize_channels: unit-normalise feature vectors across channels first.
        eps: Charbonnier constant.
        check_finite: raise if a feature map holds NaN/Inf (one host sync per layer).
        return_terms: also return ``{layer: weighted term}``; the terms add up to the total.

    Returns:
        The loss (scalar, or ``(B,)`` with ``reduction="none"``), or ``(loss, terms)``.

    Raises:
        TypeError: ``layer_weights`` is not a mapping of names to finite numbers.
        ValueError: a layer is missing from a dict (lists the available ones), shapes differ
            (shows both), unknown criterion/reduction, or non-finite features with ``check_finite``.

    Example:
        >>> pred = {"relu1_1": torch.ones(1, 2, 4, 4), "relu2_1": torch.ones(1, 3, 2, 2)}
        >>> target = {"relu1_1": torch.zeros(1, 2, 4, 4), "relu2_1": torch.zeros(1, 3, 2, 2)}
        >>> loss, terms = perceptual_loss(pred, target, {"relu1_1": 0.5, "relu2_1": 1.0}, return_terms=True)
        >>> loss, terms["relu1_1"]
        (tensor(1.5000), tensor(0.5000))
    """
    check_choice("criterion", criterion, CRITERIA)
    check_reduction(reduction)

    def term(layer: str, pred: torch.Tensor, target: Optional[torch.Tensor]) -> torch.Tensor:
        target = cast(torch.Tensor, target)  # perceptual_loss always has target features
        if normalize_channels:
            with autocast_off(pred.device):
                dtype = compute_dtype(pred, target)
                pred, target = _unit_channels(pred.to(dtype)), _unit_channels(target.to(dtype))
        return feature_distance(pred, target, criterion=criterion, reduction=reduction, eps=eps)

    return layer_loop(
        pred_feats, target_feats, layer_weights, term, return_terms=return_terms, check_finite_values=check_finite
    )


@overload
def style_loss(
    pred_feats: FeatureDict, target_feats: Optional[FeatureDict], layer_weights: Mapping[str, float], *,
    criterion: str = ..., normalize: Optional[str] = ..., reduction: str = ..., eps: float = ...,
    target_grams: Optional[FeatureDict] = ..., check_finite: bool = ..., return_terms: Literal[False] = ...,
) -> torch.Tensor: ...  # fmt: skip
@overload
def style_loss(
    pred_feats: FeatureDict, target_feats: Optional[FeatureDict], layer_weights: Mapping[str, float], *,
    criterion: str = ..., normalize: Optional[str] = ..., reduction: str = ..., eps: float = ...,
    target_grams: Optional[FeatureDict] = ..., check_finite: bool = ..., return_terms: Literal[True],
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...  # fmt: skip
def style_loss(
    pred_feats: FeatureDict,
    target_feats: Optional[FeatureDict],
    layer_weights: Mapping[str, float],
    *,
    criterion: str = "mse",
    normalize: Optional[str] = "chw",
    reduction: str = "mean",
    eps: float = 1e-3,
    target_grams: Optional[FeatureDict] = None,
    check_finite: bool = False,
    return_terms: bool = False,
) -> LossResult:
    r"""Weighted sum of distances between Gram matrices (style loss, Gatys et al. 2016).

    .. math:: L = \sum_{l} w_l \, D(G(\phi_l(\hat y)), G(\phi_l(y)))

    with :math:`G` the :func:`gram_matrix` under ``normalize`` and :math:`D` the
    :func:`feature_distance` of ``criterion`` applied to the ``(B, C, C)`` matrices (so ``mse`` is
    the mean over the :math:`C^2` entries, ``fro`` the per-sample Frobenius norm). The default
    (``mse``, ``"chw"``) is BasicSR's style term with an MSE criterion.

    A fixed style target can be cached: compute ``gram_matrices(target_feats, layers=layer_weights)`` once
    and pass it as ``target_grams`` (with ``target_feats=None``); a batch of 1 broadcasts. Pred and
    target maps may have different spatial sizes (Grams are ``C x C``).

    Args:
        pred_feats: ``{layer: (B, C, H, W)}`` of the prediction.
        target_feats: the target's features, or ``None`` when ``target_grams`` is given.
        layer_weights: ``{layer: weight}``.
        criterion: one of :data:`CRITERIA`.
        normalize: ``"chw"``, ``"hw"`` or ``None`` (see :func:`gram_matrix`).
        reduction: one of :data:`REDUCTIONS`.
        eps: Charbonnier constant.
        target_grams: precomputed ``{layer: (B or 1, C, C)}`` target Gram matrices (same ``normalize``).
        check_finite: raise if a feature map holds NaN/Inf.
        return_terms: also return ``{layer: weighted term}``.

    Returns:
        The loss, or ``(loss, terms)``.

    Raises:
        ValueError: neither or both of ``target_feats``/``target_grams`` given, a missing layer,
            channel/shape mismatch, unknown names, or non-finite features with ``check_finite``.

    Example:
        >>> pred = {"relu1_1": torch.ones(2, 2, 4, 4)}
        >>> style_loss(pred, {"relu1_1": torch.zeros(1, 2, 8, 8)}, {"relu1_1": 1.0})  # (16/32)^2
        tensor(0.2500)
        >>> grams = gram_matrices({"relu1_1": torch.zeros(1, 2, 8, 8)})
        >>> style_loss(pred, None, {"relu1_1": 1.0}, target_grams=grams)
        tensor(0.2500)
    """
    check_choice("criterion", criterion, CRITERIA)
    check_reduction(reduction)
    check_choice("normalize", normalize, GRAM_NORMALIZATIONS)
    if (target_feats is None) == (target_grams is None):
        given = "both" if target_grams is not None else "neither"
        raise FeatxValueError(f"style_loss needs exactly one of target_feats or target_grams, got {given}")

    def term(layer: str, pred: torch.Tensor, target: Optional[torch.Tensor]) -> torch.Tensor:
        pred_gram = gram_matrix(pred, normalize=normalize)
        if target is not None:
            target_gram = gram_matrix(target, normalize=normalize)
        else:
            target_gram = lookup(cast(FeatureDict, target_grams), layer, "target Gram")
            if target_gram.ndim != 3:
                raise FeatxValueError(f"target Gram {layer!r} must be (B, C, C), got shape {tuple(target_gram.shape)}")
            target_gram = match_batch(pred_gram, target_gram, layer, same_size=True)
        return feature_distance(pred_gram, target_gram, criterion=criterion, reduction=reduction, eps=eps)

    return layer_loop(
        pred_feats,
        target_feats,
        layer_weights,
        term,
        return_terms=return_terms,
        check_finite_values=check_finite,
        same_size=False,
    )
