"""Tests for featx.io.images: the decoding rules of load_image and the header checks of probe_image.

References are computed independently: pixel values straight from numpy arrays we wrote (or
from Pillow's raw decode without featx's rules), and orientation from Pillow's own ``transpose``.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from featx.errors import ImageDecodeError
from featx.io.images import load_image, orient, probe_image

RNG = np.random.default_rng(0)


def rand_u8(h: int, w: int, c: int | None = 3) -> np.ndarray:
    return RNG.integers(0, 256, (h, w) if c is None else (h, w, c), dtype=np.uint8)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png16(path, array: np.ndarray, orientation: int | None = None) -> None:
    """A 16-bit RGB(A) PNG written by hand (Pillow cannot write one), rows alternating the
    None, Sub and Up filters so decoding must use the right bytes-per-pixel; with
    ``orientation``, an ``eXIf`` chunk (PNG 1.5) holding that EXIF orientation."""
    height, width, channels = array.shape
    rows = [array[y].astype(">u2").tobytes() for y in range(height)]
    bpp = 2 * channels
    raw = b""
    for y, row in enumerate(rows):
        data = np.frombuffer(row, np.uint8)
        kind = y % 3
        if kind == 1:  # Sub: byte minus the byte bpp to the left
            left = np.concatenate([np.zeros(bpp, np.uint8), data[:-bpp]])
            data = data - left
        elif kind == 2:  # Up: byte minus the byte above
            data = data - np.frombuffer(rows[y - 1], np.uint8)
        raw += bytes([kind]) + data.astype(np.uint8).tobytes()
    color_type = {3: 2, 4: 6}[channels]
    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    exif = b""
    if orientation is not None:
        tags = Image.Exif()
        tags[0x0112] = orientation
        exif = png_chunk(b"eXIf", tags.tobytes()[len(b"Exif\0\0") :])  # the chunk holds the bare TIFF structure
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + exif
        + png_chunk(b"IDAT", zlib.compress(raw))
        + png_chunk(b"IEND", b"")
    )


def bomb_png(path, width=100_000, height=100_000) -> None:
    """A PNG whose header declares a huge image, with almost no pixel data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + png_chunk(b"IEND", b"")
    )


def as_chw(array: np.ndarray, scale: float) -> torch.Tensor:
    """Reference conversion in float64: (H, W[, C]) integers -> (3, H, W) float32."""
    values = array.astype(np.float64) / scale
    if values.ndim == 2:
        values = np.repeat(values[..., None], 3, axis=-1)
    return torch.from_numpy(values).permute(2, 0, 1).float()


# ------------------------------------------------------------------------------------------
# decoding
# ------------------------------------------------------------------------------------------


def test_rgb8_png_values(tmp_path):
    array = rand_u8(9, 13)
    Image.fromarray(array).save(tmp_path / "a.png")
    x = load_image(tmp_path / "a.png")
    assert x.shape == (3, 9, 13) and x.dtype == torch.float32 and x.is_contiguous()
    torch.testing.assert_close(x, as_chw(array, 255), rtol=0, atol=1e-7)


def test_gray_and_bilevel_repeat_to_rgb(tmp_path):
    gray = rand_u8(7, 5, None)
    Image.fromarray(gray).save(tmp_path / "g.png")
    torch.testing.assert_close(load_image(tmp_path / "g.png"), as_chw(gray, 255), rtol=0, atol=1e-7)
    bits = gray > 127
    Image.fromarray(bits).save(tmp_path / "b.png")  # mode "1"
    torch.testing.assert_close(load_image(tmp_path / "b.png"), as_chw(bits.astype(np.uint8) * 255, 255), rtol=0, atol=0)


def test_gray16_png_scaled_by_65535(tmp_path):
    array = RNG.integers(0, 65536, (6, 8), dtype=np.uint16)
    Image.fromarray(array).save(tmp_path / "g16.png")
    torch.testing.assert_close(load_image(tmp_path / "g16.png"), as_chw(array, 65535), rtol=0, atol=1e-7)


