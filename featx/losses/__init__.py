"""Losses on feature dicts and on images.

Functions on features: :mod:`~featx.losses.functional` (distances, Gram, perceptual, style),
:mod:`~featx.losses.texture` (sliced Wasserstein, moments, contextual),
:mod:`~featx.losses.transferal` (TTSR's transferal perceptual loss); all of them are also in
:mod:`featx.functional`. Modules on images: :mod:`~featx.losses.modules` (``PerceptualLoss``,
``StyleLoss``, ``TextureLoss``, ``FeatureLoss``).

Names are imported on first use (PEP 562), so importing the package does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from featx._lazy import lazy_exports

if TYPE_CHECKING:
    from featx.losses.functional import CRITERIA as CRITERIA
    from featx.losses.functional import GRAM_NORMALIZATIONS as GRAM_NORMALIZATIONS
    from featx.losses.functional import REDUCTIONS as REDUCTIONS
    from featx.losses.functional import feature_distance as feature_distance
    from featx.losses.functional import gram_matrices as gram_matrices
    from featx.losses.functional import gram_matrix as gram_matrix
    from featx.losses.functional import perceptual_loss as perceptual_loss
    from featx.losses.functional import style_loss as style_loss
    from featx.losses.modules import TEXTURE_KINDS as TEXTURE_KINDS
    from featx.losses.modules import FeatureLoss as FeatureLoss
    from featx.losses.modules import PerceptualLoss as PerceptualLoss
    from featx.losses.modules import StyleLoss as StyleLoss
    from featx.losses.modules import TextureLoss as TextureLoss
    from featx.losses.texture import ContextualOnFeatures as ContextualOnFeatures
    from featx.losses.texture import MomentsOnFeatures as MomentsOnFeatures
    from featx.losses.texture import SlicedWassersteinOnFeatures as SlicedWassersteinOnFeatures
    from featx.losses.texture import contextual_loss as contextual_loss
    from featx.losses.texture import moment_loss as moment_loss
    from featx.losses.texture import sliced_wasserstein_loss as sliced_wasserstein_loss
    from featx.losses.transferal import TPL_CRITERIA as TPL_CRITERIA
    from featx.losses.transferal import TransferalPerceptualOnFeatures as TransferalPerceptualOnFeatures
    from featx.losses.transferal import transferal_perceptual_loss as transferal_perceptual_loss

# public name -> defining module
_EXPORTS = {
    "CRITERIA": "featx.losses.functional",
    "ContextualOnFeatures": "featx.losses.texture",
    "FeatureLoss": "featx.losses.modules",
    "GRAM_NORMALIZATIONS": "featx.losses.functional",
    "MomentsOnFeatures": "featx.losses.texture",
    "PerceptualLoss": "featx.losses.modules",
    "REDUCTIONS": "featx.losses.functional",
    "SlicedWassersteinOnFeatures": "featx.losses.texture",
    "StyleLoss": "featx.losses.modules",
    "TEXTURE_KINDS": "featx.losses.modules",
    "TPL_CRITERIA": "featx.losses.transferal",
    "TextureLoss": "featx.losses.modules",
    "TransferalPerceptualOnFeatures": "featx.losses.transferal",
    "contextual_loss": "featx.losses.texture",
    "feature_distance": "featx.losses.functional",
    "gram_matrices": "featx.losses.functional",
    "gram_matrix": "featx.losses.functional",
    "moment_loss": "featx.losses.texture",
    "perceptual_loss": "featx.losses.functional",
    "sliced_wasserstein_loss": "featx.losses.texture",
    "style_loss": "featx.losses.functional",
    "transferal_perceptual_loss": "featx.losses.transferal",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
