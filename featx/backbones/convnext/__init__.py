"""ConvNeXt-T/S/B (torchvision's) as featx backbones: ``names`` (architectures, tap names and the tap
table, plain data), ``features`` (``ConvNeXtFeatures``, on torchvision's modules), ``table`` (the layer
table ``featx layers convnext_tiny`` prints).

Names are imported on first use (PEP 562), so importing the package does not import torchvision.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from featx._lazy import lazy_exports

if TYPE_CHECKING:
    from featx.backbones.convnext.features import ConvNeXtFeatures as ConvNeXtFeatures
    from featx.backbones.convnext.features import convnext_layout as convnext_layout
    from featx.backbones.convnext.names import CONVNEXT_ARCHS as CONVNEXT_ARCHS
    from featx.backbones.convnext.names import ConvNeXtLayer as ConvNeXtLayer
    from featx.backbones.convnext.names import ConvNeXtSpec as ConvNeXtSpec
    from featx.backbones.convnext.names import convnext_aliases as convnext_aliases
    from featx.backbones.convnext.names import convnext_layers as convnext_layers
    from featx.backbones.convnext.names import convnext_min_input_size as convnext_min_input_size
    from featx.backbones.convnext.names import convnext_output_size as convnext_output_size
    from featx.backbones.convnext.names import convnext_taps as convnext_taps
    from featx.backbones.convnext.names import resolve_convnext_taps as resolve_convnext_taps
    from featx.backbones.convnext.table import convnext_layer_table as convnext_layer_table

_EXPORTS = {
    "CONVNEXT_ARCHS": "featx.backbones.convnext.names",
    "ConvNeXtFeatures": "featx.backbones.convnext.features",
    "ConvNeXtLayer": "featx.backbones.convnext.names",
    "ConvNeXtSpec": "featx.backbones.convnext.names",
    "convnext_aliases": "featx.backbones.convnext.names",
    "convnext_layer_table": "featx.backbones.convnext.table",
    "convnext_layers": "featx.backbones.convnext.names",
    "convnext_layout": "featx.backbones.convnext.features",
    "convnext_min_input_size": "featx.backbones.convnext.names",
    "convnext_output_size": "featx.backbones.convnext.names",
    "convnext_taps": "featx.backbones.convnext.names",
    "resolve_convnext_taps": "featx.backbones.convnext.names",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