def test_rgb16_png_full_precision(tmp_path):
    array = RNG.integers(0, 65536, (7, 9, 3), dtype=np.uint16)
    write_png16(tmp_path / "c16.png", array)
    # reference: the exact 16-bit samples we encoded, not Pillow's 8-bit reading
    torch.testing.assert_close(load_image(tmp_path / "c16.png"), as_chw(array, 65535), rtol=0, atol=1e-7)


def test_rgba16_png_alpha_rules(tmp_path):
    array = RNG.integers(0, 65536, (5, 6, 4), dtype=np.uint16)
    write_png16(tmp_path / "c16a.png", array)
    with pytest.raises(ImageDecodeError, match="alpha channel.*--alpha drop"):
        load_image(tmp_path / "c16a.png")
    torch.testing.assert_close(
        load_image(tmp_path / "c16a.png", alpha="drop"), as_chw(array[..., :3], 65535), rtol=0, atol=1e-7
    )


def test_rgb16_tiff_full_precision(tmp_path):
    import tifffile  # a dependency of featx
    array = RNG.integers(0, 65536, (5, 7, 3), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "c16.tif", array, photometric="rgb")
    torch.testing.assert_close(load_image(tmp_path / "c16.tif"), as_chw(array, 65535), rtol=0, atol=1e-7)


# Upright pixels for each EXIF orientation, written out with numpy (EXIF 2.3 table), independent of
# featx.io.images.orient: 3 = rotate 180, 5 = transpose, 6 = rotate 90 clockwise, 8 = rotate 90 counter-clockwise.
UPRIGHT = {
    3: lambda a: a[::-1, ::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    8: lambda a: np.rot90(a, 1),
}


def high_precision_u16(h: int, w: int, c: int) -> np.ndarray:
    """16-bit samples whose low byte matters: no value is a multiple of 257 (a widened 8-bit value)."""
    array = RNG.integers(0, 65536, (h, w, c), dtype=np.uint16)
    array[array % 257 == 0] += 1
    return array


@pytest.mark.parametrize("orientation", sorted(UPRIGHT))
def test_rgb16_png_exif_orientation(tmp_path, orientation):
    # Catches the mutation "_png16_array ignores the EXIF orientation" (returning the array without
    # orient(...)), which no other test noticed: the full-precision path must still turn the image upright.
    array = high_precision_u16(4, 7, 3)
    write_png16(tmp_path / "o16.png", array, orientation=orientation)
    with Image.open(tmp_path / "o16.png") as image:
        assert image.getexif()[0x0112] == orientation  # the chunk is read as EXIF
    expected = as_chw(np.ascontiguousarray(UPRIGHT[orientation](array)), 65535)
    # exact up to float rounding: one 16-bit step is 1.5e-5, so a lost low byte or a wrong turn fails
    torch.testing.assert_close(load_image(tmp_path / "o16.png"), expected, rtol=0, atol=1e-7)


@pytest.mark.parametrize("orientation", sorted(UPRIGHT))
def test_rgb16_tiff_orientation_tag(tmp_path, orientation):
    # Catches the mutation "_tiff16_array ignores the orientation tag" (returning the array without
    # orient(...)), which no other test noticed.
    import tifffile  # a dependency of featx
    array = high_precision_u16(4, 7, 3)
    tifffile.imwrite(tmp_path / "o16.tif", array, photometric="rgb", extratags=[(274, "H", 1, orientation, True)])
    with tifffile.TiffFile(tmp_path / "o16.tif") as tif:
        assert tif.pages[0].tags[274].value == orientation  # the tag is in the file
    expected = as_chw(np.ascontiguousarray(UPRIGHT[orientation](array)), 65535)
    torch.testing.assert_close(load_image(tmp_path / "o16.tif"), expected, rtol=0, atol=1e-7)


def test_two_channel_tiff_refused(tmp_path):
    import tifffile  # a dependency of featx
    tifffile.imwrite(
        tmp_path / "two.tif",
        rand_u8(4, 5, 2),
        photometric="minisblack",
        planarconfig="contig",
        extrasamples=["unspecified"],
    )
    with pytest.raises(ImageDecodeError, match="unsupported channel count: 2 channels"):
        load_image(tmp_path / "two.tif")


def test_float_tiff_refused(tmp_path):
    Image.fromarray(np.ones((4, 4), np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(ImageDecodeError, match="floating point image"):
        load_image(tmp_path / "f.tif")


def test_palette_converted_to_rgb(tmp_path):
    indices = RNG.integers(0, 4, (6, 7), dtype=np.uint8)
    palette = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]], np.uint8)
    image = Image.fromarray(indices, mode="P")
    image.putpalette(palette.ravel().tolist())
    image.save(tmp_path / "p.png")
    # reference: palette lookup done in numpy
    torch.testing.assert_close(load_image(tmp_path / "p.png"), as_chw(palette[indices], 255), rtol=0, atol=1e-7)
    image.save(tmp_path / "pt.png", transparency=0)
    with pytest.raises(ImageDecodeError, match="alpha channel"):
        load_image(tmp_path / "pt.png")
    torch.testing.assert_close(
        load_image(tmp_path / "pt.png", alpha="drop"), as_chw(palette[indices], 255), rtol=0, atol=1e-7
    )


