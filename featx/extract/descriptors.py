"""Per-tap descriptors stored by an extraction run (:data:`~featx.extract.options.DESCRIPTORS`):
the feature map itself, its global average or maximum, or its Gram matrix."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from featx._checks import check_choice
from featx.extract.options import DESCRIPTORS

__all__ = ["reduce_features"]


def reduce_features(feats: Mapping[str, torch.Tensor], reduce: str) -> dict[str, torch.Tensor]:
    """Turn a batch of feature maps into per-tap descriptors (computed in float32).

    Args:
        feats: ``{tap: (B, C, H, W)}``.
        reduce: one of :data:`~featx.extract.options.DESCRIPTORS`: ``"none"``, ``"gap"`` (mean over
            H, W), ``"gmp"`` (max over H, W) or ``"gram"`` (:func:`featx.losses.functional.gram_matrix`,
            normalised by ``C H W``).

    Returns:
        ``{tap: (B, C, H, W)}``, ``(B, C)``, ``(B, C)`` or ``(B, C, C)``. ``"none"`` returns the
        maps unchanged; the others return float32.

    Raises:
        ValueError: unknown ``reduce``.

    Example:
        >>> f = {"relu1_1": torch.arange(8.0).view(1, 2, 2, 2)}
        >>> reduce_features(f, "gap")["relu1_1"], reduce_features(f, "gmp")["relu1_1"]
        (tensor([[1.5000, 5.5000]]), tensor([[3., 7.]]))
        >>> reduce_features(f, "gram")["relu1_1"].shape
        torch.Size([1, 2, 2])
    """
    check_choice("reduce", reduce, DESCRIPTORS)
    if reduce == "none":
        return dict(feats)
    if reduce == "gram":
        from featx.losses.functional import gram_matrix

        return {name: gram_matrix(feat) for name, feat in feats.items()}
    if reduce == "gap":
        return {name: feat.float().mean(dim=(2, 3)) for name, feat in feats.items()}
    return {name: feat.amax(dim=(2, 3)).float() for name, feat in feats.items()}
