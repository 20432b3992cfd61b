"""Image decoding rules: :func:`load_image` (pixels to an RGB tensor) and :func:`probe_image` (header checks).

The rules, the same for the library, ``featx extract`` and ``featx show``:

- Formats: anything Pillow opens (which files folder discovery keeps is :mod:`featx.io.discovery`'s
  job). Multi-frame files (TIFF pages, animated WebP) use the first frame.
- EXIF orientation is applied (``PIL.ImageOps.exif_transpose``; the TIFF orientation tag for
  16-bit colour TIFFs), so the tensor is upright as a viewer shows it.
- Bit depth: 8-bit values are divided by 255 and 16-bit values by 65535, giving float32 in
  ``[0, 1]``. 16-bit colour PNGs are read at full precision (Pillow alone keeps only the high
  byte); 16-bit colour TIFFs are read with ``tifffile``. 32-bit integer images are accepted when
  their values fit 16 bits; floating point images are refused (no defined range).
- Channels: gray (``L``, ``1``, 16-bit gray) is repeated to RGB; palette images are converted to
  RGB; CMYK and YCbCr are converted to RGB by Pillow (no ICC colour management; ICC profiles are
  ignored everywhere). Images with an alpha channel (``RGBA``, ``LA``, palette with transparency)
  are refused unless ``alpha="drop"`` (CLI ``--alpha drop``), which discards alpha without
  compositing. Other channel counts (e.g. a 2-channel TIFF without alpha) are refused. Both rules
  are decided from the header, so :func:`probe_image` applies them too (``featx extract --dry-run``).
- Size: images above ``max_pixels`` pixels (default ``PIL.Image.MAX_IMAGE_PIXELS``, about 89.5
  megapixels) are refused from their header, before any pixel is decoded, with featx's limit in the
  reason. Pillow's own check is lifted while featx parses a header, and while a file decodes under
  a ``max_pixels`` above Pillow's limit (:mod:`featx.io.pillow_settings`, safe when threads decode
  at once), so an explicit ``max_pixels`` above Pillow's limit (a trusted 100-megapixel scan) opens
  that file only, TIFFs included, and Pillow never warns instead of refusing.
- Truncated files are refused, never padded: decoding runs with ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES``
  off whatever another library set it to, a PNG whose compressed rows end early (which Pillow
  decodes with black rows) is caught by counting its pixel data against its header, and a JPEG
  whose compressed data ends early or is corrupt (which Pillow decodes with grey blocks) by
  libjpeg-turbo's data warnings (:func:`featx.io._truncation.jpeg_missing_data`).
- Every failure raises :class:`~featx.errors.ImageDecodeError` (a ``ValueError``) with a one-line reason.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Callable, Iterator
from typing import Union

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from featx._checks import check_choice, check_int
from featx._choices import ALPHA_MODES
from featx.errors import ImageDecodeError
from featx.io._truncation import jpeg_missing_data, png_missing_rows
from featx.io.pillow_settings import open_header, strict_loading

__all__ = ["ALPHA_MODES", "load_image", "load_pixels", "orient", "pixels_to_tensor", "probe_image"]

PathLike = Union[str, "os.PathLike[str]"]

_ORIENTATION_TAG = 0x0112
_TIFF_SAMPLES_PER_PIXEL, _TIFF_BITS_PER_SAMPLE, _TIFF_EXTRA_SAMPLES = 277, 258, 338
_ALPHA_MODES_PIL = {"LA": "L", "La": "L", "PA": "RGB", "RGBA": "RGB", "RGBa": "RGB"}
_GRAY16_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def _bomb_reason(width: int, height: int, limit: int) -> str:
    return (
        f"image is {width}x{height} = {width * height} pixels, above the limit of {limit} pixels "
        "(decompression-bomb protection); if the file is trusted raise max_pixels (--max-pixels) "
        "or PIL.Image.MAX_IMAGE_PIXELS"
    )


def _describe(error: BaseException) -> str:
    """A one-line reason for a Pillow/OS failure, without repeating the path."""
    if isinstance(error, FileNotFoundError):
        return "file not found"
    if isinstance(error, IsADirectoryError):
        return "is a folder, not an image file"
    if isinstance(error, PermissionError):
        return "permission denied"
    if isinstance(error, UnidentifiedImageError):
        return "not a readable image: Pillow cannot identify the file format (wrong extension or corrupt header)"
    text = str(error).replace("\n", " ").strip()
    if "truncated" in text.lower() or isinstance(error, (EOFError, struct.error, SyntaxError)):
        return f"truncated or corrupt image data ({type(error).__name__}: {text})"
    return f"cannot decode ({type(error).__name__}: {text})"


@contextlib.contextmanager
def _open(path: str, max_pixels: Union[int, None]) -> Iterator[tuple[ImageFile.ImageFile, Union[int, None]]]:
    """Open the header (:func:`~featx.io.pillow_settings.open_header`) and refuse an image above
    featx's limit before any pixel is decoded; gives ``(image, limit)``."""
    with open_header(path, max_pixels) as (image, limit):
        width, height = image.size
        if limit is not None and width * height > limit:
            raise ImageDecodeError(path, _bomb_reason(width, height, limit))
        yield image, limit