def test_rgba_and_la_need_alpha_drop(tmp_path):
    rgba = rand_u8(5, 6, 4)
    Image.fromarray(rgba).save(tmp_path / "a.png")
    with pytest.raises(
        ImageDecodeError, match=r"a\.png: has an alpha channel \(RGBA\); pass alpha='drop' \(CLI: --alpha drop\)"
    ):
        load_image(tmp_path / "a.png")
    torch.testing.assert_close(
        load_image(tmp_path / "a.png", alpha="drop"), as_chw(rgba[..., :3], 255), rtol=0, atol=1e-7
    )
    la = rand_u8(5, 6, 2)
    Image.fromarray(la, mode="LA").save(tmp_path / "la.png")
    with pytest.raises(ImageDecodeError, match=r"alpha channel \(LA\)"):
        load_image(tmp_path / "la.png")
    torch.testing.assert_close(
        load_image(tmp_path / "la.png", alpha="drop"), as_chw(la[..., 0], 255), rtol=0, atol=1e-7
    )


def _alpha_file(path, kind: str) -> None:
    """Write a 4x3 (HxW) image with an alpha channel of the given kind."""
    import tifffile  # a dependency of featx
    if kind == "RGBA png":
        Image.fromarray(rand_u8(4, 3, 4)).save(path)
    elif kind == "LA png":
        Image.fromarray(rand_u8(4, 3, 2), mode="LA").save(path)
    elif kind == "P png with transparency":
        Image.fromarray(rand_u8(4, 3)).quantize(4).save(path, transparency=0)
    elif kind == "PA tiff":
        Image.new("PA", (3, 4)).save(path)
    elif kind == "La tiff (associated alpha)":
        tifffile.imwrite(path, rand_u8(4, 3, 2), photometric="minisblack", extrasamples=["assocalpha"])
    elif kind == "RGBA tiff (ExtraSamples alpha)":
        tifffile.imwrite(path, rand_u8(4, 3, 4), photometric="rgb", extrasamples=["unassalpha"])
    elif kind == "16-bit RGBA png":
        write_png16(path, RNG.integers(0, 65536, (4, 3, 4), dtype=np.uint16))
    elif kind == "16-bit RGBA tiff (ExtraSamples alpha)":
        array = RNG.integers(0, 65536, (4, 3, 4), dtype=np.uint16)
        tifffile.imwrite(path, array, photometric="rgb", extrasamples=["unassalpha"])
    elif kind == "RGBA webp":
        Image.fromarray(rand_u8(4, 3, 4)).save(path, format="WEBP", lossless=True)
    else:
        raise AssertionError(kind)


ALPHA_KINDS = {  # kind -> what the refusal names (the Pillow mode, or the 16-bit layout)
    "RGBA png": "RGBA",
    "LA png": "LA",
    "P png with transparency": "RGBA",
    "PA tiff": "PA",
    "La tiff (associated alpha)": "La",
    "RGBA tiff (ExtraSamples alpha)": "RGBA",
    "16-bit RGBA png": "16-bit RGBA",
    "16-bit RGBA tiff (ExtraSamples alpha)": "4-channel 16-bit TIFF",
    "RGBA webp": "RGBA",
}


