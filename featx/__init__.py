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
    from featx.backbones.alexnet import AlexNetFeatures
    from featx.backbones.convnext.features import ConvNeXtFeatures
    from featx.backbones.dinov2.features import DINOv2Features
    from featx.backbones.lte import LTE
    from featx.backbones.resnet.features import ResNetFeatures
    from featx.backbones.squeezenet import SqueezeNetFeatures
    from featx.backbones.table import layer_table
    from featx.backbones.taps import TapInfo, resolve_taps
    from featx.backbones.vgg.features import VGGFeatures
    from featx.backbones.vgg.head import ConvHead
    from featx.backbones.vgg.layers import ARCHS, layer_names, layer_specs
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
    from featx.extract.tiling import tiled_features
    from featx.io.featfile import load_features, save_features
    from featx.io.images import load_image
    from featx.losses.functional import (
        CRITERIA,
        REDUCTIONS,
        feature_distance,
        gram_matrices,
        gram_matrix,
        perceptual_loss,
        style_loss,
    )
    from featx.losses.modules import TEXTURE_KINDS, FeatureLoss, PerceptualLoss, StyleLoss, TextureLoss
    from featx.losses.texture import (
        ContextualOnFeatures,
        MomentsOnFeatures,
        SlicedWassersteinOnFeatures,
        contextual_loss,
        moment_loss,
        sliced_wasserstein_loss,
    )
    from featx.losses.transferal import TransferalPerceptualOnFeatures, transferal_perceptual_loss
    from featx.metrics.dists import DISTS
    from featx.metrics.fidelity import psnr, ssim
    from featx.metrics.lpips import LPIPS
    from featx.metrics.objects import DISTSMetric, LPIPSMetric, PerSampleMetric, PSNRMetric, SSIMMetric
    from featx.presets import PRESETS
    from featx.show import TapSummary, show_features, summarize_features
    from featx.weights import (
        AlexNetWeights,
        ConvNeXtWeights,
        DINOv2Weights,
        LoadedWeights,
        MetricWeights,
        ResNetWeights,
        SqueezeNetWeights,
        VGGWeights,
        featx_home,
        load_weights,
        read_checkpoint,
    )

# public name -> defining module
_EXPORTS = {
    "ARCHS": "featx.backbones.vgg.layers",
    "AlexNetFeatures": "featx.backbones.alexnet",
    "AlexNetWeights": "featx.weights",
    "CRITERIA": "featx.losses.functional",
    "ContextualOnFeatures": "featx.losses.texture",
    "ConvHead": "featx.backbones.vgg.head",
    "ConvNeXtFeatures": "featx.backbones.convnext.features",
    "ConvNeXtWeights": "featx.weights",
    "DINOv2Weights": "featx.weights",
    "DISTS": "featx.metrics.dists",
    "DINOv2Features": "featx.backbones.dinov2.features",
    "DISTSMetric": "featx.metrics.objects",
    "ExtractOptions": "featx.extract",
    "ExtractSummary": "featx.extract",
    "FeatureLoss": "featx.losses.modules",
    "FeatxError": "featx.errors",
    "FeatxWarning": "featx.errors",
    "HashMismatchError": "featx.errors",
    "ImageDecodeError": "featx.errors",
    "InputRangeWarning": "featx.errors",
    "LPIPS": "featx.metrics.lpips",
    "LPIPSMetric": "featx.metrics.objects",
    "PSNRMetric": "featx.metrics.objects",
    "SSIMMetric": "featx.metrics.objects",
    "LTE": "featx.backbones.lte",
    "LoadedWeights": "featx.weights",
    "MetricWeights": "featx.weights",
    "MomentsOnFeatures": "featx.losses.texture",
    "OutputNotWritableError": "featx.errors",
    "PRESETS": "featx.presets",
    "PerSampleMetric": "featx.metrics.objects",
    "PerceptualLoss": "featx.losses.modules",
    "REDUCTIONS": "featx.losses.functional",
    "RandomWeightsWarning": "featx.errors",
    "ResNetFeatures": "featx.backbones.resnet.features",
    "ResNetWeights": "featx.weights",
    "SlicedWassersteinOnFeatures": "featx.losses.texture",
    "SqueezeNetFeatures": "featx.backbones.squeezenet",
    "SqueezeNetWeights": "featx.weights",
    "StyleLoss": "featx.losses.modules",
    "TEXTURE_KINDS": "featx.losses.modules",
    "TapInfo": "featx.backbones.taps",
    "TapSummary": "featx.show",
    "TextureLoss": "featx.losses.modules",
    "TransferalPerceptualOnFeatures": "featx.losses.transferal",
    "UnverifiedWeightsWarning": "featx.errors",
    "VGGFeatures": "featx.backbones.vgg.features",
    "VGGWeights": "featx.weights",
    "WeightsLoadError": "featx.errors",
    "WeightsNotFoundError": "featx.errors",
    "contextual_loss": "featx.losses.texture",
    "extract_features": "featx.extract",
    "feature_distance": "featx.losses.functional",
    "featx_home": "featx.weights",
    "gram_matrices": "featx.losses.functional",
    "gram_matrix": "featx.losses.functional",
    "layer_names": "featx.backbones.vgg.layers",
    "layer_specs": "featx.backbones.vgg.layers",
    "layer_table": "featx.backbones.table",
    "load_features": "featx.io.featfile",
    "load_image": "featx.io.images",
    "load_weights": "featx.weights",
    "moment_loss": "featx.losses.texture",
    "perceptual_loss": "featx.losses.functional",
    "psnr": "featx.metrics.fidelity",
    "read_checkpoint": "featx.weights",
    "resolve_taps": "featx.backbones.taps",
    "save_features": "featx.io.featfile",
    "show_features": "featx.show",
    "sliced_wasserstein_loss": "featx.losses.texture",
    "ssim": "featx.metrics.fidelity",
    "style_loss": "featx.losses.functional",
    "summarize_features": "featx.show",
    "tiled_features": "featx.extract.tiling",
    "transferal_perceptual_loss": "featx.losses.transferal",
}

__all__ = [
    "ARCHS",
    "AlexNetFeatures",
    "AlexNetWeights",
    "CRITERIA",
    "ContextualOnFeatures",
    "ConvHead",
    "ConvNeXtFeatures",
    "ConvNeXtWeights",
    "DINOv2Weights",
    "DISTS",
    "DINOv2Features",
    "DISTSMetric",
    "ExtractOptions",
    "ExtractSummary",
    "FeatureLoss",
    "FeatxError",
    "FeatxWarning",
    "HashMismatchError",
    "ImageDecodeError",
    "InputRangeWarning",
    "LPIPS",
    "LPIPSMetric",
    "PSNRMetric",
    "SSIMMetric",
    "LTE",
    "LoadedWeights",
    "MetricWeights",
    "MomentsOnFeatures",
    "OutputNotWritableError",
    "PRESETS",
    "PerSampleMetric",
    "PerceptualLoss",
    "REDUCTIONS",
    "RandomWeightsWarning",
    "ResNetFeatures",
    "ResNetWeights",
    "SlicedWassersteinOnFeatures",
    "SqueezeNetFeatures",
    "SqueezeNetWeights",
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
    "psnr",
    "read_checkpoint",
    "resolve_taps",
    "save_features",
    "show_features",
    "sliced_wasserstein_loss",
    "ssim",
    "style_loss",
    "summarize_features",
    "tiled_features",
    "transferal_perceptual_loss",
]


__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