def probe_image(path: PathLike, *, alpha: str = "error", max_pixels: Union[int, None] = None) -> tuple[int, int]:
    """Read an image's stored ``(height, width)`` from its header, without decoding pixels.

    The size is as stored in the file, before EXIF orientation is applied. The header is also
    checked against the rules of :func:`load_image` that it decides, with the same reasons: an
    alpha channel (``RGBA``, ``LA``, ``PA``, ``RGBa``, ``La``, palette with transparency, 16-bit
    RGBA PNG, TIFF with an alpha extra sample) is refused unless ``alpha="drop"``, and so are
    TIFF channel counts that :func:`load_image` refuses. So a plan made from headers (``featx
    extract --dry-run``) fails the images the real run fails on these grounds.

    Args:
        path: image file.
        alpha: ``"error"`` refuses images with an alpha channel; ``"drop"`` accepts them.
        max_pixels: refuse images with more pixels than this (as for :func:`load_image`).

    Returns:
        ``(height, width)`` as stored.

    Raises:
        ImageDecodeError: unreadable header, empty file, above the pixel limit, alpha channel
            without ``alpha="drop"``, or unsupported TIFF channel count.
        ValueError: unknown ``alpha`` or bad ``max_pixels``.

    Example:
        >>> import tempfile, os
        >>> from PIL import Image
        >>> with tempfile.TemporaryDirectory() as d:
        ...     Image.new("RGB", (20, 10)).save(os.path.join(d, "a.png"))
        ...     probe_image(os.path.join(d, "a.png"))
        (10, 20)
    """
    check_choice("alpha", alpha, ALPHA_MODES)
    if max_pixels is not None:
        check_int("max_pixels", max_pixels)
    path = os.fspath(path)
    try:
        with _open(path, max_pixels) as (image, _):
            width, height = image.size
            _check_alpha(image, path, alpha)
    except ImageDecodeError:
        raise
    except Exception as error:  # any Pillow/OS failure is a per-file decode error
        raise ImageDecodeError(path, _describe(error)) from error
    return height, width