@pytest.mark.parametrize("kind", list(ALPHA_KINDS))
def test_probe_image_refuses_alpha_from_the_header_like_load_image(tmp_path, kind):
    # Fails on the code before the change: probe_image had no alpha rule (and no alpha=), so a
    # dry run listed these images as "extract" while the real run failed them.
    path = tmp_path / ("a.tif" if "tiff" in kind else "a.webp" if "webp" in kind else "a.png")
    _alpha_file(path, kind)
    expected = (
        f"{path}: has an alpha channel ({ALPHA_KINDS[kind]}); pass alpha='drop' (CLI: --alpha drop) to discard it"
    )
    with pytest.raises(ImageDecodeError) as probed:
        probe_image(path)
    with pytest.raises(ImageDecodeError) as loaded:
        load_image(path)
    assert str(probed.value) == str(loaded.value) == expected  # the same reason, from the header alone
    assert probe_image(path, alpha="drop") == (4, 3)
    assert load_image(path, alpha="drop").shape == (3, 4, 3)


def test_probe_image_accepts_images_without_alpha(tmp_path):
    import tifffile  # a dependency of featx
    Image.fromarray(rand_u8(4, 3)).save(tmp_path / "rgb.png")
    Image.fromarray(rand_u8(4, 3, None)).save(tmp_path / "l_trns.png", transparency=0)  # tRNS on gray: no alpha
    Image.fromarray(rand_u8(4, 3)).save(tmp_path / "rgb_trns.png", transparency=(0, 0, 0))
    Image.fromarray(rand_u8(4, 3)).quantize(4).save(tmp_path / "p.png")
    write_png16(tmp_path / "rgb16.png", RNG.integers(0, 65536, (4, 3, 3), dtype=np.uint16))
    tifffile.imwrite(tmp_path / "rgb16.tif", RNG.integers(0, 65536, (4, 3, 3), dtype=np.uint16), photometric="rgb")
    tifffile.imwrite(tmp_path / "rgbx.tif", rand_u8(4, 3, 4), photometric="rgb", extrasamples=["unspecified"])
    for path in sorted(tmp_path.iterdir()):
        assert probe_image(path) == (4, 3), path.name
        assert load_image(path).shape == (3, 4, 3), path.name  # and the decoder agrees


def test_probe_image_refuses_tiff_channel_counts_like_load_image(tmp_path):
    import tifffile  # a dependency of featx
    tifffile.imwrite(tmp_path / "two.tif", rand_u8(4, 5, 2), photometric="minisblack", extrasamples=["unspecified"])
    with pytest.raises(ImageDecodeError, match="unsupported channel count: 2 channels"):
        probe_image(tmp_path / "two.tif", alpha="drop")
    with pytest.raises(ValueError, match=r"^unknown alpha 'keep'\. Valid choices: 'error', 'drop'$"):
        probe_image(tmp_path / "two.tif", alpha="keep")


def test_premultiplied_gray_alpha_dropped_to_straight_gray(tmp_path):
    # Fails on the code before the fix: alpha="drop" on an La image (TIFF with associated alpha)
    # raised "conversion from La to L not supported".
    import tifffile  # a dependency of featx
    alpha = RNG.integers(1, 256, (4, 5), dtype=np.uint8)
    gray = (RNG.random((4, 5)) * alpha).astype(np.uint8)  # premultiplied: gray <= alpha
    tifffile.imwrite(
        tmp_path / "la.tif", np.dstack([gray, alpha]), photometric="minisblack", extrasamples=["assocalpha"]
    )
    with pytest.raises(ImageDecodeError, match=r"alpha channel \(La\)"):
        load_image(tmp_path / "la.tif")
    # reference: un-premultiplied in numpy, gray * 255 / alpha (what RGBa -> RGB does in Pillow)
    straight = np.minimum(255, gray.astype(np.float64) * 255 / alpha)
    torch.testing.assert_close(
        load_image(tmp_path / "la.tif", alpha="drop"), as_chw(straight, 255), rtol=0, atol=1 / 255
    )


def test_cmyk_converted(tmp_path):
    cmyk = rand_u8(4, 5, 4)
    Image.fromarray(cmyk, mode="CMYK").save(tmp_path / "c.tif")
    # reference: Pillow's own CMYK -> RGB conversion of the same pixels (the documented rule)
    expected = np.asarray(Image.fromarray(cmyk, mode="CMYK").convert("RGB"))
    torch.testing.assert_close(load_image(tmp_path / "c.tif"), as_chw(expected, 255), rtol=0, atol=1e-7)


