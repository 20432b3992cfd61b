"""Image discovery and decoding rules, and feature files (safetensors, written atomically).

Decoding rules (:func:`load_image`), the same for the library and ``featx extract``:

- Formats: anything Pillow opens; folder discovery keeps ``.png .jpg .jpeg .bmp .tif .tiff .webp``
  (any letter case). Multi-frame files (TIFF pages, animated WebP) use the first frame.
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
  megapixels) are refused from their header, before any pixel is decoded; Pillow's
  ``DecompressionBombWarning`` is turned into that error, never left as a warning.
- Every failure raises :class:`ImageDecodeError` (a ``ValueError``) with a one-line reason.

Feature files are plain safetensors (no pickle): tensors by tap name plus ``str -> str``
metadata. :func:`serialize_features` lays them out byte-deterministically (sorted header) in one
page-aligned buffer; :func:`save_features` then writes it with :mod:`featx.atomic` (hidden
temporary name in the target folder, fsync, atomic rename; ``O_DIRECT`` from 1 MiB up).
"""

from __future__ import annotations

import json
import os
import struct
import sys
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Union

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from featx._checks import check_choice
from featx.errors import ImageDecodeError
from featx.atomic import aligned_buffer, write_atomic, write_atomic_buffer

__all__ = [
    "ALPHA_MODES",
    "FEATURE_SUFFIX",
    "IMAGE_EXTENSIONS",
    "ImageSource",
    "find_images",
    "load_features",
    "load_image",
    "orient",
    "probe_image",
    "read_feature_metadata",
    "read_file_list",
    "save_features",
    "serialize_features",
    "write_atomic",
]

PathLike = Union[str, "os.PathLike[str]"]

