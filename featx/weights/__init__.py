"""Known checkpoints (VGG and AlexNet backbones, LPIPS's learned layers), and how featx finds,
hashes, caches and strictly loads them.

Loading never opens a network connection; :func:`download` (behind ``featx weights download``) is
the only network code in featx. One job per module:

- :mod:`~featx.weights.registry`: the known checkpoints (:class:`VGGWeights`, :class:`MetricWeights`,
  :func:`known_checkpoints`).
- :mod:`~featx.weights.locations`: where files live (:func:`featx_home`, :func:`search_dirs`,
  :func:`find`, :func:`locate`) and the not-found error.
- :mod:`~featx.weights.checkpoint`: reading files safely (:func:`read_checkpoint`) and hashing
  them (:func:`sha256_file`).
- :mod:`~featx.weights.index`: the sha256 index, keyed on size, mtime, ctime, inode and device.
- :mod:`~featx.weights.matching`: strict selection of the kept layers' keys, shapes and values.
- :mod:`~featx.weights.cache`: the features-only cache (:func:`clear_cache`).
- :mod:`~featx.weights.loading`: the ``weights`` argument and :func:`load_weights`.
- :mod:`~featx.weights.learned`: the learned layers of the metrics (:func:`load_learned`, LPIPS's
  ``lin_weights``).
- :mod:`~featx.weights.fetch`: :func:`download` and :func:`verify` (the only network code).
"""

from __future__ import annotations

from featx.weights._common import PathLike
from featx.weights.cache import clear_cache
from featx.weights.checkpoint import read_checkpoint, sha256_file
from featx.weights.fetch import download, verify
from featx.weights.learned import load_learned
from featx.weights.loading import REQUIRE_VERIFIED_ENV, VERIFY_MODES, LoadedWeights, load_weights, verify_mode
from featx.weights.locations import featx_home, find, locate, missing_checkpoint_error, search_dirs
from featx.weights.registry import (
    CheckpointInfo,
    KnownCheckpoint,
    MetricWeights,
    MetricWeightsInfo,
    VGGWeights,
    WeightsSpec,
    default_backbone,
    known_by_file_name,
    known_checkpoints,
)

__all__ = [
    "REQUIRE_VERIFIED_ENV",
    "VERIFY_MODES",
    "CheckpointInfo",
    "KnownCheckpoint",
    "LoadedWeights",
    "MetricWeights",
    "MetricWeightsInfo",
    "PathLike",
    "VGGWeights",
    "WeightsSpec",
    "clear_cache",
    "default_backbone",
    "download",
    "featx_home",
    "find",
    "known_by_file_name",
    "known_checkpoints",
    "load_learned",
    "load_weights",
    "locate",
    "missing_checkpoint_error",
    "read_checkpoint",
    "search_dirs",
    "sha256_file",
    "verify",
    "verify_mode",
]
