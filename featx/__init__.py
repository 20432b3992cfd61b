"""featx: sliced VGG feature extractors and perceptual, style and texture losses for SR.

Public names are imported lazily (PEP 562), so ``import featx`` and ``featx --help`` stay fast and
torch is loaded on first use of a name that needs it.

Example:
    >>> import featx
    >>> featx.PRESETS["ttsr_lte"].taps
    ('relu1_1', 'relu2_1', 'relu3_1')
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> defining module
_EXPORTS = {
    "ARCHS": "featx.layers",
    "CRITERIA": "featx.functional",
    "ContextualOnFeatures": "featx.texture",
    "ConvHead": "featx.head",
    "ExtractOptions": "featx.extract",
    "ExtractSummary": "featx.extract",
    "FeatureLoss": "featx.losses",
    "FeatxError": "featx.errors",
    "FeatxWarning": "featx.errors",
    "HashMismatchError": "featx.errors",
    "ImageDecodeError": "featx.errors",
    "InputRangeWarning": "featx.errors",
    "LTE": "featx.lte",
    "LoadedWeights": "featx.weights",
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
    "TransferalPerceptualLoss": "featx.transferal",
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
    "transferal_perceptual_loss": "featx.transferal",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'featx' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
