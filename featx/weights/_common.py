"""Names the modules of :mod:`featx.weights` share: path types and the I/O chunk size."""

from __future__ import annotations

import os
from typing import Union

__all__ = ["CHUNK", "PathLike"]

PathLike = Union[str, "os.PathLike[str]"]

CHUNK = 1 << 20  # hash and download in 1 MiB chunks