def orient(array: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1-8) to an ``(H, W, ...)`` array, as ``ImageOps.exif_transpose`` does.

    Example:
        >>> orient(np.arange(6).reshape(2, 3), 6).tolist()  # rotate 90 degrees clockwise
        [[3, 0], [4, 1], [5, 2]]
    """
    swap = (1, 0) + tuple(range(2, array.ndim))
    operations: dict[int, Callable[[np.ndarray], np.ndarray]] = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.transpose(swap),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: a[::-1, ::-1].transpose(swap),
        8: lambda a: np.rot90(a, 1),
    }
    operation = operations.get(orientation)
    return array if operation is None else operation(array)


def _orientation(image: Image.Image) -> int:
    try:
        value = image.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:  # unreadable EXIF: treat as upright rather than refusing pixels
        return 1
    return value if isinstance(value, int) else 1


def _check_tiff_channels(image: Image.Image, path: str) -> tuple[int, int]:
    """Refuse TIFF channel layouts Pillow would silently truncate; return ``(samples, bits)``."""
    tags = getattr(image, "tag_v2", {})
    samples = int(tags.get(_TIFF_SAMPLES_PER_PIXEL, 1))
    bits_value = tags.get(_TIFF_BITS_PER_SAMPLE, 8)
    bits = int(bits_value[0] if isinstance(bits_value, tuple) else bits_value)
    extra = tags.get(_TIFF_EXTRA_SAMPLES, ())
    extra = extra if isinstance(extra, tuple) else (extra,)
    has_alpha = any(int(kind) in (1, 2) for kind in extra)
    if (samples == 2 and not has_alpha) or samples > 4:
        raise ImageDecodeError(
            path,
            f"unsupported channel count: {samples} channels ({image.mode} in Pillow); supported are "
            "1 (gray), 2 (gray + alpha), 3 (RGB) and 4 (RGBA or CMYK)",
        )
    return samples, bits


def _png16_rawmode(image: Image.Image) -> Union[str, None]:
    """``"RGB;16B"`` or ``"RGBA;16B"`` for a 16-bit colour PNG (read at full precision), else ``None``."""
    tile = getattr(image, "tile", None)
    if image.format != "PNG" or not tile or len(tile) != 1:
        return None
    rawmode = tile[0][3]
    return rawmode if rawmode in ("RGB;16B", "RGBA;16B") else None


def _header_alpha(image: Image.Image, path: str) -> Union[str, None]:
    """The alpha channel :func:`load_image` will find, as its refusal names it, from the header only.

    ``None`` without alpha. TIFF channel counts that cannot be decoded raise here already.
    """
    if image.format == "TIFF":
        samples, bits = _check_tiff_channels(image, path)
        if bits == 16 and samples >= 2:  # read by tifffile: 2 and 4 samples carry alpha
            return f"{samples}-channel 16-bit TIFF" if samples in (2, 4) else None
    if _png16_rawmode(image) is not None:
        return "16-bit RGBA" if image.mode == "RGBA" else None
    if image.mode == "P":
        return "RGBA" if "transparency" in image.info else None
    return image.mode if image.mode in _ALPHA_MODES_PIL else None


def _check_alpha(image: Image.Image, path: str, alpha: str) -> None:
    """Refuse an image whose header shows an alpha channel unless ``alpha == "drop"``."""
    what = _header_alpha(image, path)
    if what is not None and alpha != "drop":
        raise ImageDecodeError(path, _alpha_reason(what))


def _tiff16_array(path: str, image: Image.Image) -> np.ndarray:
    """16-bit multi-channel TIFF pixels via tifffile (Pillow keeps only 8 bits), upright."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        array = page.asarray()
        axes = page.axes
    if axes.startswith("S") and array.ndim == 3:  # planar configuration: (S, H, W)
        array = np.moveaxis(array, 0, -1)
    return orient(np.ascontiguousarray(array), _orientation(image))


def _png16_array(path: str, image: Image.Image, limit: Union[int, None]) -> Union[np.ndarray, None]:
    """Full-precision 16-bit colour PNG pixels, upright, or ``None`` if the file is not one.

    Pillow decodes 16-bit colour PNGs to 8 bits by keeping each sample's high byte. Decoding the
    same stream a second time with the little-endian unpacker yields the low bytes, and the two
    together are the exact 16-bit samples.
    """
    rawmode = _png16_rawmode(image)
    if rawmode is None:
        return None
    with _open(path, limit) as (low_image, _):
        low_tile = low_image.tile[0]
        low_image.tile = [type(low_tile)(low_tile[0], low_tile[1], low_tile[2], rawmode.replace("16B", "16L"))]
        low_image.load()
        low = np.asarray(low_image)
    image.load()
    high = np.asarray(image)
    array = (high.astype(np.uint16) << 8) | low.astype(np.uint16)
    return orient(array, _orientation(image))


