"""TTSR's transferal perceptual loss (Yang et al., CVPR 2020) on the three LTE levels: the
function and its module.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Optional, cast, overload

import torch
import torch.nn.functional as F
from torch import nn

from featx._checks import check_bool, check_choice
from featx.errors import FeatxValueError
from featx.losses._features import LossResult, autocast_off, check_4d, check_reduction, compute_dtype
from featx.losses.functional import feature_distance, gram_matrix

__all__ = ["TPL_CRITERIA", "TransferalPerceptualOnFeatures", "transferal_perceptual_loss"]

TPL_CRITERIA: tuple[str, ...] = ("l1", "l2", "mse", "gram")
"""Transferal perceptual loss criteria: ``l1``/``l2`` on the maps (TTSR's code), ``gram`` (Gram difference)."""


@overload
def transferal_perceptual_loss(
    sr_levels: Sequence[torch.Tensor], texture_levels: Sequence[torch.Tensor],
    soft_attention: Optional[torch.Tensor] = ..., *, criterion: str = ..., reduction: str = ...,
    return_terms: Literal[False] = ...,
) -> torch.Tensor: ...  # fmt: skip
@overload
def transferal_perceptual_loss(
    sr_levels: Sequence[torch.Tensor], texture_levels: Sequence[torch.Tensor],
    soft_attention: Optional[torch.Tensor] = ..., *, criterion: str = ..., reduction: str = ...,
    return_terms: Literal[True],
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...  # fmt: skip
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
        reduction: one of :data:`featx.losses.functional.REDUCTIONS` (per level, as in :func:`feature_distance`).
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
    check_choice("criterion", criterion, TPL_CRITERIA)
    check_reduction(reduction)
    if len(sr_levels) != 3 or len(texture_levels) != 3:
        raise FeatxValueError(
            f"expected three levels (lv1, lv2, lv3) each, got {len(sr_levels)} SR and "
            f"{len(texture_levels)} texture levels"
        )
    for index, (sr, tex) in enumerate(zip(sr_levels, texture_levels, strict=True), start=1):
        check_4d(sr, f"lv{index}", "SR")
        if sr.shape != tex.shape:
            raise FeatxValueError(f"level lv{index}: SR shape {tuple(sr.shape)} and texture shape {tuple(tex.shape)} differ")
    weights: list[Optional[torch.Tensor]] = [None, None, None]
    if soft_attention is not None:
        lv3 = sr_levels[2]
        expected = (lv3.shape[0], 1, *lv3.shape[2:])
        if tuple(soft_attention.shape) != expected:
            raise FeatxValueError(
                f"soft_attention must have shape {expected} (lv3's size), got {tuple(soft_attention.shape)}"
            )
        height, width = soft_attention.shape[2:]
        with autocast_off(soft_attention.device):
            s = soft_attention.to(compute_dtype(soft_attention, lv3))
            weights = [
                torch.sigmoid(F.interpolate(s, size=(height * 4, width * 4), mode="bicubic")),
                torch.sigmoid(F.interpolate(s, size=(height * 2, width * 2), mode="bicubic")),
                torch.sigmoid(s),
            ]
        for index, (sr, w) in enumerate(zip(sr_levels, weights, strict=True), start=1):
            w_size = tuple(cast(torch.Tensor, w).shape[2:])
            if tuple(sr.shape[2:]) != w_size:
                raise FeatxValueError(
                    f"level lv{index} has size {tuple(sr.shape[2:])} but the upsampled S has {w_size}; "
                    "lv1, lv2 must be 4x and 2x lv3's size"
                )
    terms: dict[str, torch.Tensor] = {}
    for index, (sr, tex, w) in enumerate(zip(sr_levels, texture_levels, weights, strict=True), start=1):
        with autocast_off(sr.device):
            dtype = compute_dtype(sr, tex)
            sr, tex = sr.to(dtype), tex.to(dtype)
            if w is not None:
                sr, tex = sr * w.to(dtype), tex * w.to(dtype)
            if criterion == "gram":
                value = feature_distance(gram_matrix(sr), gram_matrix(tex), criterion="mse", reduction=reduction)
            else:
                value = feature_distance(sr, tex, criterion="l1" if criterion == "l1" else "mse", reduction=reduction)
        terms[f"lv{index}"] = value / 3.0
    total = terms["lv1"] + terms["lv2"] + terms["lv3"]
    return (total, terms) if return_terms else total


class TransferalPerceptualOnFeatures(nn.Module):
    r"""TTSR's transferal perceptual loss as a module (see
    :func:`featx.losses.functional.transferal_perceptual_loss` for the formula).

    Holds no network: TTSR applies a *frozen copy* of its learnable LTE to the SR output, synced
    every step with ``lte_copy.load_state_dict(lte.state_dict())``, and passes those levels here
    with the transferred textures ``T`` and the soft-attention map ``S``.

    Args:
        criterion: ``"l2"`` (TTSR ``--tpl_type`` default; MSE on the maps), ``"l1"``, or ``"gram"``
            (MSE between Gram matrices of the weighted maps).
        use_soft_attention: weight the maps by the upsampled ``sigmoid(S)`` (TTSR ``--tpl_use_S``,
            default False there too); when False, ``soft_attention`` passed to forward is ignored,
            as in TTSR.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Example:
        >>> loss = TransferalPerceptualOnFeatures(use_soft_attention=True)
        >>> sr = [torch.ones(1, 2, 8, 8), torch.ones(1, 2, 4, 4), torch.ones(1, 2, 2, 2)]
        >>> t = [torch.zeros_like(level) for level in sr]
        >>> loss(sr, t, torch.zeros(1, 1, 2, 2))
        tensor(0.2500)
    """

    def __init__(self, *, criterion: str = "l2", use_soft_attention: bool = False, reduction: str = "mean") -> None:
        super().__init__()
        self.criterion = check_choice("criterion", criterion, TPL_CRITERIA)
        self.reduction = check_reduction(reduction)
        self.use_soft_attention = check_bool("use_soft_attention", use_soft_attention)

    @overload
    def forward(
        self, sr_levels: Sequence[torch.Tensor], texture_levels: Sequence[torch.Tensor],
        soft_attention: Optional[torch.Tensor] = ..., *, return_terms: Literal[False] = ...,
    ) -> torch.Tensor: ...  # fmt: skip
    @overload
    def forward(
        self, sr_levels: Sequence[torch.Tensor], texture_levels: Sequence[torch.Tensor],
        soft_attention: Optional[torch.Tensor] = ..., *, return_terms: Literal[True],
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...  # fmt: skip
    def forward(
        self,
        sr_levels: Sequence[torch.Tensor],
        texture_levels: Sequence[torch.Tensor],
        soft_attention: Optional[torch.Tensor] = None,
        *,
        return_terms: bool = False,
    ) -> LossResult:
        """Loss between the SR levels ``(lv1, lv2, lv3)`` and the textures ``(T_lv1, T_lv2, T_lv3)``.

        Raises:
            ValueError: ``use_soft_attention=True`` but no ``soft_attention`` given, or bad shapes.
        """
        if self.use_soft_attention and soft_attention is None:
            raise FeatxValueError("use_soft_attention=True needs the soft-attention map S (B, 1, h, w)")
        return transferal_perceptual_loss(  # type: ignore[call-overload, no-any-return]
            sr_levels,
            texture_levels,
            soft_attention if self.use_soft_attention else None,
            criterion=self.criterion,
            reduction=self.reduction,
            return_terms=return_terms,
        )

    def extra_repr(self) -> str:
        return (
            f"criterion={self.criterion!r}, use_soft_attention={self.use_soft_attention}, "
            f"reduction={self.reduction!r}"
        )
