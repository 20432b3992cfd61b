"""featx: sliced VGG feature extractors and perceptual, style and texture losses for SR.

Public names are imported lazily (PEP 562), so ``import featx`` and ``featx --help`` stay fast and
torch is loaded on first use of a name that needs it.

Example:
    >>> import featx
    >>> featx.PRESETS["ttsr_lte"].taps
    ('relu1_1', 'relu2_1', 'relu3_1')
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from featx._lazy import lazy_exports
from featx._version import __version__

if TYPE_CHECKING:  # the lazily exported names, visible to type checkers and IDEs
    from featx.alexnet import AlexNetFeatures
    from featx.dists import DISTS
    from featx.errors import (
        FeatxError,
        FeatxWarning,
        HashMismatchError,
        ImageDecodeError,
        InputRangeWarning,
        OutputNotWritableError,
        RandomWeightsWarning,
        UnverifiedWeightsWarning,
        WeightsLoadError,
        WeightsNotFoundError,
    )
    from featx.extract import ExtractOptions, ExtractSummary, extract_features
    from featx.extractor import VGGFeatures
    from featx.featfile import load_features, save_features
    from featx.functional import CRITERIA, REDUCTIONS, feature_distance, gram_matrices, gram_matrix, perceptual_loss, style_loss
    from featx.head import ConvHead
    from featx.images import load_image
    from featx.layers import ARCHS, layer_names, layer_specs
    from featx.losses import TEXTURE_KINDS, FeatureLoss, PerceptualLoss, StyleLoss, TextureLoss
    from featx.lpips import LPIPS
    from featx.lte import LTE
    from featx.presets import PRESETS
    from featx.show import TapSummary, show_features, summarize_features
    from featx.table import layer_table
    from featx.taps import TapInfo, resolve_taps
    from featx.texture import (
        ContextualOnFeatures,
        MomentsOnFeatures,
        SlicedWassersteinOnFeatures,
        contextual_loss,
        moment_loss,
        sliced_wasserstein_loss,
    )
    from featx.tiling import tiled_features
    from featx.transferal import TransferalPerceptualOnFeatures, transferal_perceptual_loss
    from featx.weights import LoadedWeights, MetricWeights, VGGWeights, featx_home, load_weights, read_checkpoint

# public name -> defining module
_EXPORTS = {
    "ARCHS": "featx.layers",
    "AlexNetFeatures": "featx.alexnet",
    "CRITERIA": "featx.functional",
    "ContextualOnFeatures": "featx.texture",
    "ConvHead": "featx.head",
    "DISTS": "featx.dists",
    "ExtractOptions": "featx.extract",
    "ExtractSummary": "featx.extract",
    "FeatureLoss": "featx.losses",
    "FeatxError": "featx.errors",
    "FeatxWarning": "featx.errors",
    "HashMismatchError": "featx.errors",
    "ImageDecodeError": "featx.errors",
    "InputRangeWarning": "featx.errors",
    "LPIPS": "featx.lpips",
    "LTE": "featx.lte",
    "LoadedWeights": "featx.weights",
    "MetricWeights": "featx.weights",
    "MomentsOnFeatures": "featx.texture",
    "OutputNotWritableError": "featx.errors",
    "PRESETS": "featx.presets",
    "PerceptualLoss": "featx.losses",
    "REDUCTIONS": "featx.functional",
    "RandomWeightsWarning": "featx.errors",
    "SlicedWassersteinOnFeatures": "featx.texture",
    "StyleLoss": "featx.losses",
    "TEXTURE_KINDS": "featx.losses",
    "TapInfo": "featx.taps",
    "TapSummary": "featx.show",
    "TextureLoss": "featx.losses",
    "TransferalPerceptualOnFeatures": "featx.transferal",
    "UnverifiedWeightsWarning": "featx.errors",
    "VGGFeatures": "featx.extractor",
    "VGGWeights": "featx.weights",
    "WeightsLoadError": "featx.errors",
    "WeightsNotFoundError": "featx.errors",
    "contextual_loss": "featx.texture",
    "extract_features": "featx.extract",
    "feature_distance": "featx.functional",
    "featx_home": "featx.weights",
    "gram_matrices": "featx.functional",
    "gram_matrix": "featx.functional",
    "layer_names": "featx.layers",
    "layer_specs": "featx.layers",
    "layer_table": "featx.table",
    "load_features": "featx.featfile",
    "load_image": "featx.images",
    "load_weights": "featx.weights",
    "moment_loss": "featx.texture",
    "perceptual_loss": "featx.functional",
    "read_checkpoint": "featx.weights",
    "resolve_taps": "featx.taps",
    "save_features": "featx.featfile",
    "show_features": "featx.show",
    "sliced_wasserstein_loss": "featx.texture",
    "style_loss": "featx.functional",
    "summarize_features": "featx.show",
    "tiled_features": "featx.tiling",
    "transferal_perceptual_loss": "featx.transferal",
}

__all__ = [
    "ARCHS",
    "AlexNetFeatures",
    "CRITERIA",
    "ContextualOnFeatures",
    "ConvHead",
    "DISTS",
    "ExtractOptions",
    "ExtractSummary",
    "FeatureLoss",
    "FeatxError",
    "FeatxWarning",
    "HashMismatchError",
    "ImageDecodeError",
    "InputRangeWarning",
    "LPIPS",
    "LTE",
    "LoadedWeights",
    "MetricWeights",
    "MomentsOnFeatures",
    "OutputNotWritableError",
    "PRESETS",
    "PerceptualLoss",
    "REDUCTIONS",
    "RandomWeightsWarning",
    "SlicedWassersteinOnFeatures",
    "StyleLoss",
    "TEXTURE_KINDS",
    "TapInfo",
    "TapSummary",
    "TextureLoss",
    "TransferalPerceptualOnFeatures",
    "UnverifiedWeightsWarning",
    "VGGFeatures",
    "VGGWeights",
    "WeightsLoadError",
    "WeightsNotFoundError",
    "__version__",
    "contextual_loss",
    "extract_features",
    "feature_distance",
    "featx_home",
    "gram_matrices",
    "gram_matrix",
    "layer_names",
    "layer_specs",
    "layer_table",
    "load_features",
    "load_image",
    "load_weights",
    "moment_loss",
    "perceptual_loss",
    "read_checkpoint",
    "resolve_taps",
    "save_features",
    "show_features",
    "sliced_wasserstein_loss",
    "style_loss",
    "summarize_features",
    "tiled_features",
    "transferal_perceptual_loss",
]


__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