def _pixels(image: Image.Image, path: str, alpha: str, limit: Union[int, None]) -> np.ndarray:
    """Decode to an upright ``uint8``/``uint16`` array ``(H, W)`` or ``(H, W, 3)``."""
    _check_alpha(image, path, alpha)  # the header rule probe_image applies, so plans agree
    bits = 8
    if image.format == "TIFF":
        samples, bits = _check_tiff_channels(image, path)
        if bits == 16 and samples >= 2:
            array = _tiff16_array(path, image)
            return _drop_alpha(array, path, alpha, f"{array.shape[-1]}-channel 16-bit TIFF")
    array16 = _png16_array(path, image, limit)
    if array16 is not None:
        return _drop_alpha(array16, path, alpha, f"16-bit {image.mode}")

    image.load()  # surfaces truncation before anything else
    image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode == "P":
        mode = "RGBA" if "transparency" in image.info else "RGB"
        image = image.convert(mode)
    elif mode == "1":
        image, mode = image.convert("L"), "L"
    elif mode in ("CMYK", "YCbCr", "RGBX"):
        image, mode = image.convert("RGB"), "RGB"
    if mode in _ALPHA_MODES_PIL:
        if alpha != "drop":
            raise ImageDecodeError(path, _alpha_reason(mode))
        if mode == "La":  # premultiplied gray: Pillow converts it only to LA (unpremultiplying)
            image = image.convert("LA")
        mode = _ALPHA_MODES_PIL[mode]
        image = image.convert(mode)
    if mode in ("L", "RGB") or mode in _GRAY16_MODES:
        return np.asarray(image)
    if mode == "I":
        array = np.asarray(image)
        if array.size and (array.min() < 0 or array.max() > 65535):
            raise ImageDecodeError(
                path,
                f"32-bit integer image with values in [{array.min()}, {array.max()}]; only 8- and 16-bit images are supported",
            )
        return array.astype(np.uint16)
    if mode == "F":
        raise ImageDecodeError(path, "floating point image (mode F) has no defined value range; convert it to 8 or 16 bits")
    raise ImageDecodeError(path, f"unsupported image mode {mode!r}; supported: gray, RGB, palette, CMYK, with optional alpha")


def _alpha_reason(what: str) -> str:
    return f"has an alpha channel ({what}); pass alpha='drop' (CLI: --alpha drop) to discard it"


def _drop_alpha(array: np.ndarray, path: str, alpha: str, what: str) -> np.ndarray:
    """Handle alpha in a ``(H, W, C)`` array: ``C`` 2 or 4 has alpha, 3 is RGB."""
    channels = array.shape[-1] if array.ndim == 3 else 1
    if channels in (2, 4):
        if alpha != "drop":
            raise ImageDecodeError(path, _alpha_reason(what))
        array = array[..., : channels - 1]
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    return array


def _last_rows_written(image: Image.Image) -> bool:
    """Whether each of a decoded PNG's last two rows holds a nonzero byte (raw, before any conversion).

    Pillow writes a PNG row only once all of its data is in, into zeroed memory, and the rows come
    in order (Adam7: the last pass fills every odd row), so a short stream leaves the last row (or
    the last odd row) all zeros; written rows prove the file complete and spare
    :func:`png_missing_rows` a second inflation of the whole stream (a third of the decoding time).
    """
    width, height = image.size
    if height < 2:  # one Adam7 row is filled by several passes: no proof
        return False
    rows = np.asarray(image.crop((0, height - 2, width, height))).reshape(2, -1)
    return bool(rows.any(axis=1).all())


def _missing_data(path: str, image: Image.Image) -> Union[str, None]:
    """Why a file Pillow decoded (``image``, before any conversion) lacks pixel data its header
    promises (PNG, JPEG), else ``None``."""
    if image.format == "PNG":
        return None if _last_rows_written(image) else png_missing_rows(path)
    if image.format in ("JPEG", "MPO"):  # MPO: a camera's multi-picture JPEG; the first picture is used
        return jpeg_missing_data(path)
    return None