def test_exif_orientation_applied(tmp_path):
    array = rand_u8(8, 16)
    image = Image.fromarray(array)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    image.save(tmp_path / "o.png", exif=exif.tobytes())
    x = load_image(tmp_path / "o.png")
    # reference: the stored pixels rotated clockwise with numpy
    torch.testing.assert_close(x, as_chw(np.rot90(array, -1), 255), rtol=0, atol=1e-7)
    assert x.shape == (3, 16, 8)
    assert probe_image(tmp_path / "o.png") == (8, 16)  # header size, as stored


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orient_matches_pillow_transpose(orientation):
    array = rand_u8(3, 5)
    # reference: Pillow's transpose method for each EXIF orientation (EXIF 2.3 spec table)
    methods = {
        2: Image.Transpose.FLIP_LEFT_RIGHT,
        3: Image.Transpose.ROTATE_180,
        4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE,
        6: Image.Transpose.ROTATE_270,
        7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_90,
    }
    image = Image.fromarray(array)
    expected = np.asarray(image.transpose(methods[orientation])) if orientation in methods else array
    np.testing.assert_array_equal(orient(array, orientation), expected)


def test_bomb_header_refused_without_decoding(tmp_path):
    bomb_png(tmp_path / "bomb.png")
    with pytest.raises(ImageDecodeError, match="decompression-bomb"):
        load_image(tmp_path / "bomb.png")
    with pytest.raises(ImageDecodeError, match="decompression-bomb"):
        probe_image(tmp_path / "bomb.png")


def test_bomb_warning_becomes_error(tmp_path, monkeypatch):
    Image.fromarray(rand_u8(20, 20)).save(tmp_path / "a.png")
    # 400 pixels is between Pillow's limit (300) and twice it: Pillow only *warns* there
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 300)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning escaping would fail the test
        with pytest.raises(ImageDecodeError, match="decompression-bomb"):
            load_image(tmp_path / "a.png")


def test_max_pixels_option(tmp_path):
    Image.fromarray(rand_u8(16, 16)).save(tmp_path / "a.png")
    with pytest.raises(ImageDecodeError, match="16x16 = 256 pixels, above the limit of 100 pixels"):
        load_image(tmp_path / "a.png", max_pixels=100)
    assert load_image(tmp_path / "a.png", max_pixels=256).shape == (3, 16, 16)
    with pytest.raises(ValueError, match=r"^max_pixels must be an integer >= 1, got 0$"):
        load_image(tmp_path / "a.png", max_pixels=0)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_max_pixels_above_pillows_limit_lets_pillow_open_the_file(tmp_path, monkeypatch, suffix):
    # TIFF: Pillow checks the size again when it loads the pixels, so the trusted limit must hold
    # for the whole decode, not only while the header is parsed
    pixels = rand_u8(20, 20)
    name = tmp_path / f"a{suffix}"
    Image.fromarray(pixels).save(name)
    # 400 pixels: above Pillow's (patched) limit of 150 and twice it, where Pillow itself raises
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 150)
    with pytest.raises(ImageDecodeError, match="decompression-bomb"):
        load_image(name)  # the default limit is Pillow's
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image = load_image(name, max_pixels=400)
        assert torch.equal(image, as_chw(pixels, 255))
        assert probe_image(name, max_pixels=400) == (20, 20)
    assert Image.MAX_IMAGE_PIXELS == 150  # restored after each file
    with pytest.raises(ImageDecodeError, match="20x20 = 400 pixels, above the limit of 399 pixels"):
        load_image(name, max_pixels=399)