IMAGE_EXTENSIONS: tuple[str, ...] = (".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
"""File extensions folder discovery keeps (compared in lower case)."""

ALPHA_MODES: tuple[str, ...] = ("error", "drop")
"""What :func:`load_image` does with an alpha channel: refuse the image, or discard alpha."""

FEATURE_SUFFIX = ".safetensors"
"""Suffix of feature files; temporary files never end with it."""

_ORIENTATION_TAG = 0x0112
_TIFF_SAMPLES_PER_PIXEL, _TIFF_BITS_PER_SAMPLE, _TIFF_EXTRA_SAMPLES = 277, 258, 338
_ALPHA_MODES_PIL = {"LA": "L", "La": "L", "PA": "RGB", "RGBA": "RGB", "RGBa": "RGB"}
_GRAY16_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
_SAFETENSORS_DTYPES: dict[torch.dtype, str] = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


# ----------------------------------------------------------------------------------------------
# Discovery
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageSource:
    """One input image.

    Attributes:
        path: absolute path (symlinks kept as given, not resolved).
        key: POSIX path relative to the common root of the inputs; outputs and manifest lines are
            named after it, so it is unique and stable across runs and ranks.
    """

    path: str
    key: str


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _walk(root: str, recursive: bool) -> Iterator[str]:
    """Image files under ``root``: hidden entries skipped, symlinks followed, loops cut."""
    seen: set[str] = set()

    def on_error(error: OSError) -> None:
        warnings.warn(f"skipping unreadable folder {error.filename}: {error.strerror}", stacklevel=4)

    for folder, subfolders, files in os.walk(root, followlinks=True, onerror=on_error):
        real = os.path.realpath(folder)
        if real in seen:  # a symlink back to a folder already walked: stop here
            subfolders[:] = []
            continue
        seen.add(real)
        subfolders[:] = sorted(name for name in subfolders if not _is_hidden(name)) if recursive else []
        for name in files:
            if not _is_hidden(name) and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                yield os.path.join(folder, name)


def find_images(
    inputs: Iterable[PathLike], *, recursive: bool = True, must_exist: bool = True
) -> list[ImageSource]:
    """Collect the images named by folders and files, sorted by key.

    Folders are walked (recursively unless ``recursive=False``) for files whose extension is in
    :data:`IMAGE_EXTENSIONS` (any case); names starting with ``.`` are skipped; symlinked folders
    are followed once (a link back to a folder already walked is not entered again). Files named
    directly are kept whatever their extension. Keys are relative to the deepest folder holding
    all inputs (for one folder, the folder itself; for a file, its parent).

    Args:
        inputs: folders and/or files.
        recursive: walk subfolders.
        must_exist: raise for a missing input; with ``False`` a missing path is kept as a file
            (``--files-from`` lists: it is then reported per image when decoding fails).

    Returns:
        Distinct images sorted by key.

    Raises:
        FileNotFoundError: an input does not exist (with ``must_exist=True``).
        ValueError: no inputs given.

    Example:
        >>> import tempfile, pathlib
        >>> with tempfile.TemporaryDirectory() as d:
        ...     for name in ("b.PNG", "a/c.jpg", ".hidden.png", "notes.txt"):
        ...         p = pathlib.Path(d, name); p.parent.mkdir(exist_ok=True); p.touch()
        ...     [s.key for s in find_images([d])]
        ['a/c.jpg', 'b.PNG']
    """
    paths = [os.path.abspath(os.fspath(item)) for item in inputs]
    if not paths:
        raise ValueError("no inputs given: expected at least one folder or image file")
    roots: list[str] = []
    found: list[str] = []
    for path in paths:
        if os.path.isdir(path):
            roots.append(path)
            found.extend(_walk(path, recursive))
        elif os.path.exists(path) or os.path.islink(path) or not must_exist:
            roots.append(os.path.dirname(path))
            found.append(path)
        else:
            raise FileNotFoundError(f"input not found: {path} (expected a folder or an image file)")
    base = os.path.commonpath(roots)
    unique = {path: Path(os.path.relpath(path, base)).as_posix() for path in found}
    return sorted((ImageSource(path, key) for path, key in unique.items()), key=lambda source: source.key)


def read_file_list(list_path: PathLike) -> list[str]:
    """Read a ``--files-from`` list: one path per line; blank lines and ``#`` comments skipped.

    Relative paths are taken relative to the current directory (as ``find ... > list`` writes them).

    Raises:
        FileNotFoundError: the list file does not exist.

    Example:
        >>> import tempfile
        >>> with tempfile.NamedTemporaryFile("w", suffix=".txt") as f:
        ...     _ = f.write("a.png\\n\\n# comment\\n  b.jpg  \\n"); f.flush()
        ...     read_file_list(f.name)
        ['a.png', 'b.jpg']
    """
    with open(list_path, encoding="utf-8") as handle:
        lines = (line.strip() for line in handle)
        return [line for line in lines if line and not line.startswith("#")]


# ----------------------------------------------------------------------------------------------
# Decoding
# ----------------------------------------------------------------------------------------------


def _pixel_limit(max_pixels: Union[int, None]) -> Union[int, None]:
    """The effective pixel limit: ``max_pixels`` if given, else Pillow's (which caps it)."""
    pillow = Image.MAX_IMAGE_PIXELS
    if max_pixels is None:
        return pillow
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise ValueError(f"max_pixels must be a positive integer or None, got {max_pixels!r}")
    if pillow is not None and max_pixels > pillow:
        raise ValueError(
            f"max_pixels={max_pixels} is above Pillow's own limit PIL.Image.MAX_IMAGE_PIXELS={pillow}, "
            "which Pillow applies first; raise PIL.Image.MAX_IMAGE_PIXELS instead (trusted files only)"
        )
    return max_pixels


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


def _open(path: str, limit: Union[int, None]) -> Image.Image:
    """Open the header with the size limit enforced (bomb warnings become errors)."""
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise ImageDecodeError(path, "empty file (0 bytes)")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(path)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise ImageDecodeError(
                path,
                f"image too large, refused before decoding (decompression-bomb protection): {error} "
                "If the file is trusted, raise PIL.Image.MAX_IMAGE_PIXELS.",
            ) from error
    width, height = image.size
    if limit is not None and width * height > limit:
        image.close()
        raise ImageDecodeError(path, _bomb_reason(width, height, limit))
    return image


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
    path = os.fspath(path)
    limit = _pixel_limit(max_pixels)
    try:
        with _open(path, limit) as image:
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
    with _open(path, limit) as low_image:
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
                path, f"32-bit integer image with values in [{array.min()}, {array.max()}]; only 8- and 16-bit images are supported"
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


def load_image(path: PathLike, *, alpha: str = "error", max_pixels: Union[int, None] = None) -> torch.Tensor:
    """Decode an image file to an RGB float32 tensor in ``[0, 1]`` by the module's rules.

    Args:
        path: image file.
        alpha: ``"error"`` refuses images with an alpha channel; ``"drop"`` discards alpha.
        max_pixels: refuse images with more pixels than this (default: Pillow's
            ``PIL.Image.MAX_IMAGE_PIXELS``, which is also the upper bound).

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
    check_choice("alpha", alpha, ALPHA_MODES)
    path = os.fspath(path)
    limit = _pixel_limit(max_pixels)
    try:
        with _open(path, limit) as image:
            array = _pixels(image, path, alpha, limit)
    except ImageDecodeError:
        raise
    except Exception as error:  # any Pillow/OS/tifffile failure is a per-file decode error
        raise ImageDecodeError(path, _describe(error)) from error
    scale = 65535.0 if array.dtype == np.uint16 else 255.0
    values = torch.from_numpy(np.ascontiguousarray(array).astype(np.float32)) / scale
    if values.ndim == 2:
        values = values.unsqueeze(-1).expand(-1, -1, 3)
    return values.permute(2, 0, 1).contiguous()


# ----------------------------------------------------------------------------------------------
# Feature files
# ----------------------------------------------------------------------------------------------


def _check_feature_inputs(tensors: Mapping[str, Any], metadata: Mapping[str, Any]) -> None:
    if not isinstance(tensors, Mapping) or not tensors:
        raise TypeError(f"tensors must be a non-empty dict of name -> Tensor, got {tensors!r:.80}")
    for name, value in tensors.items():
        if not isinstance(name, str) or name == "__metadata__":
            raise TypeError(f"tensor names must be strings other than '__metadata__', got {name!r}")
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"tensors[{name!r}] must be a torch.Tensor, got {type(value).__name__}")
        if value.dtype not in _SAFETENSORS_DTYPES:
            raise TypeError(
                f"tensors[{name!r}] has dtype {value.dtype}; supported: {', '.join(map(str, _SAFETENSORS_DTYPES))}"
            )
    if not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a dict of str -> str, got {type(metadata).__name__}")
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"metadata must map str -> str, got {key!r}: {value!r} ({type(value).__name__})")


def serialize_features(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> tuple[torch.Tensor, int]:
    """Lay out a safetensors file in one page-aligned buffer, ready for :func:`write_atomic_buffer`.

    The header lists tensors and metadata with sorted keys (tensors by decreasing element size,
    then name), padded with spaces so tensor data starts 8-byte aligned: equal inputs give
    byte-identical files. Each tensor is copied once, straight into its place, whatever its
    memory layout (a ``channels_last`` feature map is stored as plain ``C x H x W``).

    Args:
        tensors: ``{name: tensor}`` on any device; float64/32/16, bfloat16, int64/32/16/8, uint8 or bool.
        metadata: ``{str: str}`` stored in the header's ``__metadata__``.

    Returns:
        ``(buffer, nbytes)``: a ``uint8`` CPU tensor from :func:`featx.atomic.aligned_buffer`
        whose first ``nbytes`` are the file.

    Raises:
        TypeError: empty ``tensors``, non-tensor values, unsupported dtype, or non-string metadata.

    Example:
        >>> buffer, nbytes = serialize_features({"a": torch.ones(2)}, {})
        >>> nbytes, bytes(buffer[8:nbytes - 8].numpy()).rstrip()
        (72, b'{"a":{"data_offsets":[0,8],"dtype":"F32","shape":[2]}}')
    """
    _check_feature_inputs(tensors, metadata)
    order = sorted(tensors, key=lambda name: (-tensors[name].element_size(), name))
    header: dict[str, Any] = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for name in order:
        tensor = tensors[name]
        size = tensor.numel() * tensor.element_size()
        header[name] = {
            "dtype": _SAFETENSORS_DTYPES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # pad so tensor data starts 8-byte aligned
    start = 8 + len(text)
    nbytes = start + offset
    buffer = aligned_buffer(nbytes)
    head = memoryview(buffer.numpy())
    head[:start] = struct.pack("<Q", len(text)) + text
    for name in order:
        begin, end = header[name]["data_offsets"]
        tensor = tensors[name].detach()
        place = buffer[start + begin : start + end]
        if tensor.numel():
            place.view(tensor.dtype).view(tensor.shape).copy_(tensor)
        if sys.byteorder != "little" and tensor.element_size() > 1:  # pragma: no cover - big-endian hosts
            place.numpy().view(f"u{tensor.element_size()}").byteswap(inplace=True)  # safetensors is little-endian
    return buffer, nbytes


def save_features(
    path: PathLike,
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, str],
    *,
    fsync: bool = True,
    direct: bool = True,
) -> None:
    """Write tensors and metadata as a safetensors file, deterministically and atomically.

    The bytes are laid out by :func:`serialize_features` (sorted header: equal inputs give
    byte-identical files) and written by :func:`featx.atomic.write_atomic_buffer`: a hidden
    temporary name in the same folder, fsync, rename; files from 1 MiB up bypass the page cache
    (``O_DIRECT``) where the system allows it. Any safetensors reader opens the file.

    Args:
        path: destination (conventionally ending in ``.safetensors``); its folder must exist.
        tensors: ``{name: tensor}``; stored contiguous (``C x H x W`` order for 3-D maps of any
            memory format), in their dtype.
        metadata: ``{str: str}`` stored in the header's ``__metadata__``.
        fsync: flush the file's data to disk before the rename, so after a power loss the name
            holds either nothing or complete data. Without it the rename is still atomic for other
            processes and for a killed writer. (The folder is not synced per file: a rename lost
            to a power cut leaves no file, and a resumed extraction simply recomputes it.)
        direct: allow ``O_DIRECT`` for files from 1 MiB up; ``False`` writes through the page
            cache. The bytes are the same either way.

    Raises:
        TypeError: empty ``tensors``, non-tensor values, unsupported dtype, or non-string metadata.

    Example:
        >>> import tempfile, os
        >>> with tempfile.TemporaryDirectory() as d:
        ...     p = os.path.join(d, "x.safetensors")
        ...     save_features(p, {"relu1_1": torch.ones(2, 3)}, {"arch": "vgg19"})
        ...     tensors, meta = load_features(p)
        >>> tensors["relu1_1"].shape, meta
        (torch.Size([2, 3]), {'arch': 'vgg19'})
    """
    buffer, nbytes = serialize_features(tensors, metadata)
    write_atomic_buffer(path, buffer, nbytes, fsync=fsync, direct=direct)


def load_features(path: PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a feature file written by :func:`save_features` (or any safetensors file).

    Args:
        path: a ``.safetensors`` file.

    Returns:
        ``(tensors, metadata)``: ``{name: tensor}`` on CPU and the ``str -> str`` metadata.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a valid safetensors file (truncated or corrupt).

    Example:
        See :func:`save_features`.
    """
    from safetensors import SafetensorError, safe_open

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"feature file not found: {path}")
    try:
        with safe_open(path, framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except SafetensorError as error:
        raise ValueError(f"{path}: not a valid safetensors file ({error})") from error
    return tensors, metadata


def read_feature_metadata(path: PathLike) -> dict[str, str]:
    """Read only the metadata of a feature file (the header; no tensor data is loaded).

    The header is validated against the file size, so a truncated file raises.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a valid safetensors file.

    Example:
        >>> import tempfile, os
        >>> with tempfile.TemporaryDirectory() as d:
        ...     p = os.path.join(d, "x.safetensors")
        ...     save_features(p, {"a": torch.zeros(1)}, {"k": "v"})
        ...     read_feature_metadata(p)
        {'k': 'v'}
    """
    from safetensors import SafetensorError, safe_open

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"feature file not found: {path}")
    try:
        with safe_open(path, framework="pt") as handle:
            return dict(handle.metadata() or {})
    except SafetensorError as error:
        raise ValueError(f"{path}: not a valid safetensors file ({error})") from error
