"""Every loss function on feature dicts in one namespace, as ``torch.nn.functional`` is for torch.

The implementations live in :mod:`featx.losses` (``functional``: distances, Gram, perceptual and
style; ``texture``: sliced Wasserstein, moments, contextual; ``transferal``: TTSR's transferal
perceptual loss); this module re-exports their functions and constants.

Example:
    >>> import torch
    >>> from featx.functional import feature_distance
    >>> float(feature_distance(torch.zeros(1, 2), torch.ones(1, 2), criterion="l1"))
    1.0
"""

from __future__ import annotations

from featx.losses.functional import (
    CRITERIA,
    GRAM_NORMALIZATIONS,
    REDUCTIONS,
    feature_distance,
    gram_matrices,
    gram_matrix,
    perceptual_loss,
    style_loss,
)
from featx.losses.texture import contextual_loss, moment_loss, sliced_wasserstein_loss
from featx.losses.transferal import TPL_CRITERIA, transferal_perceptual_loss

__all__ = [
    "CRITERIA",
    "GRAM_NORMALIZATIONS",
    "REDUCTIONS",
    "TPL_CRITERIA",
    "contextual_loss",
    "feature_distance",
    "gram_matrices",
    "gram_matrix",
    "moment_loss",
    "perceptual_loss",
    "sliced_wasserstein_loss",
    "style_loss",
    "transferal_perceptual_loss",
]
