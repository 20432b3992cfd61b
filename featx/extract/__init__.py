"""Batch feature extraction (the engine behind ``featx extract``): folders of images in, one
safetensors feature file per image out, resumable and shardable with torchrun.

One job per module: :mod:`~featx.extract.options` (:class:`ExtractOptions` and the named choices,
torch-free), :mod:`~featx.extract.plan` (sources, up-to-date checks, batches, manifest records),
:mod:`~featx.extract.writer` (the writer thread), :mod:`~featx.extract.decoding` (decoder
workers and their isolated retry), :mod:`~featx.extract.lock` and :mod:`~featx.extract.owner`
(the output folder's lock and ownership record), :mod:`~featx.extract.outfolder` (the output
folder's setup, undone when refused), :mod:`~featx.extract.distributed` (torchrun
ranks), :mod:`~featx.extract.descriptors` (per-tap descriptors), :mod:`~featx.extract.engine`
(:func:`extract_features`), :mod:`~featx.extract.summary` (:class:`ExtractSummary`, the merged
manifest) and :mod:`~featx.extract.samples` (the scikit-image demo pictures).

Names are imported on first use (PEP 562), so importing this package, or its torch-free
:mod:`~featx.extract.options`, does not import torch.

Example:
    >>> from featx.extract import DESCRIPTORS, ExtractOptions
    >>> DESCRIPTORS
    ('none', 'gap', 'gmp', 'gram')
    >>> ExtractOptions(reduce="gram", batch_size=4).reduce
    'gram'
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from featx._lazy import lazy_exports

if TYPE_CHECKING:
    from featx.extract.descriptors import reduce_features as reduce_features
    from featx.extract.engine import extract_features as extract_features
    from featx.extract.options import DEFAULT_TAPS as DEFAULT_TAPS
    from featx.extract.options import DESCRIPTORS as DESCRIPTORS
    from featx.extract.options import DTYPES as DTYPES
    from featx.extract.options import ExtractOptions as ExtractOptions
    from featx.extract.plan import FORMAT as FORMAT
    from featx.extract.plan import MANIFEST as MANIFEST
    from featx.extract.plan import feature_path as feature_path
    from featx.extract.plan import make_batches as make_batches
    from featx.extract.samples import SAMPLE_IMAGES as SAMPLE_IMAGES
    from featx.extract.samples import prepare_sample_images as prepare_sample_images
    from featx.extract.samples import write_sample_images as write_sample_images
    from featx.extract.summary import SUMMARY as SUMMARY
    from featx.extract.summary import ExtractSummary as ExtractSummary

# public name -> defining module
_EXPORTS = {
    "DEFAULT_TAPS": "featx.extract.options",
    "DESCRIPTORS": "featx.extract.options",
    "DTYPES": "featx.extract.options",
    "ExtractOptions": "featx.extract.options",
    "ExtractSummary": "featx.extract.summary",
    "FORMAT": "featx.extract.plan",
    "MANIFEST": "featx.extract.plan",
    "SAMPLE_IMAGES": "featx.extract.samples",
    "SUMMARY": "featx.extract.summary",
    "extract_features": "featx.extract.engine",
    "feature_path": "featx.extract.plan",
    "make_batches": "featx.extract.plan",
    "prepare_sample_images": "featx.extract.samples",
    "reduce_features": "featx.extract.descriptors",
    "write_sample_images": "featx.extract.samples",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
