"""featx score's fast path: PSNR/SSIM from decoded integer pixels, and the decoding it rests on.

References:
- BasicSR 1.4.2's numpy ``calculate_psnr``/``calculate_ssim`` and ``bgr2ycbcr``, called the way its
  ``scripts/metrics/calculate_psnr_ssim.py`` calls them (float32 ``/ 255``, luma rounded to float32,
  metrics on ``* 255``): equal within 1e-6 dB and 1e-6 (the issue's bar for ``featx score``).
- featx's own tensor functions ``featx.metrics.psnr``/``ssim`` (themselves tested against BasicSR and
  scikit-image in tests/test_fidelity.py) on ``load_image``'s tensors: equal to float64 rounding.
- ``load_image`` for ``load_pixels`` + ``pixels_to_tensor`` (bit for bit), and for the truncated PNGs
  the check now skips when the last pixels are written: hand-built files (plain and Adam7).
"""

from __future__ import annotations

import struct
import sys
import zlib

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from featx.errors import ImageDecodeError
from featx.io.images import load_image, load_pixels, pixels_to_tensor
from featx.metrics.conventions import read_pair, read_pixel_pair
from featx.metrics.fidelity import psnr, ssim
from featx.metrics.pixel_fidelity import fidelity_scores, pixel_planes

sys.modules.setdefault("torchvision.transforms.functional_tensor", torchvision.transforms.functional)
from basicsr.metrics.psnr_ssim import calculate_psnr, calculate_ssim  # noqa: E402
from basicsr.utils.color_util import bgr2ycbcr  # noqa: E402

RNG = np.random.default_rng(19)


def degraded(array, spread=12):
    top = 65535 if array.dtype == np.uint16 else 255
    noise = RNG.integers(-spread, spread + 1, array.shape)
    return np.clip(array.astype(np.int64) + noise, 0, top).astype(array.dtype)


def basicsr_script(pred, ref, border, y_channel):
    """calculate_psnr_ssim.py on uint8 RGB/gray arrays (as cv2 reads them: BGR)."""
    img_gt, img_restored = (a[..., ::-1] if a.ndim == 3 else a for a in (ref, pred))
    img_gt, img_restored = (a.astype(np.float32) / 255.0 for a in (img_gt, img_restored))
    if y_channel and img_gt.ndim == 3:
        img_gt, img_restored = bgr2ycbcr(img_gt, y_only=True), bgr2ycbcr(img_restored, y_only=True)
    return (
        calculate_psnr(img_gt * 255, img_restored * 255, crop_border=border, input_order="HWC"),
        calculate_ssim(img_gt * 255, img_restored * 255, crop_border=border, input_order="HWC"),
    )


@pytest.mark.parametrize("y_channel", [True, False])
@pytest.mark.parametrize(("shape", "border"), [((45, 38, 3), 4), ((33, 51, 3), 0), ((27, 23, 3), 3), ((41, 30), 4), ((25, 37), 0),
                                               ((157, 41, 3), 4)])  # fmt: skip
