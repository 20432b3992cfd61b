"""A feature file written piece by piece: maps too large to hold in memory go to disk tile by tile.

The safetensors header depends only on the names, dtypes and shapes of the tensors
(:func:`featx.io.featfile.feature_file_layout`), so it is written first and every tile of every map
is then written straight into its place (``C x H x W`` order: one write per channel and row of
the tile, or per channel when the tile spans the full width). The file is built under a new hidden
temporary name (:func:`featx.io.atomic.create_temp`: unpredictable, created exclusively), fsynced, and
renamed only once the regions written cover every value of every tensor exactly once (coverage is
tracked region by region, not counted): a reader never sees a partial file, a killed run leaves
only a temporary that the next run removes, and a power loss cannot leave a published name over
unwritten (zero) data. The bytes equal those of :func:`featx.io.featfile.save_features` for the
same tensors.
"""

from __future__ import annotations

import errno
import math
import os
import sys
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Optional, Union

import numpy as np
import torch

from featx.errors import FeatxTypeError, FeatxValueError
from featx.io.atomic import create_temp
from featx.io.featfile import feature_file_layout

__all__ = ["FeatureFileStream"]

PathLike = Union[str, "os.PathLike[str]"]


class FeatureFileStream:
    """Write a feature file of 3-D maps ``(C, H, W)`` region by region, then publish it atomically.

    Args:
        path: the destination; its folder must exist.
        specs: ``{name: (dtype, (C, H, W))}`` of every tensor the file will hold.
        metadata: ``{str: str}`` for the header's ``__metadata__``.
        fsync: flush the data to disk before the rename (as :func:`featx.io.featfile.save_features`).

    Raises:
        TypeError: a shape that is not ``(C, H, W)``, or an unsupported dtype.
        OSError: the temporary file cannot be created or its space reserved (disk full, a file
            size limit); nothing is left behind, and a previous file at ``path`` is untouched.

    Example:
        >>> import tempfile, os
        >>> from featx.io.featfile import load_features
        >>> maps = torch.arange(24.0).view(2, 3, 4)
        >>> with tempfile.TemporaryDirectory() as d:
        ...     path = os.path.join(d, "x.safetensors")
        ...     with FeatureFileStream(path, {"a": (torch.float32, (2, 3, 4))}, {"k": "v"}) as stream:
        ...         stream.write_region("a", maps[:, :2], top=0, left=0)
        ...         stream.write_region("a", maps[:, 2:], top=2, left=0)
        ...         stream.commit()
        ...     tensors, meta = load_features(path)
        >>> bool(torch.equal(tensors["a"], maps)), meta
        (True, {'k': 'v'})
    """

    def __init__(
        self,
        path: PathLike,
        specs: Mapping[str, tuple[torch.dtype, Sequence[int]]],
        metadata: Mapping[str, str],
        *,
        fsync: bool = True,
    ) -> None:
        for name, (_, shape) in specs.items():
            if len(shape) != 3:
                raise FeatxTypeError(f"{name!r}: streamed tensors are (C, H, W) maps, got shape {tuple(shape)}")
        self.path = os.fspath(path)
        self.specs = {name: (dtype, tuple(int(n) for n in shape)) for name, (dtype, shape) in specs.items()}
        head, offsets = feature_file_layout(self.specs, metadata)
        self._starts = {name: len(head) + begin for name, (begin, _) in offsets.items()}
        self._written = {name: _Coverage() for name in self.specs}
        self.nbytes = len(head) + max((end for _, end in offsets.values()), default=0)
        self.fsync = fsync
        folder, name = os.path.split(self.path)
        self.temp: Optional[str]
        self._fd, self.temp = create_temp(folder or ".", name)
        try:
            _reserve(self._fd, self.nbytes)  # a full disk fails here, before any tile is computed
            _pwrite_all(self._fd, memoryview(head), 0)
        except BaseException:
            self.abort()
            raise

    def write_region(self, name: str, values: torch.Tensor, *, top: int, left: int) -> None:
        """Write ``values`` (``(C, h, w)``) into rows ``top:top+h`` and columns ``left:left+w`` of ``name``.

        Raises:
            ValueError: an unknown name, or a region outside the map, or ``values`` with another
                channel count or dtype than declared (nothing is written), or a region that
                overlaps one written before (the stream is aborted: nothing will be published).
        """
        if self.temp is None:
            raise FeatxValueError(f"{self.path}: the stream is already committed or aborted")
        if name not in self.specs:
            raise FeatxValueError(f"unknown tensor {name!r}; this file holds {sorted(self.specs)}")
        dtype, (channels, height, width) = self.specs[name]
        if values.dim() != 3 or values.shape[0] != channels or values.dtype != dtype:
            raise FeatxValueError(
                f"{name!r}: expected ({channels}, h, w) values of {dtype}, got {tuple(values.shape)} of {values.dtype}"
            )
        rows, cols = values.shape[1], values.shape[2]
        if top < 0 or left < 0 or top + rows > height or left + cols > width:
            raise FeatxValueError(
                f"{name!r}: region rows {top}:{top + rows}, columns {left}:{left + cols} is outside its {height}x{width} map"
            )
        if rows == 0 or cols == 0:  # an empty piece (a tile whose share of a deep map is empty)
            return
        if self._written[name].overlaps(top, top + rows, left, left + cols):
            self.abort()
            raise FeatxValueError(
                f"{self.path}: {name!r} rows {top}:{top + rows}, columns {left}:{left + cols} overlap a region "
                "written before (each value must be written exactly once); nothing was published"
            )
        data = values.detach().to("cpu").contiguous()
        if sys.byteorder != "little" and data.element_size() > 1:  # pragma: no cover - big-endian hosts
            data = torch.from_numpy(data.numpy().byteswap())
        flat = data.view(torch.uint8).numpy().data.cast("B")  # C x h x (w * itemsize) bytes
        item = data.element_size()
        row_bytes, piece = width * item, cols * item
        start, fd = self._starts[name], self._fd
        for channel in range(channels):
            base = start + (channel * height + top) * row_bytes + left * item
            first = channel * rows * piece
            if cols == width:  # the rows of this channel are contiguous in the file
                _pwrite_all(fd, flat[first : first + rows * piece], base)
                continue
            for row in range(rows):
                at = first + row * piece
                if os.pwrite(fd, flat[at : at + piece], base + row * row_bytes) != piece:
                    _pwrite_all(fd, flat[at : at + piece], base + row * row_bytes)  # a short write: finish it
        self._written[name].add(top, top + rows, left, left + cols)

    def commit(self) -> None:
        """Flush (``fsync``) and rename the file into place.

        Raises:
            ValueError: the regions written do not cover every map (regions never overlap, see
                :meth:`write_region`); the temporary file is removed.
            OSError: the data cannot be flushed or the file renamed; the temporary file is
                removed and a previous file at ``path`` is untouched.
        """
        if self.temp is None:
            raise FeatxValueError(f"{self.path}: the stream is already committed or aborted")
        missing = {}
        for name, (_, shape) in self.specs.items():
            needed = math.prod(shape[1:])
            if self._written[name].area != needed:
                missing[name] = (needed - self._written[name].area, needed)
        if missing:
            self.abort()
            counts = ", ".join(f"{name}: {left} of {total} positions" for name, (left, total) in sorted(missing.items()))
            raise FeatxValueError(
                f"{self.path}: the regions written do not cover the maps of {sorted(missing)} "
                f"({counts} never written); nothing was published"
            )
        try:
            if self.fsync:
                os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
            os.replace(self.temp, self.path)
            self.temp = None
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Close and remove the temporary file (nothing is published); safe to call twice."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self.temp is not None:
            try:
                os.unlink(self.temp)
            except FileNotFoundError:
                pass
            self.temp = None

    def __enter__(self) -> FeatureFileStream:
        return self

    def __exit__(
        self, kind: Optional[type[BaseException]], error: Optional[BaseException], trace: Optional[TracebackType]
    ) -> None:
        self.abort()  # a committed stream has nothing left to remove


