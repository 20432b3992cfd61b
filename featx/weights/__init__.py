"""Known checkpoints (VGG, AlexNet, ResNet, ConvNeXt, SqueezeNet and DINOv2 backbones, the metrics'
learned layers), and how featx finds, verifies, caches and strictly loads them.

Loading never opens a network connection; :func:`download` (behind ``featx weights download``) is
the only network code in featx. One job per module:

- :mod:`~featx.weights.registry`: the known checkpoints, one enum per family (:class:`VGGWeights`,
  :class:`ResNetWeights`, ..., :class:`MetricWeights`) and name lookup (:func:`member_of`).
- :mod:`~featx.weights.catalog_torchvision`, :mod:`~featx.weights.catalog_dinov2`,
  :mod:`~featx.weights.catalog_metrics`: their URLs, byte sizes and sha256, with sources.
- :mod:`~featx.weights.info`: :class:`CheckpointInfo` (one entry) and :class:`Verification` (the
  states a check reaches).
- :mod:`~featx.weights.locations`: where files live (:func:`featx_home`, :func:`search_dirs`,
  :func:`find`, :func:`locate`, the copies installed packages ship) and the not-found error.
- :mod:`~featx.weights.missing`: every missing file of a run in one error (:func:`gather_missing`)
  and its message in Python's or a command line's words (:func:`missing_message`).
- :mod:`~featx.weights.checkpoint`: reading files safely (:func:`read_checkpoint`) and hashing
  them (:func:`sha256_file`).
- :mod:`~featx.weights.index`: the sha256 index, keyed on size, mtime, ctime, inode and device.
- :mod:`~featx.weights.verification`: size and full-sha256 checks (:func:`check_file`,
  :func:`verify`) and ``FEATX_REQUIRE_VERIFIED``.
- :mod:`~featx.weights.matching`: strict selection of the kept layers' keys, shapes and values.
- :mod:`~featx.weights.cache`: the features-only cache (:func:`clear_cache`).
- :mod:`~featx.weights.loading`: the ``weights`` argument and :func:`load_weights`.
- :mod:`~featx.weights.learned`: the learned layers of the metrics (:func:`load_learned`, LPIPS's
  ``lin_weights``).
- :mod:`~featx.weights.fetch`: :func:`download` (the only network code).
"""

from __future__ import annotations

from featx.errors import MissingWeights
from featx.weights._common import PathLike
from featx.weights.cache import clear_cache
from featx.weights.checkpoint import read_checkpoint, sha256_file
from featx.weights.fetch import download
from featx.weights.info import CheckpointInfo, ShippedCopy, Verification, format_size
from featx.weights.learned import load_learned
from featx.weights.loading import LoadedWeights, load_weights
from featx.weights.locations import (
    featx_home,
    find,
    locate,
    missing_checkpoint_error,
    search_dirs,
    shipped_copy,
)
from featx.weights.missing import combine_missing, gather_missing, missing_message
from featx.weights.registry import (
    BACKBONE_ARCHS,
    AlexNetWeights,
    ConvNeXtWeights,
    DINOv2Weights,
    KnownCheckpoint,
    MetricWeights,
    MetricWeightsInfo,
    ResNetWeights,
    SqueezeNetWeights,
    VGGWeights,
    WeightsSpec,
    default_backbone,
    from_torchvision_name,
    known_by_file_name,
    known_by_sha256,
    known_checkpoints,
    member_of,
)
from featx.weights.verification import (
    REQUIRE_VERIFIED_ENV,
    VERIFY_MODES,
    FileCheck,
    check_file,
    checkpoint_status,
    verify,
    verify_mode,
)

__all__ = [
    "BACKBONE_ARCHS",
    "REQUIRE_VERIFIED_ENV",
    "VERIFY_MODES",
    "AlexNetWeights",
    "CheckpointInfo",
    "ConvNeXtWeights",
    "DINOv2Weights",
    "FileCheck",
    "KnownCheckpoint",
    "LoadedWeights",
    "MetricWeights",
    "MetricWeightsInfo",
    "MissingWeights",
    "PathLike",
    "ResNetWeights",
    "ShippedCopy",
    "SqueezeNetWeights",
    "VGGWeights",
    "Verification",
    "WeightsSpec",
    "check_file",
    "checkpoint_status",
    "clear_cache",
    "combine_missing",
    "default_backbone",
    "download",
    "featx_home",
    "find",
    "format_size",
    "from_torchvision_name",
    "gather_missing",
    "known_by_file_name",
    "known_by_sha256",
    "known_checkpoints",
    "load_learned",
    "load_weights",
    "locate",
    "member_of",
    "missing_checkpoint_error",
    "missing_message",
    "read_checkpoint",
    "search_dirs",
    "sha256_file",
    "shipped_copy",
    "verify",
    "verify_mode",
]
