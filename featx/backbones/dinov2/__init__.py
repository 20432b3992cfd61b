"""DINOv2 ViT-S/14 and ViT-B/14 as featx backbones: ``names`` (architectures and tap names, plain data),
``tokens`` (patch grid and position-embedding rules), ``features`` (``DINOv2Features``, on timm's modules).

Names are imported on first use (PEP 562), so importing the package imports neither torch nor timm.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from featx._lazy import lazy_exports

if TYPE_CHECKING:
    from featx.backbones.dinov2.features import DINOv2Features as DINOv2Features
    from featx.backbones.dinov2.features import dinov2_layout as dinov2_layout
    from featx.backbones.dinov2.features import dinov2_taps as dinov2_taps
    from featx.backbones.dinov2.names import DINOV2_ARCHS as DINOV2_ARCHS
    from featx.backbones.dinov2.names import dinov2_tap_names as dinov2_tap_names
    from featx.backbones.dinov2.tokens import POS_INTERPOLATIONS as POS_INTERPOLATIONS
    from featx.backbones.dinov2.tokens import REMAINDERS as REMAINDERS

_EXPORTS = {
    "DINOV2_ARCHS": "featx.backbones.dinov2.names",
    "DINOv2Features": "featx.backbones.dinov2.features",
    "POS_INTERPOLATIONS": "featx.backbones.dinov2.tokens",
    "REMAINDERS": "featx.backbones.dinov2.tokens",
    "dinov2_layout": "featx.backbones.dinov2.features",
    "dinov2_tap_names": "featx.backbones.dinov2.names",
    "dinov2_taps": "featx.backbones.dinov2.features",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
