"""Pillow's process-wide settings under concurrent decoding (``featx score`` decodes in threads).

featx needs two of Pillow's module globals set its way while it reads a file:
``PIL.Image.MAX_IMAGE_PIXELS`` lifted while a header is parsed (featx applies its own limit to the
header, so a refusal quotes featx's limit) and ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` off while
pixels are decoded. A save/set/restore per call is not safe under threads: two overlapping calls
restore each other's values, Pillow's limit can stay lifted for the rest of the process, and a
decompression bomb opened afterwards is decoded (100000x100000 pixels: the machine runs out of
memory). These tests decode from many threads at once, with a tiny switch interval so that the
threads interleave inside Pillow's calls, and check the invariants directly: every image above the
limit refused, every truncated file refused, both globals as the user set them afterwards.
"""

from __future__ import annotations

import struct
import sys
import threading
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from featx.errors import ImageDecodeError
from featx.io.images import load_image, load_pixels, probe_image

THREADS, ROUNDS = 8, 60


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def header_only_png(path, width: int, height: int) -> None:
    """A PNG whose header declares ``width x height`` RGB pixels, with almost no pixel data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + png_chunk(b"IEND", b"")
    )  # fmt: skip


@pytest.fixture
def interleaved():
    """Switch threads every microsecond, so overlapping calls interleave inside Pillow's code."""
    saved = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(saved)


def run_threads(work) -> list[str]:
    """``work(index)`` in ``THREADS`` threads at once; the list of what went wrong."""
    problems: list[str] = []
    start = threading.Barrier(THREADS)

    def body(index: int) -> None:
        start.wait()
        try:
            work(index)
        except BaseException as error:  # collected and reported by the test, never lost in a thread
            problems.append(f"thread {index}: {type(error).__name__}: {error}")

    threads = [threading.Thread(target=body, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return problems


def test_concurrent_decoding_never_lifts_the_pixel_limit_for_another_call(tmp_path, monkeypatch, interleaved):
    # Pillow's limit 10000 pixels: 120x120 (14400, between 1x and 2x: Pillow would only warn) and
    # 300x300 (90000, above 2x: Pillow would raise) are both featx refusals; 16x16 is fine.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "small.png")
    header_only_png(tmp_path / "warned.png", 120, 120)
    header_only_png(tmp_path / "raised.png", 300, 300)
    decoded_over_limit: list[str] = []

    def work(index: int) -> None:
        for round_ in range(ROUNDS):
            if (index + round_) % 2:  # a trusted larger limit for this call only
                assert load_pixels(tmp_path / "small.png", max_pixels=1_000_000).shape == (16, 16, 3)
                assert probe_image(tmp_path / "small.png", max_pixels=300) == (16, 16)
                continue
            for name in ("warned.png", "raised.png"):
                try:
                    (probe_image if round_ % 4 else load_image)(tmp_path / name)
                except ImageDecodeError as error:
                    if "above the limit of 10000 pixels" not in str(error):
                        decoded_over_limit.append(f"{name}: wrong reason: {error}")
                else:
                    decoded_over_limit.append(f"{name} opened under the default limit")

    problems = run_threads(work)
    assert problems == []
    assert decoded_over_limit == []
    assert Image.MAX_IMAGE_PIXELS == 10_000  # as the user set it, after every call


def test_pillow_code_in_other_threads_never_sees_the_limit_as_none(tmp_path, monkeypatch, interleaved):
    # Pillow's size checks outside featx's header parsing (Image.crop runs one) read the global
    # twice: "is None?", then "2 * limit". Lifted to None for a moment, a crop in another thread
    # raises TypeError: unsupported operand type(s) for *: 'int' and 'NoneType'.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "small.png")
    canvas = Image.new("RGB", (32, 32))

    def work(index: int) -> None:
        for _ in range(ROUNDS * 4):
            if index % 2:
                probe_image(tmp_path / "small.png", max_pixels=1_000_000)
            else:
                assert canvas.crop((0, 0, 8, 8)).size == (8, 8)

    assert run_threads(work) == []
    assert Image.MAX_IMAGE_PIXELS == 10_000


def truncated_png(path) -> None:
    """A 64x64 PNG whose compressed pixel stream is cut in the middle (no ``IEND``)."""
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_concurrent_decoding_keeps_truncated_files_refused_and_the_users_flag(tmp_path, monkeypatch, interleaved):
    # Another library set LOAD_TRUNCATED_IMAGES globally; featx decodes with it off in every thread
    # and leaves it as that library set it.
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    truncated_png(tmp_path / "cut.png")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "whole.png")
    padded: list[str] = []

    def work(index: int) -> None:
        for round_ in range(ROUNDS):
            if (index + round_) % 2:
                assert load_pixels(tmp_path / "whole.png").shape == (64, 64, 3)
                continue
            try:
                load_pixels(tmp_path / "cut.png")
            except ImageDecodeError as error:
                if "truncated" not in str(error):
                    padded.append(f"wrong reason: {error}")
            else:
                padded.append("a truncated file decoded (padded)")

    problems = run_threads(work)
    assert problems == []
    assert padded == []
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True


def test_a_fifo_replacing_an_image_never_blocks_other_decoding_threads(tmp_path):
    # The header is read under a lock (Pillow's limit is lifted meanwhile), so opening the file must
    # never block: a FIFO is refused from the opened descriptor, not from an earlier stat.
    import os

    os.mkfifo(tmp_path / "pipe.png")
    with pytest.raises(ImageDecodeError, match="not a regular file"):
        load_image(tmp_path / "pipe.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    assert load_image(tmp_path / "a.png").shape == (3, 8, 8)
