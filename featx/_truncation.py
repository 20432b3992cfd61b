"""Truncated images that Pillow would still decode: strict loading, and PNG row counting.

Pillow fills the missing part of a truncated file (black rows, grey blocks) instead of failing when
``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` is true, which other libraries set globally; and a PNG whose
compressed stream ends early but cleanly (fewer rows than its header says, then ``IEND``) decodes
with black rows even when it is false. :func:`strict_loading` forces the flag off while featx
decodes, and :func:`png_missing_rows` counts a PNG's decompressed bytes against its header.
Nothing here imports torch.
"""

from __future__ import annotations

import contextlib
import struct
import zlib
from collections.abc import Iterator
from typing import Optional

from PIL import ImageFile

__all__ = ["png_missing_rows", "strict_loading"]

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


@contextlib.contextmanager
def strict_loading() -> Iterator[None]:
    """Decode with ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` off (restored afterwards), so a
    truncated file raises instead of coming out padded."""
    saved = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = saved


def _expected_bytes(width: int, height: int, depth: int, color: int, interlaced: bool) -> int:
    bits = depth * _CHANNELS.get(color, 4)
    if not interlaced:
        return height * (1 + (width * bits + 7) // 8)
    total = 0
    for x0, y0, dx, dy in _ADAM7:
        cols, rows = (width - x0 + dx - 1) // dx, (height - y0 + dy - 1) // dy
        if cols > 0 and rows > 0:
            total += rows * (1 + (cols * bits + 7) // 8)
    return total


def png_missing_rows(path: str) -> Optional[str]:
    """Why a PNG's pixel data is shorter than its header promises, or ``None`` if it is complete.

    The ``IDAT`` stream is inflated (in pieces, nothing kept) and its length compared with what the
    header's size, bit depth, colour type and interlacing need. Files that are not PNGs, or whose
    chunks cannot be walked, give ``None`` (the decoder judges those).

    Example:
        >>> import tempfile, os
        >>> from PIL import Image
        >>> with tempfile.TemporaryDirectory() as d:
        ...     Image.new("RGB", (4, 3)).save(os.path.join(d, "a.png"))
        ...     png_missing_rows(os.path.join(d, "a.png")) is None
        True
    """
    with open(path, "rb") as handle:
        if handle.read(8) != _SIGNATURE:
            return None
        inflater = zlib.decompressobj()
        produced, header = 0, None
        while True:
            head = handle.read(8)
            if len(head) < 8:
                break
            length, kind = struct.unpack(">I4s", head)
            data = handle.read(length)
            handle.seek(4, 1)  # CRC (Pillow checks it)
            if kind == b"IHDR" and len(data) >= 13:
                header = struct.unpack(">IIBBBBB", data[:13])
            elif kind == b"IDAT":
                try:
                    produced += len(inflater.decompress(data))
                    while inflater.unconsumed_tail:
                        produced += len(inflater.decompress(inflater.unconsumed_tail))
                except zlib.error:
                    return None
            elif kind == b"IEND":
                break
    if header is None:
        return None
    width, height, depth, color, _, _, interlace = header
    expected = _expected_bytes(width, height, depth, color, interlace == 1)
    if produced >= expected:
        return None
    row = 1 + (width * depth * _CHANNELS.get(color, 4) + 7) // 8
    have = f"about {produced // row} of {height} rows" if interlace != 1 else f"{produced} of {expected} bytes"
    return f"truncated or corrupt image data (the PNG holds {have} of pixel data; the rest would come out black)"