def test_bad_files_have_readable_reasons(tmp_path):
    good = io.BytesIO()
    Image.fromarray(rand_u8(32, 32)).save(good, format="PNG")
    (tmp_path / "trunc.png").write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
    jpeg = io.BytesIO()
    Image.fromarray(rand_u8(32, 32)).save(jpeg, format="JPEG")
    (tmp_path / "trunc.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    (tmp_path / "zero.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("not an image")
    cases = {
        "trunc.png": "truncated",
        "trunc.jpg": "truncated",
        "zero.png": r"empty file \(0 bytes\)",
        "text.png": "cannot identify the file format",
        "missing.png": "file not found",
    }
    for name, reason in cases.items():
        with pytest.raises(ImageDecodeError, match=reason) as info:
            load_image(tmp_path / name)
        assert info.value.path == str(tmp_path / name)


def test_alpha_argument_validated(tmp_path):
    with pytest.raises(ValueError, match=r"^unknown alpha 'keep'\. Valid choices: 'error', 'drop'$"):
        load_image(tmp_path / "x.png", alpha="keep")


def test_decode_error_pickles():
    import pickle

    error = pickle.loads(pickle.dumps(ImageDecodeError("/a.png", "bad")))
    assert (error.path, error.reason, str(error)) == ("/a.png", "bad", "/a.png: bad")


# JPEGs: a file cut short and closed with an end-of-image marker decodes in Pillow (libjpeg only
# warns, and fills the rest grey); load_image refuses it from libjpeg-turbo's own data warnings.
# The references: Pillow's plain decode (which accepts the cut file, so each case could pass
# unnoticed) and, for valid files, Pillow's RGB conversion of the same file.
EOI = b"\xff\xd9"


def jpeg_bytes(array: np.ndarray, mode: str | None = None, **options) -> bytes:
    image = Image.fromarray(array)
    buffer = io.BytesIO()
    (image.convert(mode) if mode else image).save(buffer, format="JPEG", **options)
    return buffer.getvalue()


def photo(h: int = 96, w: int = 128) -> np.ndarray:
    """Smooth gradients plus noise: many blocks with AC coefficients, so every cut lands in coded data."""
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 // w, y * 255 // h, (x + y) * 255 // (h + w)], axis=-1)
    return np.clip(base + RNG.integers(-40, 40, (h, w, 3)), 0, 255).astype(np.uint8)


def cut_with_eoi(data: bytes, where: str) -> bytes:
    end = len(data) - len(EOI)
    assert data[end:] == EOI
    position = end - 3 if where == "eoi-3" else int(len(data) * float(where))
    return data[:position] + EOI


@pytest.mark.parametrize("kind", ["baseline", "progressive", "gray-progressive", "restart-markers"])
@pytest.mark.parametrize("where", ["0.1", "0.5", "0.9", "eoi-3"])
def test_jpeg_cut_short_and_closed_with_an_end_marker_is_refused(tmp_path, kind, where):
    options = {
        "baseline": {},
        "progressive": {"progressive": True},
        "gray-progressive": {"mode": "L", "progressive": True},
        "restart-markers": {"restart_marker_rows": 1},
    }[kind]
    data = cut_with_eoi(jpeg_bytes(photo(), quality=90, **options), where)
    path = tmp_path / "cut.jpg"
    path.write_bytes(data)
    with Image.open(path) as image:
        image.load()  # Pillow decodes it without a word
    with pytest.raises(ImageDecodeError, match=r"^.*: truncated or corrupt image data \(the JPEG's compressed data ends"):
        load_image(path)


def test_jpeg_without_its_end_marker_is_refused(tmp_path):
    data = jpeg_bytes(photo(), quality=90)
    (tmp_path / "a.jpg").write_bytes(data[: -len(EOI)])
    with pytest.raises(ImageDecodeError, match="truncated or corrupt image data"):
        load_image(tmp_path / "a.jpg")


def libjpeg_turbo_jpegs() -> dict[str, bytes]:
    """JPEGs from another encoder than Pillow's: libjpeg-turbo's TurboJPEG API (simplejpeg), which
    also writes YCCK (Adobe transform 2) from CMYK pixels and the 4:4:0 and 4:1:1 subsamplings."""
    import simplejpeg

    array = photo()
    files = {f"turbojpeg-{s}": simplejpeg.encode_jpeg(array, colorsubsampling=s) for s in ("444", "422", "420", "440", "411")}
    files["turbojpeg-gray"] = simplejpeg.encode_jpeg(array[..., :1].copy(), colorspace="GRAY", colorsubsampling="Gray")
    files["turbojpeg-ycck"] = simplejpeg.encode_jpeg(np.dstack([array, array[..., 0]]), colorspace="CMYK")
    return files


def pillow_jpegs() -> dict[str, bytes]:
    array, exif = photo(), Image.Exif()
    exif[0x010F] = "featx test camera"  # a Make tag: EXIF without an orientation
    return {
        "baseline": jpeg_bytes(array, quality=75),
        "optimized-q95": jpeg_bytes(array, quality=95, optimize=True),
        "progressive": jpeg_bytes(array, progressive=True),
        "gray": jpeg_bytes(array, mode="L"),
        "gray-progressive": jpeg_bytes(array, mode="L", progressive=True),
        "subsampling-444": jpeg_bytes(array, subsampling=0),
        "subsampling-420": jpeg_bytes(array, subsampling=2),
        "cmyk": jpeg_bytes(array, mode="CMYK"),
        "cmyk-progressive": jpeg_bytes(array, mode="CMYK", progressive=True),
        "exif": jpeg_bytes(array, exif=exif.tobytes()),
        "restart-blocks": jpeg_bytes(array, restart_marker_blocks=3),
        "restart-rows-progressive": jpeg_bytes(array, restart_marker_rows=2, progressive=True),
        "odd-size-17x33": jpeg_bytes(array[:17, :33].copy()),
        "one-pixel": jpeg_bytes(array[:1, :1].copy()),
    }


@pytest.mark.parametrize("source", [pillow_jpegs, libjpeg_turbo_jpegs])
def test_valid_jpegs_are_never_refused_and_decode_as_pillow_does(tmp_path, source):
    from featx.io._truncation import jpeg_missing_data

    files = source()
    assert len(files) >= 7
    for name, data in files.items():
        path = tmp_path / f"{name}.jpg"
        path.write_bytes(data)
        assert jpeg_missing_data(str(path)) is None, name
        with Image.open(path) as image:
            expected = as_chw(np.asarray(image.convert("RGB")), 255.0)
        assert torch.equal(load_image(path), expected), name


def test_jpeg_check_leaves_other_failures_to_the_decoder(tmp_path):
    from featx.io._truncation import jpeg_missing_data

    # a colour space libjpeg-turbo's decoder cannot give as gray (CMYK) is read as CMYK, not refused
    (tmp_path / "cmyk.jpg").write_bytes(jpeg_bytes(photo(), mode="CMYK"))
    assert jpeg_missing_data(str(tmp_path / "cmyk.jpg")) is None
    # not a JPEG at all: libjpeg fails on the header, which is not a data warning
    (tmp_path / "text.jpg").write_text("not a jpeg")
    assert jpeg_missing_data(str(tmp_path / "text.jpg")) is None
    # the same check on the cut file names libjpeg's warning
    (tmp_path / "cut.jpg").write_bytes(cut_with_eoi(jpeg_bytes(photo()), "0.5"))
    assert jpeg_missing_data(str(tmp_path / "cut.jpg")) == (
        "truncated or corrupt image data (the JPEG's compressed data ends before its last block, and the missing "
        "blocks would come out grey; libjpeg: Corrupt JPEG data: premature end of data segment)"
    )


def test_multi_picture_jpeg_is_checked_on_its_first_picture(tmp_path):
    # An MPO (a camera's multi-picture file) is a JPEG followed by more JPEGs; Pillow reads the first.
    first, second = photo(), photo()[::-1].copy()
    Image.fromarray(first).save(tmp_path / "a.mpo", format="MPO", save_all=True, append_images=[Image.fromarray(second)])
    with Image.open(tmp_path / "a.mpo") as image:
        assert image.format == "MPO"
        expected = as_chw(np.asarray(image.convert("RGB")), 255.0)
    assert torch.equal(load_image(tmp_path / "a.mpo"), expected)
    data = (tmp_path / "a.mpo").read_bytes()
    end = data.index(EOI + b"\xff\xd8")  # the first picture's end marker, where the second starts
    (tmp_path / "cut.mpo").write_bytes(data[: end // 2] + EOI)  # the first picture cut in half
    with pytest.raises(ImageDecodeError, match="truncated or corrupt image data"):
        load_image(tmp_path / "cut.mpo")
