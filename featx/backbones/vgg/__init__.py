"""VGG11-19 (+bn): canonical layer names (:mod:`~featx.backbones.vgg.layers`), the sliced extractor
:class:`VGGFeatures` (:mod:`~featx.backbones.vgg.features`) and the fully convolutional classifier head
(:mod:`~featx.backbones.vgg.head`).

Names are imported on first use (PEP 562), so importing the package does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from featx._lazy import lazy_exports

if TYPE_CHECKING:
    from featx.backbones.vgg.features import VGGFeatures as VGGFeatures
    from featx.backbones.vgg.head import ConvHead as ConvHead
    from featx.backbones.vgg.layers import ARCHS as ARCHS
    from featx.backbones.vgg.layers import POOLINGS as POOLINGS
    from featx.backbones.vgg.layers import LayerSpec as LayerSpec
    from featx.backbones.vgg.layers import check_arch as check_arch
    from featx.backbones.vgg.layers import layer_names as layer_names
    from featx.backbones.vgg.layers import layer_specs as layer_specs
    from featx.backbones.vgg.layers import min_input_size as min_input_size

# public name -> defining module
_EXPORTS = {
    "ARCHS": "featx.backbones.vgg.layers",
    "ConvHead": "featx.backbones.vgg.head",
    "LayerSpec": "featx.backbones.vgg.layers",
    "POOLINGS": "featx.backbones.vgg.layers",
    "VGGFeatures": "featx.backbones.vgg.features",
    "check_arch": "featx.backbones.vgg.layers",
    "layer_names": "featx.backbones.vgg.layers",
    "layer_specs": "featx.backbones.vgg.layers",
    "min_input_size": "featx.backbones.vgg.layers",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
