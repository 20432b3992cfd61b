"""ResNet-18/34/50/101 as featx backbones, on torchvision's modules: ``names`` (architectures, taps,
sizes and parameter counts, plain data), ``features`` (``ResNetFeatures``), ``table`` (``featx layers``).

Names are imported on first use (PEP 562), so importing the package does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from featx._lazy import lazy_exports

if TYPE_CHECKING:
    from featx.backbones.resnet.features import ResNetFeatures as ResNetFeatures
    from featx.backbones.resnet.features import resnet_layout as resnet_layout
    from featx.backbones.resnet.features import resnet_taps as resnet_taps
    from featx.backbones.resnet.names import RESNET_ARCHS as RESNET_ARCHS
    from featx.backbones.resnet.names import ResNetLayer as ResNetLayer
    from featx.backbones.resnet.names import resnet_layer as resnet_layer
    from featx.backbones.resnet.names import resnet_layers as resnet_layers
    from featx.backbones.resnet.names import resnet_min_input_size as resnet_min_input_size
    from featx.backbones.resnet.names import resnet_output_size as resnet_output_size
    from featx.backbones.resnet.names import resolve_resnet_taps as resolve_resnet_taps
    from featx.backbones.resnet.table import RESNET_HEADS as RESNET_HEADS
    from featx.backbones.resnet.table import resnet_layer_table as resnet_layer_table

_EXPORTS = {
    "RESNET_ARCHS": "featx.backbones.resnet.names",
    "RESNET_HEADS": "featx.backbones.resnet.table",
    "ResNetFeatures": "featx.backbones.resnet.features",
    "ResNetLayer": "featx.backbones.resnet.names",
    "resnet_layer_table": "featx.backbones.resnet.table",
    "resnet_layer": "featx.backbones.resnet.names",
    "resnet_layers": "featx.backbones.resnet.names",
    "resnet_layout": "featx.backbones.resnet.features",
    "resnet_min_input_size": "featx.backbones.resnet.names",
    "resnet_output_size": "featx.backbones.resnet.names",
    "resnet_taps": "featx.backbones.resnet.features",
    "resolve_resnet_taps": "featx.backbones.resnet.names",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
