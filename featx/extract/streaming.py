"""Images whose feature maps do not fit the memory budget: computed in exact tiles
(:func:`featx.extract.tiling.tile_cores`) and streamed into their feature file tile by tile
(:class:`featx.io.featstream.FeatureFileStream`), so a 100-megapixel image is extracted with
``reduce="none"`` in the memory of one tile. The file is byte-for-byte what an untiled pass
would write, up to the float rounding of tiling (relative error < 1e-5 in fp32)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from featx.extract.options import ManifestRecord
from featx.extract.plan import manifest_record
from featx.extract.tiling import tap_sizes, tile_cores
from featx.extract.writer import write_failure
from featx.io.atomic import make_folders
from featx.io.discovery import ImageSource
from featx.io.featstream import FeatureFileStream

__all__ = ["compute_failure", "stream_tiled"]


def stream_tiled(
    extractor: Any,
    image: torch.Tensor,
    *,
    tile: int,
    bands: bool,
    path: Path,
    metadata: dict[str, str],
    store: torch.dtype,
    fsync: bool,
    source: ImageSource,
) -> ManifestRecord:
    """Extract ``image`` (``(1, 3, H, W)``) in tiles of ``tile`` pixels straight into ``path``.

    Each tile's maps are converted to ``store`` and written into their place: with ``bands``, the
    tiles of one row are first gathered into a band of full-width rows (one write per channel;
    the band must fit the budget, see :func:`featx.extract.budget.streamed_bytes`), else each tile
    is written as it comes (one write per channel and row). The file is published atomically once
    every value is written.

    Returns:
        The image's manifest record: ``"ok"`` with its shapes, or ``"error"`` naming the file when
        it cannot be written (disk full; nothing is left at ``path`` or under a temporary name),
        or naming the failure when the features cannot be computed (any other exception: one
        image's failure never ends the run; a previous output is kept).
    """
    sizes = tap_sizes(extractor, image.shape[2], image.shape[3])
    channels = {info.name: info.channels for info in extractor.feature_info}
    specs = {name: (store, (channels[name], *sizes[name])) for name in extractor.taps}
    record = manifest_record(source, "ok", shapes={name: list(shape) for name, (_, shape) in specs.items()})
    try:
        output = path.parents[len(Path(source.key).parts) - 1]  # the key's folders lie below the output folder
        make_folders(output, path.parent)  # never through a symlink planted in the output folder
        with FeatureFileStream(path, specs, metadata, fsync=fsync) as stream:
            band: dict[str, tuple[int, torch.Tensor]] = {}  # tap -> (top row, C x rows x W maps)
            for name, core, (top, bottom, left, right) in tile_cores(extractor, image, tile=tile):
                if not bands:
                    stream.write_region(name, core[0].to(store).contiguous(), top=top, left=left)
                    continue
                if name not in band or band[name][0] != top:  # a new row of tiles starts
                    if name in band:
                        stream.write_region(name, band[name][1], top=band[name][0], left=0)
                    width = specs[name][1][2]
                    band[name] = (top, torch.empty((channels[name], bottom - top, width), dtype=store))
                band[name][1][:, :, left:right].copy_(core[0])  # to the host, in C x H x W order
            for name, (top, rows) in band.items():
                stream.write_region(name, rows, top=top, left=0)
            stream.commit()
    except OSError as error:
        return write_failure(record, path, error)
    except Exception as error:  # any other failure is this image's, never the run's
        return compute_failure(record, path, error)
    return record


def compute_failure(record: ManifestRecord, path: Path, error: BaseException) -> ManifestRecord:
    """The ``"error"`` record of an image whose extraction failed for a reason other than writing
    (a tile that cannot be computed, a region the stream refuses, memory exhausted): nothing was
    published, and its previous output, if any, is kept (said as :func:`write_failure` says it).

    Example:
        >>> compute_failure({"path": "a.png", "source": "/d/a.png", "status": "ok", "output": "a.png.safetensors"},
        ...                 Path("/o/a.png.safetensors"), MemoryError("out of memory"))["error"]
        'cannot extract features (MemoryError: out of memory)'
    """
    failed = write_failure(record, path, error)
    kept = "; its previous output is kept" if "kept" in failed else ""
    failed["error"] = f"cannot extract features ({type(error).__name__}: {error}){kept}"
    return failed
