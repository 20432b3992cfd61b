"""Files in and out: finding images (:mod:`~featx.io.discovery`), decoding them by documented rules
(:mod:`~featx.io.images`), safetensors feature files written whole or region by region
(:mod:`~featx.io.featfile`, :mod:`~featx.io.featstream`) and atomic writes (:mod:`~featx.io.atomic`).

The bottom of the package with :mod:`featx.weights`: nothing here imports a backbone, loss or metric.

Names are imported on first use (PEP 562), so importing the package does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from featx._lazy import lazy_exports

if TYPE_CHECKING:
    from featx.io.atomic import ALIGNMENT as ALIGNMENT
    from featx.io.atomic import DIRECT_MIN_BYTES as DIRECT_MIN_BYTES
    from featx.io.atomic import aligned_buffer as aligned_buffer
    from featx.io.atomic import is_temp_name as is_temp_name
    from featx.io.atomic import temp_name as temp_name
    from featx.io.atomic import write_atomic as write_atomic
    from featx.io.atomic import write_atomic_buffer as write_atomic_buffer
    from featx.io.discovery import IMAGE_EXTENSIONS as IMAGE_EXTENSIONS
    from featx.io.discovery import ImageSource as ImageSource
    from featx.io.discovery import decode_name as decode_name
    from featx.io.discovery import discover as discover
    from featx.io.discovery import find_images as find_images
    from featx.io.discovery import name_bytes as name_bytes
    from featx.io.discovery import printable_name as printable_name
    from featx.io.discovery import read_file_list as read_file_list
    from featx.io.featfile import FEATURE_SUFFIX as FEATURE_SUFFIX
    from featx.io.featfile import feature_file_layout as feature_file_layout
    from featx.io.featfile import load_features as load_features
    from featx.io.featfile import read_feature_metadata as read_feature_metadata
    from featx.io.featfile import save_features as save_features
    from featx.io.featfile import serialize_features as serialize_features
    from featx.io.featstream import FeatureFileStream as FeatureFileStream
    from featx.io.images import ALPHA_MODES as ALPHA_MODES
    from featx.io.images import load_image as load_image
    from featx.io.images import orient as orient
    from featx.io.images import probe_image as probe_image

# public name -> defining module
_EXPORTS = {
    "ALIGNMENT": "featx.io.atomic",
    "ALPHA_MODES": "featx.io.images",
    "DIRECT_MIN_BYTES": "featx.io.atomic",
    "FEATURE_SUFFIX": "featx.io.featfile",
    "FeatureFileStream": "featx.io.featstream",
    "IMAGE_EXTENSIONS": "featx.io.discovery",
    "ImageSource": "featx.io.discovery",
    "aligned_buffer": "featx.io.atomic",
    "decode_name": "featx.io.discovery",
    "discover": "featx.io.discovery",
    "feature_file_layout": "featx.io.featfile",
    "find_images": "featx.io.discovery",
    "is_temp_name": "featx.io.atomic",
    "load_features": "featx.io.featfile",
    "load_image": "featx.io.images",
    "name_bytes": "featx.io.discovery",
    "orient": "featx.io.images",
    "printable_name": "featx.io.discovery",
    "probe_image": "featx.io.images",
    "read_feature_metadata": "featx.io.featfile",
    "read_file_list": "featx.io.discovery",
    "save_features": "featx.io.featfile",
    "serialize_features": "featx.io.featfile",
    "temp_name": "featx.io.atomic",
    "write_atomic": "featx.io.atomic",
    "write_atomic_buffer": "featx.io.atomic",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