def load_image(path: PathLike, *, alpha: str = "error", max_pixels: Union[int, None] = None) -> torch.Tensor:
    """Decode an image file to an RGB float32 tensor in ``[0, 1]`` by the module's rules.

    Args:
        path: image file.
        alpha: ``"error"`` refuses images with an alpha channel; ``"drop"`` discards alpha.
        max_pixels: refuse images with more pixels than this (default: Pillow's
            ``PIL.Image.MAX_IMAGE_PIXELS``; a larger value lets Pillow open such files too).

    Returns:
        The image, upright (EXIF orientation applied), values ``v / 255`` (8-bit) or
        ``v / 65535`` (16-bit).

    Raises:
        ImageDecodeError: the file cannot be decoded (missing, empty, corrupt, truncated, too
            large, alpha without ``alpha="drop"``, unsupported mode or channel count).
        ValueError: unknown ``alpha`` or bad ``max_pixels``.

    Shape:
        ``(3, H, W)``, contiguous.

    Example:
        >>> import tempfile, os
        >>> from PIL import Image
        >>> with tempfile.TemporaryDirectory() as d:
        ...     Image.new("L", (4, 2), color=255).save(os.path.join(d, "g.png"))
        ...     x = load_image(os.path.join(d, "g.png"))
        >>> x.shape, x.dtype, x.max().item()
        (torch.Size([3, 2, 4]), torch.float32, 1.0)
    """
    return pixels_to_tensor(load_pixels(path, alpha=alpha, max_pixels=max_pixels))


def load_pixels(path: PathLike, *, alpha: str = "error", max_pixels: Union[int, None] = None) -> np.ndarray:
    """Decode an image file by :func:`load_image`'s rules to its upright integer pixels, unscaled.

    Args, Raises: as :func:`load_image`.

    Returns:
        ``uint8`` (8-bit files) or ``uint16`` (16-bit), ``(H, W)`` for gray, else ``(H, W, 3)``;
        :func:`pixels_to_tensor` makes :func:`load_image`'s tensor of it.

    Example:
        >>> import tempfile, os
        >>> with tempfile.TemporaryDirectory() as d:
        ...     Image.new("L", (4, 2), color=7).save(os.path.join(d, "g.png"))
        ...     a = load_pixels(os.path.join(d, "g.png"))
        >>> a.shape, a.dtype, int(a.max())
        ((2, 4), dtype('uint8'), 7)
    """
    check_choice("alpha", alpha, ALPHA_MODES)
    if max_pixels is not None:
        check_int("max_pixels", max_pixels)
    path = os.fspath(path)
    try:
        with strict_loading(), _open(path, max_pixels) as (image, limit):
            array = _pixels(image, path, alpha, limit)
            missing = _missing_data(path, image)
        if missing is not None:
            raise ImageDecodeError(path, missing)
    except ImageDecodeError:
        raise
    except Exception as error:  # any Pillow/OS/tifffile failure is a per-file decode error
        raise ImageDecodeError(path, _describe(error)) from error
    return array.astype(np.uint16) if array.dtype.itemsize == 2 and array.dtype != np.uint16 else array


def pixels_to_tensor(array: np.ndarray) -> torch.Tensor:
    """:func:`load_pixels`' array as :func:`load_image`'s float32 ``(3, H, W)`` tensor in ``[0, 1]``
    (``v / 255`` or ``v / 65535``; gray repeated), in one converting copy.

    Example:
        >>> pixels_to_tensor(np.full((2, 4), 255, dtype=np.uint8)).shape
        torch.Size([3, 2, 4])
    """
    scale = 65535.0 if array.dtype == np.uint16 else 255.0
    values = torch.empty((3, *array.shape[:2]), dtype=torch.float32)
    values.numpy()[...] = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    return values.div_(scale)