def test_fast_path_equals_basicsr_script_on_odd_sizes(shape, border, y_channel):
    ref = RNG.integers(0, 256, shape, dtype=np.uint8)
    pred = degraded(ref)
    got = fidelity_scores(pred, ref, ["psnr", "ssim"], crop_border=border, y_channel=y_channel)
    expected = basicsr_script(pred, ref, border, y_channel)
    assert abs(got["psnr"] - expected[0]) < 1e-6 and abs(got["ssim"] - expected[1]) < 1e-6
    assert 20 < got["psnr"] < 40 and 0.5 < got["ssim"] < 1  # a pair the metrics can tell apart


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("case", ["rgb", "gray", "gray_as_rgb", "gray_against_rgb"])
def test_fast_path_equals_the_tensor_functions(dtype, case):
    top = 65536 if dtype == np.uint16 else 256
    shape = (29, 34) if case.startswith("gray") else (29, 34, 3)
    ref = RNG.integers(0, top, shape).astype(dtype)
    pred = degraded(ref, spread=top // 20)
    rgb = case != "gray"
    if case == "gray_against_rgb":
        pred = np.stack([pred, degraded(pred, spread=top // 50), pred], axis=-1)
    x, y = (pixels_to_tensor(a)[None] for a in (pred, ref))
    if not rgb:
        x, y = x[:, :1], y[:, :1]
    for y_channel in (False, True):
        got = fidelity_scores(pred, ref, ["psnr", "ssim"], crop_border=2, y_channel=y_channel, rgb=rgb)
        want_psnr = float(psnr(x, y, crop_border=2, y_channel=y_channel))
        want_ssim = float(ssim(x, y, crop_border=2, y_channel=y_channel))
        assert got["psnr"] == pytest.approx(want_psnr, rel=1e-12) and got["ssim"] == pytest.approx(want_ssim, rel=1e-12)


def test_planes_are_load_images_values_in_float64():
    pixels = RNG.integers(0, 256, (13, 15, 3), dtype=np.uint8)
    planes = pixel_planes(pixels, crop_border=1)
    assert planes.dtype == np.float64 and planes.shape == (3, 11, 13)
    assert np.array_equal(planes, pixels_to_tensor(pixels)[:, 1:-1, 1:-1].double().numpy())
    assert fidelity_scores(pixels, pixels, ["psnr", "ssim"]) == {"psnr": float("inf"), "ssim": pytest.approx(1.0, abs=1e-12)}


@pytest.mark.parametrize(("mode", "array"), [
    ("RGB", RNG.integers(0, 256, (13, 17, 3), dtype=np.uint8)),
    ("L", RNG.integers(0, 256, (13, 17), dtype=np.uint8)),
    ("I;16", RNG.integers(0, 65536, (13, 17), dtype=np.uint16)),
])  # fmt: skip
def test_load_pixels_is_load_image_unscaled(tmp_path, mode, array):
    path = tmp_path / "a.png"
    Image.fromarray(array).save(path)
    pixels = load_pixels(path)
    assert pixels.dtype == array.dtype and np.array_equal(pixels, array)
    assert torch.equal(pixels_to_tensor(pixels), load_image(path))


def test_read_pair_is_the_pixel_pair_as_tensors(tmp_path):
    (tmp_path / "p").mkdir(), (tmp_path / "r").mkdir()
    Image.fromarray(RNG.integers(0, 256, (12, 14), dtype=np.uint8)).save(tmp_path / "p" / "a.png")
    Image.fromarray(RNG.integers(0, 256, (12, 14, 3), dtype=np.uint8)).save(tmp_path / "r" / "a.png")
    pred, ref = str(tmp_path / "p" / "a.png"), str(tmp_path / "r" / "a.png")
    pixels = read_pixel_pair(pred, ref)
    assert pixels.channels == 3 and pixels.warning.startswith("gray prediction against an RGB reference")
    tensors = read_pair(pred, ref)
    assert torch.equal(tensors.pred, load_image(pred)) and torch.equal(tensors.ref, load_image(ref))
    kept = read_pixel_pair(pred, pred)
    assert kept.channels == 1 and kept.pred.shape == (12, 14) and read_pair(pred, pred).pred.shape == (1, 12, 14)


_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def png_bytes(array, *, interlaced, cut=0):
    """An 8-bit RGB PNG of ``array`` (filter 0), its decompressed data shortened by ``cut`` bytes."""
    height, width, _ = array.shape
    if interlaced:
        passes = [array[y0::dy, x0::dx] for x0, y0, dx, dy in _ADAM7]
        raw = b"".join(b"\0" + row.tobytes() for sub in passes if sub.size for row in sub)
    else:
        raw = b"".join(b"\0" + row.tobytes() for row in array)

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, int(interlaced))
    data = zlib.compress(raw[: len(raw) - cut])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


@pytest.mark.parametrize("interlaced", [False, True])
def test_truncated_pngs_are_still_refused(tmp_path, interlaced):
    array = RNG.integers(1, 256, (19, 21, 3), dtype=np.uint8)  # no black pixel: only missing data is black
    (tmp_path / "whole.png").write_bytes(png_bytes(array, interlaced=interlaced))
    assert np.array_equal(load_pixels(tmp_path / "whole.png"), array)
    for cut in (1, 3 * 21 + 1, 3 * 21 * 5):  # part of the last pixel, a row, several rows
        (tmp_path / "cut.png").write_bytes(png_bytes(array, interlaced=interlaced, cut=cut))
        with pytest.raises(ImageDecodeError, match="truncated or corrupt image data"):
            load_pixels(tmp_path / "cut.png")


@pytest.mark.parametrize("interlaced", [False, True])
def test_complete_pngs_with_black_last_rows_load(tmp_path, interlaced):
    array = RNG.integers(1, 256, (10, 12, 3), dtype=np.uint8)
    array[-1] = 0  # the written-rows shortcut cannot vouch for it: the full count runs and passes
    (tmp_path / "a.png").write_bytes(png_bytes(array, interlaced=interlaced))
    assert np.array_equal(load_pixels(tmp_path / "a.png"), array)
    (tmp_path / "one.png").write_bytes(png_bytes(array[:1] + 1, interlaced=interlaced))  # one row: always counted
    assert np.array_equal(load_pixels(tmp_path / "one.png"), array[:1] + 1)


def test_ssim_in_bands_equals_the_tensor_function():
    ref = RNG.integers(0, 256, (150, 31, 3), dtype=np.uint8)  # 140 valid rows: bands of 64, 64 and 12
    pred = degraded(ref)
    x, y = (pixels_to_tensor(a)[None] for a in (pred, ref))
    got = fidelity_scores(pred, ref, ["ssim"], y_channel=True)["ssim"]
    assert got == pytest.approx(float(ssim(x, y, y_channel=True)), rel=1e-12)
