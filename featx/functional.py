"""Loss functions on feature dicts: Gram matrices, feature distances, perceptual and style losses.

Every function here takes feature maps (``{layer: (B, C, H, W)}``) and holds no network, so the
same features can feed several terms; :mod:`featx.losses` wraps them in modules that own a backbone.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Optional, Union, cast

import torch
import torch.nn.functional as F

from featx.layers import closest

__all__ = [
    "CRITERIA",
    "GRAM_NORMALIZATIONS",
    "REDUCTIONS",
    "TPL_CRITERIA",
    "feature_distance",
    "gram_matrices",
    "gram_matrix",
    "perceptual_loss",
    "style_loss",
    "transferal_perceptual_loss",
]

CRITERIA: tuple[str, ...] = ("l1", "l2", "mse", "charbonnier", "fro")
"""Feature distances: ``l2`` and ``mse`` are the same (mean squared error)."""

REDUCTIONS: tuple[str, ...] = ("mean", "sum", "none")
"""Batch reductions; ``"none"`` returns one value per sample, shape ``(B,)``."""

TPL_CRITERIA: tuple[str, ...] = ("l1", "l2", "mse", "gram")
"""Transferal perceptual loss criteria: ``l1``/``l2`` on the maps (TTSR's code), ``gram`` (Gram difference)."""

GRAM_NORMALIZATIONS: tuple[Optional[str], ...] = ("chw", "hw", None)
"""Gram normalisations: divide ``F F^T`` by ``C*H*W`` (TTSR, BasicSR), by ``H*W``, or not at all."""

_HALF = (torch.float16, torch.bfloat16)

FeatureDict = Mapping[str, torch.Tensor]
LossResult = Union[torch.Tensor, tuple[torch.Tensor, dict[str, torch.Tensor]]]


# --------------------------------------------------------------------------------------------
# validation helpers (shared with featx.texture)
# --------------------------------------------------------------------------------------------


def _check_name(kind: str, value: object, choices: tuple) -> None:
    if value not in choices:
        hint = closest(value, [c for c in choices if isinstance(c, str)]) if isinstance(value, str) else ""
        raise ValueError(f"unknown {kind} {value!r}.{hint} Valid choices: {', '.join(map(repr, choices))}")


def _check_layer_weights(layer_weights: object) -> dict[str, float]:
    if not isinstance(layer_weights, Mapping):
        raise TypeError(
            "layer_weights must be a mapping {layer: weight} such as {'conv5_4': 1.0}, "
            f"got {type(layer_weights).__name__}"
        )
    if not layer_weights:
        raise ValueError("layer_weights must name at least one layer, got an empty mapping")
    checked: dict[str, float] = {}
    for name, weight in layer_weights.items():
        if not isinstance(name, str):
            raise TypeError(f"layer_weights keys must be layer names (str), got {name!r}")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
            raise TypeError(f"layer_weights[{name!r}] must be a finite number, got {weight!r}")
        checked[name] = float(weight)
    return checked


def _lookup(feats: object, layer: str, role: str) -> torch.Tensor:
    if not isinstance(feats, Mapping):
        raise TypeError(f"{role} features must be a dict {{layer: tensor}}, got {type(feats).__name__}")
    if layer not in feats:
        available = list(feats)
        raise ValueError(
            f"layer {layer!r} is missing from the {role} features.{closest(layer, available)} "
            f"Available layers: {', '.join(available) or '(none)'}"
        )
    value = feats[layer]
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        raise TypeError(f"{role} feature {layer!r} must be a floating point tensor, got {type(value).__name__}")
    return value


def _check_4d(value: torch.Tensor, layer: str, role: str) -> None:
    if value.ndim != 4:
        raise ValueError(f"{role} feature {layer!r} must be 4-D (B, C, H, W), got shape {tuple(value.shape)}")
    if value.numel() == 0:
        raise ValueError(
            f"{role} feature {layer!r} is empty (shape {tuple(value.shape)}): a loss needs at least one "
            "sample with at least one channel and position"
        )


def _check_finite(value: torch.Tensor, layer: str, role: str) -> None:
    if not bool(torch.isfinite(value).all()):
        raise ValueError(f"{role} feature {layer!r} contains NaN or Inf values (check_finite=True)")


def _match_batch(pred: torch.Tensor, target: torch.Tensor, layer: str, *, same_size: bool) -> torch.Tensor:
    """Check shapes; a target batch of 1 broadcasts over the pred batch. Returns the (expanded) target."""
    p, t = tuple(pred.shape), tuple(target.shape)
    ok_batch = t[0] in (p[0], 1)
    ok_rest = t[1:] == p[1:] if same_size else t[1] == p[1]
    if not (ok_batch and ok_rest and len(p) == len(t)):
        need = "the same shape" if same_size else "the same channels"
        raise ValueError(
            f"layer {layer!r}: pred shape {p} and target shape {t} differ; they need {need} "
            "(a target batch of 1 broadcasts)"
        )
    if t[0] != p[0]:
        target = target.expand(p[0], *t[1:])
    return target


def _compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float64 stays float64, float32 stays float32, fp16/bf16 accumulate in float32."""
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return torch.float32 if dtype in _HALF else dtype


def _autocast_off(device: torch.device) -> contextlib.AbstractContextManager:
    """Disable autocast for ``device`` if it is on (``torch.autocast(..., enabled=False)``)."""
    try:
        enabled = torch.is_autocast_enabled(device.type)
    except (RuntimeError, TypeError):
        enabled = False
    return torch.autocast(device_type=device.type, enabled=False) if enabled else contextlib.nullcontext()


class _PerSampleL1(torch.autograd.Function):
    """Per-sample mean of ``|a - b|`` that saves only the int8 sign of ``a - b`` for backward.

    ``(a - b).abs().mean(...)`` keeps the whole float difference alive until the backward pass;
    the gradient only needs its sign (0 where ``a == b``, as for ``abs``), a quarter of the bytes.
    """

    @staticmethod
    def forward(ctx: Any, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        diff = a - b
        per_sample = diff.abs().flatten(1).mean(dim=1)
        ctx.save_for_backward(diff.sign_().to(torch.int8))  # in place: no second float temporary
        ctx.shapes = (a.shape, b.shape)
        return per_sample

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        (sign,) = ctx.saved_tensors
        a_shape, b_shape = ctx.shapes
        count = sign[0].numel()
        grad_a = sign.to(grad.dtype) * (grad / count).view(-1, *([1] * (sign.ndim - 1)))
        grad_b = -grad_a.sum_to_size(b_shape) if ctx.needs_input_grad[1] else None
        return (grad_a if ctx.needs_input_grad[0] else None), grad_b


def _reduce(per_sample: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return per_sample
    return per_sample.mean() if reduction == "mean" else per_sample.sum()


def _layer_loop(
    pred_feats: FeatureDict,
    target_feats: Optional[FeatureDict],
    layer_weights: Mapping[str, float],
    term: Callable[[str, torch.Tensor, Optional[torch.Tensor]], torch.Tensor],
    *,
    return_terms: bool,
    check_finite: bool,
    same_size: bool = True,
) -> LossResult:
    """Validate every layer, call ``term(layer, pred, target)`` and add the weighted terms."""
    weights = _check_layer_weights(layer_weights)
    terms: dict[str, torch.Tensor] = {}
    for layer, weight in weights.items():
        pred = _lookup(pred_feats, layer, "pred")
        _check_4d(pred, layer, "pred")
        target = None
        if target_feats is not None:
            target = _lookup(target_feats, layer, "target")
            _check_4d(target, layer, "target")
            target = _match_batch(pred, target, layer, same_size=same_size)
        if check_finite:
            _check_finite(pred, layer, "pred")
            if target is not None:
                _check_finite(target, layer, "target")
        terms[layer] = weight * term(layer, pred, target)
    values = list(terms.values())
    total = values[0]
    for value in values[1:]:
        total = total + value
    return (total, terms) if return_terms else total


# --------------------------------------------------------------------------------------------
# public functions
# --------------------------------------------------------------------------------------------


def gram_matrix(feat: torch.Tensor, normalize: Optional[str] = "chw") -> torch.Tensor:
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
        raise TypeError(f"feat must be a floating point tensor (B, C, H, W), got {type(feat).__name__}")
    if feat.ndim != 4:
        raise ValueError(f"feat must be 4-D (B, C, H, W), got shape {tuple(feat.shape)}")
    _check_name("normalize", normalize, GRAM_NORMALIZATIONS)
    batch, channels, height, width = feat.shape
    positions = height * width
    if positions == 0 or channels == 0:
        raise ValueError(
            f"feat of shape {tuple(feat.shape)} has no channels or no positions; a Gram matrix needs C, H, W >= 1"
        )
    with _autocast_off(feat.device):
        flat = feat.reshape(batch, channels, positions).to(_compute_dtype(feat))
        if normalize is None:
            return torch.bmm(flat, flat.transpose(1, 2))
        flat = flat * (1.0 / math.sqrt(positions))
        gram = torch.bmm(flat, flat.transpose(1, 2))
        return gram / channels if normalize == "chw" else gram


def gram_matrices(
    feats: FeatureDict, layers: Optional[Mapping[str, float]] = None, normalize: Optional[str] = "chw"
) -> dict[str, torch.Tensor]:
    """Gram matrices of several layers, e.g. to cache a fixed style target for :func:`style_loss`.

    Args:
        feats: ``{layer: (B, C, H, W)}``.
        layers: layers to use (a ``layer_weights`` mapping or any iterable of names); all if ``None``.
        normalize: see :func:`gram_matrix`.

    Returns:
        ``{layer: (B, C, C)}`` in float32.

    Raises:
        ValueError: a requested layer is missing (the message lists the available ones).

    Example:
        >>> grams = gram_matrices({"relu1_1": torch.rand(1, 4, 8, 8)})
        >>> grams["relu1_1"].shape
        torch.Size([1, 4, 4])
    """
    names = list(feats) if layers is None else list(layers)
    return {name: gram_matrix(_lookup(feats, name, "input"), normalize) for name in names}


def feature_distance(
    a: torch.Tensor,
    b: torch.Tensor,
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

    ``reduction="mean"`` is :math:`\frac1B \sum_b v_b`, so for every criterion
    ``none.mean() == mean``; for ``l1``/``mse``/``charbonnier`` this is the mean over all elements,
    i.e. ``torch.nn.functional.l1_loss``/``mse_loss``. ``reduction="sum"`` follows torch too: the sum
    over *all elements* (:math:`N \sum_b v_b`) for the elementwise criteria, and the sum of the
    per-sample norms for ``fro``.

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
        >>> feature_distance(a, b, "mse", "none")
        tensor([1., 1.])
        >>> feature_distance(a, b, "fro", "none")  # sqrt(4) per sample
        tensor([2., 2.])
        >>> feature_distance(a, b, "l1", "sum")  # all 8 elements
        tensor(8.)
    """
    _check_name("criterion", criterion, CRITERIA)
    _check_name("reduction", reduction, REDUCTIONS)
    for name, value in (("a", a), ("b", b)):
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            raise TypeError(f"{name} must be a floating point tensor, got {type(value).__name__}")
    if a.ndim < 1 or a.numel() == 0:
        raise ValueError(f"a must have a batch dimension and at least one element, got shape {tuple(a.shape)}")
    b = _match_batch(a, b, "input", same_size=True) if a.shape != b.shape else b
    with _autocast_off(a.device):
        dtype = _compute_dtype(a, b)
        if criterion == "l1" and reduction != "sum":
            return _reduce(_PerSampleL1.apply(a.to(dtype), b.to(dtype)), reduction)
        diff = (a.to(dtype) - b.to(dtype)).reshape(a.shape[0], -1)
        if criterion == "fro":
            return _reduce(torch.linalg.vector_norm(diff, dim=1), reduction)
        if criterion == "l1":
            elementwise = diff.abs()
        elif criterion == "charbonnier":
            elementwise = torch.sqrt(diff * diff + eps * eps)
        else:
            elementwise = diff * diff
        if reduction == "sum":
            return elementwise.sum()
        return _reduce(elementwise.mean(dim=1), reduction)


def _unit_channels(feat: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Divide each position's feature vector by its L2 norm over channels (LPIPS, piq: ``x / (|x| + eps)``)."""
    return feat / (torch.linalg.vector_norm(feat, dim=1, keepdim=True) + eps)


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
    _check_name("criterion", criterion, CRITERIA)
    _check_name("reduction", reduction, REDUCTIONS)

    def term(layer: str, pred: torch.Tensor, target: Optional[torch.Tensor]) -> torch.Tensor:
        target = cast(torch.Tensor, target)  # perceptual_loss always has target features
        if normalize_channels:
            with _autocast_off(pred.device):
                dtype = _compute_dtype(pred, target)
                pred, target = _unit_channels(pred.to(dtype)), _unit_channels(target.to(dtype))
        return feature_distance(pred, target, criterion, reduction, eps)

    return _layer_loop(
        pred_feats, target_feats, layer_weights, term, return_terms=return_terms, check_finite=check_finite
    )


def style_loss(
    pred_feats: FeatureDict,
    target_feats: Optional[FeatureDict],
    layer_weights: Mapping[str, float],
    *,
    criterion: str = "mse",
    normalize: Optional[str] = "chw",
    reduction: str = "mean",
    eps: float = 1e-3,
    target_grams: Optional[Mapping[str, torch.Tensor]] = None,
    check_finite: bool = False,
    return_terms: bool = False,
) -> LossResult:
    r"""Weighted sum of distances between Gram matrices (style loss, Gatys et al. 2016).

    .. math:: L = \sum_{l} w_l \, D(G(\phi_l(\hat y)), G(\phi_l(y)))

    with :math:`G` the :func:`gram_matrix` under ``normalize`` and :math:`D` the
    :func:`feature_distance` of ``criterion`` applied to the ``(B, C, C)`` matrices (so ``mse`` is
    the mean over the :math:`C^2` entries, ``fro`` the per-sample Frobenius norm). The default
    (``mse``, ``"chw"``) is BasicSR's style term with an MSE criterion.

    A fixed style target can be cached: compute ``gram_matrices(target_feats, layer_weights)`` once
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
    _check_name("criterion", criterion, CRITERIA)
    _check_name("reduction", reduction, REDUCTIONS)
    _check_name("normalize", normalize, GRAM_NORMALIZATIONS)
    if (target_feats is None) == (target_grams is None):
        given = "both" if target_grams is not None else "neither"
        raise ValueError(f"style_loss needs exactly one of target_feats or target_grams, got {given}")

    def term(layer: str, pred: torch.Tensor, target: Optional[torch.Tensor]) -> torch.Tensor:
        pred_gram = gram_matrix(pred, normalize)
        if target is not None:
            target_gram = gram_matrix(target, normalize)
        else:
            target_gram = _lookup(cast(FeatureDict, target_grams), layer, "target Gram")
            if target_gram.ndim != 3:
                raise ValueError(f"target Gram {layer!r} must be (B, C, C), got shape {tuple(target_gram.shape)}")
            target_gram = _match_batch(pred_gram, target_gram, layer, same_size=True)
        return feature_distance(pred_gram, target_gram, criterion, reduction, eps)

    return _layer_loop(
        pred_feats,
        target_feats,
        layer_weights,
        term,
        return_terms=return_terms,
        check_finite=check_finite,
        same_size=False,
    )


def transferal_perceptual_loss(
    sr_levels: Sequence[torch.Tensor],
    texture_levels: Sequence[torch.Tensor],
    soft_attention: Optional[torch.Tensor] = None,
    *,
    criterion: str = "l2",
    reduction: str = "mean",
    return_terms: bool = False,
) -> LossResult:
    r"""TTSR's transferal perceptual loss on the three LTE levels (Yang et al., CVPR 2020).

    ``sr_levels = (lv1, lv2, lv3)`` are the relu1_1/relu2_1/relu3_1 maps of the SR output from the
    frozen LTE copy, ``texture_levels = (T_lv1, T_lv2, T_lv3)`` the transferred textures, and
    ``soft_attention`` TTSR's map :math:`S` at the lv3 resolution. As in TTSR's ``loss/loss.py``
    (``TPerceptualLoss``), with :math:`S_3 = \sigma(S)`, :math:`S_2 = \sigma(\mathrm{up}_2(S))`,
    :math:`S_1 = \sigma(\mathrm{up}_4(S))` (bicubic upsampling *before* the sigmoid, TTSR's order;
    all :math:`S_l = 1` when ``soft_attention`` is ``None``, TTSR's ``--tpl_use_S False`` default):

    .. math:: L = \frac13 \sum_{l=1}^{3} D(\phi_l(I^{SR}) \odot S_l,\; T_l \odot S_l)

    ``criterion="l2"`` (TTSR's ``--tpl_type l2``, its default) and ``"l1"``: :math:`D` is the MSE /
    L1 between the maps, which is what TTSR's code computes. ``criterion="gram"``: :math:`D` is the
    MSE between Gram matrices :math:`F F^\top / (C H W)` of the weighted maps (the "gram matrix
    difference" of TTSR's ``--tpl_type`` help text; ``TPerceptualLoss.gram_matrix`` is defined but
    not called by its code). ``"mse"`` is ``"l2"``. Nothing is detached: in TTSR gradients flow into the SR output and, through
    :math:`T_l` and :math:`S`, into the learnable LTE.

    Args:
        sr_levels: ``(lv1, lv2, lv3)`` of the SR image (frozen LTE copy).
        texture_levels: ``(T_lv1, T_lv2, T_lv3)``, same shapes.
        soft_attention: ``S`` or ``None``.
        criterion: one of :data:`TPL_CRITERIA`.
        reduction: one of :data:`REDUCTIONS` (per level, as in :func:`feature_distance`).
        return_terms: also return ``{"lv1": ..., "lv2": ..., "lv3": ...}`` (each already divided by 3).

    Returns:
        The loss, or ``(loss, terms)``.

    Raises:
        ValueError: not three levels, shapes that differ, ``S`` of the wrong shape, unknown names.

    Shape:
        lv1 ``(B, C1, 4h, 4w)``, lv2 ``(B, C2, 2h, 2w)``, lv3 ``(B, C3, h, w)``; ``S``: ``(B, 1, h, w)``.

    Example:
        >>> sr = [torch.ones(1, 2, 8, 8), torch.ones(1, 2, 4, 4), torch.ones(1, 2, 2, 2)]
        >>> t = [torch.zeros(1, 2, 8, 8), torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 2, 2)]
        >>> transferal_perceptual_loss(sr, t)
        tensor(1.)
        >>> transferal_perceptual_loss(sr, t, torch.zeros(1, 1, 2, 2))  # sigmoid(0) = 1/2 -> 1/4
        tensor(0.2500)
    """
    _check_name("criterion", criterion, TPL_CRITERIA)
    _check_name("reduction", reduction, REDUCTIONS)
    if len(sr_levels) != 3 or len(texture_levels) != 3:
        raise ValueError(
            f"expected three levels (lv1, lv2, lv3) each, got {len(sr_levels)} SR and "
            f"{len(texture_levels)} texture levels"
        )
    for index, (sr, tex) in enumerate(zip(sr_levels, texture_levels), start=1):
        _check_4d(sr, f"lv{index}", "SR")
        if sr.shape != tex.shape:
            raise ValueError(f"level lv{index}: SR shape {tuple(sr.shape)} and texture shape {tuple(tex.shape)} differ")
    weights: list[Optional[torch.Tensor]] = [None, None, None]
    if soft_attention is not None:
        lv3 = sr_levels[2]
        expected = (lv3.shape[0], 1, *lv3.shape[2:])
        if tuple(soft_attention.shape) != expected:
            raise ValueError(
                f"soft_attention must have shape {expected} (lv3's size), got {tuple(soft_attention.shape)}"
            )
        height, width = soft_attention.shape[2:]
        with _autocast_off(soft_attention.device):
            s = soft_attention.to(_compute_dtype(soft_attention, lv3))
            weights = [
                torch.sigmoid(F.interpolate(s, size=(height * 4, width * 4), mode="bicubic")),
                torch.sigmoid(F.interpolate(s, size=(height * 2, width * 2), mode="bicubic")),
                torch.sigmoid(s),
            ]
        for index, (sr, w) in enumerate(zip(sr_levels, weights), start=1):
            if tuple(sr.shape[2:]) != tuple(w.shape[2:]):
                raise ValueError(
                    f"level lv{index} has size {tuple(sr.shape[2:])} but the upsampled S has {tuple(w.shape[2:])}; "
                    "lv1, lv2 must be 4x and 2x lv3's size"
                )
    terms: dict[str, torch.Tensor] = {}
    for index, (sr, tex, w) in enumerate(zip(sr_levels, texture_levels, weights), start=1):
        with _autocast_off(sr.device):
            dtype = _compute_dtype(sr, tex)
            sr, tex = sr.to(dtype), tex.to(dtype)
            if w is not None:
                sr, tex = sr * w.to(dtype), tex * w.to(dtype)
            if criterion == "gram":
                value = feature_distance(gram_matrix(sr), gram_matrix(tex), "mse", reduction)
            else:
                value = feature_distance(sr, tex, "l1" if criterion == "l1" else "mse", reduction)
        terms[f"lv{index}"] = value / 3.0
    total = terms["lv1"] + terms["lv2"] + terms["lv3"]
    return (total, terms) if return_terms else total
