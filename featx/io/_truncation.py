"""Truncated images that Pillow would still decode: strict loading, PNG row counting, JPEG data checks.

Pillow fills the missing part of a truncated file (black rows, grey blocks) instead of failing when
``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` is true, which other libraries set globally; a PNG whose
compressed stream ends early but cleanly (fewer rows than its header says, then ``IEND``) decodes
with black rows even when it is false; and so does a JPEG cut short and closed with an end-of-image
marker (grey blocks: libjpeg only warns, and Pillow does not pass libjpeg's warnings on).
:func:`featx.io.pillow_settings.strict_loading` forces the flag off while featx decodes, :func:`png_missing_rows` counts a
PNG's decompressed bytes against its header, and :func:`jpeg_missing_data` walks a JPEG's
entropy-coded data with libjpeg-turbo (``simplejpeg``), turning its data warnings into a refusal.
Nothing here imports torch.
"""

from __future__ import annotations

import struct
import zlib
from typing import Optional

import simplejpeg  # type: ignore[import-untyped]

__all__ = ["jpeg_missing_data", "png_missing_rows"]

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
# libjpeg's warnings (jerror.h) that mean pixel data is missing or unreadable; the decoder goes on
# past each with grey or garbled blocks. Every other message (an unsupported colour conversion, an
# unknown JFIF revision, ...) leaves the file to Pillow's judgement.
_JPEG_WHY = {
    "Corrupt JPEG data: premature end of data segment": "the JPEG's compressed data ends before its last block, "
    "and the missing blocks would come out grey",
    "Premature end of JPEG file": "the file ends before the JPEG's end marker",
}
_JPEG_CORRUPT = ("Corrupt JPEG data: bad Huffman code", "Corrupt JPEG data: bad arithmetic code")
_JPEG_CORRUPT_PREFIX = "Corrupt JPEG data: found marker "  # ... instead of RSTn: restart data lost
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


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


def jpeg_missing_data(path: str) -> Optional[str]:
    """Why a JPEG's compressed pixel data is cut short or corrupt, or ``None`` if libjpeg reads it whole.

    The file is decoded by libjpeg-turbo at 1/8 scale (every block's coefficients are still
    entropy-decoded, so the whole compressed stream is walked; only the inverse DCT shrinks), with
    warnings turned into errors. A premature end of the data or of the file, a bad Huffman or
    arithmetic code, or lost restart data is the refusal; any other failure (a colour space
    libjpeg-turbo cannot convert, a file it cannot read at all) gives ``None``, and the decoder
    judges the file. A progressive or multi-scan JPEG cut exactly between two scans is not caught:
    libjpeg decodes the scans it has without a warning, as it does for a file meant to end there.

    Example:
        >>> import io, tempfile, os
        >>> from PIL import Image
        >>> data = io.BytesIO()
        >>> Image.effect_noise((64, 64), 60).convert("RGB").save(data, "JPEG")
        >>> with tempfile.TemporaryDirectory() as d:
        ...     path = os.path.join(d, "a.jpg")
        ...     _ = open(path, "wb").write(data.getvalue())
        ...     whole = jpeg_missing_data(path)
        ...     _ = open(path, "wb").write(data.getvalue()[: len(data.getvalue()) // 2] + b"\\xff\\xd9")
        ...     cut = jpeg_missing_data(path)
        >>> whole is None, cut.split(",")[0]
        (True, "truncated or corrupt image data (the JPEG's compressed data ends before its last block")
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read()
        _, _, colorspace, _ = simplejpeg.decode_jpeg_header(data, strict=False)
        target = "CMYK" if colorspace in ("CMYK", "YCCK") else "GRAY"  # the cheapest output libjpeg can give
        simplejpeg.decode_jpeg(data, colorspace=target, min_factor=8, strict=True)
    except Exception as error:  # simplejpeg raises ValueError with libjpeg's message
        message = str(error).strip()
        if message in _JPEG_WHY:
            why = _JPEG_WHY[message]
        elif message in _JPEG_CORRUPT or message.startswith(_JPEG_CORRUPT_PREFIX):
            why = "the JPEG's compressed data is corrupt"
        else:
            return None
        return f"truncated or corrupt image data ({why}; libjpeg: {message})"
    return None