class _Coverage:
    """The disjoint rectangles ``[top, bottom) x [left, right)`` written into one map."""

    def __init__(self) -> None:
        self._boxes = np.empty((16, 4), dtype=np.int64)
        self._count = 0
        self.area = 0

    def overlaps(self, top: int, bottom: int, left: int, right: int) -> bool:
        """Whether the rectangle shares a position with one added before."""
        boxes = self._boxes[: self._count]
        hits = (boxes[:, 0] < bottom) & (boxes[:, 1] > top) & (boxes[:, 2] < right) & (boxes[:, 3] > left)
        return bool(hits.any())

    def add(self, top: int, bottom: int, left: int, right: int) -> None:
        if self._count == len(self._boxes):
            self._boxes = np.concatenate([self._boxes, np.empty_like(self._boxes)])
        self._boxes[self._count] = (top, bottom, left, right)
        self._count += 1
        self.area += (bottom - top) * (right - left)


def _reserve(fd: int, nbytes: int) -> None:
    """Allocate the file's blocks up front where the filesystem can (else only set its size)."""
    fallocate = getattr(os, "posix_fallocate", None)
    if fallocate is not None and nbytes > 0:
        try:
            fallocate(fd, 0, nbytes)
            return
        except OSError as error:
            if error.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise
    os.ftruncate(fd, nbytes)


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    done = 0
    while done < len(data):
        done += os.pwrite(fd, data[done:], offset + done)
