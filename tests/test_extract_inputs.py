"""Every name, every file, every failure: ``featx extract`` on inputs that are not ordinary image files.

File names that are not UTF-8 (made with ``os.fsdecode`` of Latin-1 bytes), unreadable folders,
FIFOs, and images truncated so that Pillow still decodes them. Expected keys, reasons and exit
codes are written by hand; the exact name bytes are the ones the test wrote.
"""

from __future__ import annotations

import base64
import io
import json
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from featx.extract import feature_path
from featx.io.featfile import load_features
from featx_cli.main import cli

TAPS = "relu1_1,relu2_1"
posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX file names and permissions")


def make_image(path, seed=0, size=(24, 32)):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path, format="PNG")


def invoke(*args):
    return CliRunner().invoke(cli, ["extract", *map(str, args)], catch_exceptions=False)


def manifest(out):
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]


@posix_only
def test_names_that_are_not_utf8_are_encoded_losslessly_and_every_ok_output_loads(tmp_path, ckpt):
    # Fails on the code before the change: the Latin-1 name was reported "ok" but its feature file
    # could not be read (safetensors: "invalid JSON in header: lone leading surrogate").
    raw = b"caf\xe9.png"
    folder = tmp_path / "in"
    folder.mkdir()
    try:
        make_image(os.path.join(os.fsencode(folder), raw))
    except OSError:
        pytest.skip("the filesystem of tmp_path refuses names that are not UTF-8")
    make_image(folder / "plain.png", seed=1)
    out = tmp_path / "out"
    result = invoke(folder, out, "--weights", ckpt, "--taps", TAPS, "--workers", "0")
    assert result.exit_code == 0, result.output
    lines = manifest(out)  # valid UTF-8 JSON throughout
    assert [line["status"] for line in lines] == ["ok", "ok"]
    for line in lines:  # every "ok" output loads
        key = os.fsdecode(base64.b64decode(line["path_b64"])) if "path_b64" in line else line["path"]
        tensors, meta = load_features(feature_path(out, key))
        assert set(tensors) == {"relu1_1", "relu2_1"}
    odd = next(line for line in lines if "path_b64" in line)
    assert odd["path"] == "caf\\xe9.png" and base64.b64decode(odd["path_b64"]) == raw
    assert base64.b64decode(odd["source_b64"]) == os.path.join(os.fsencode(folder), raw)
    assert odd["output"] == "caf\\xe9.png.safetensors"
    _, meta = load_features(out / "caf\\xe9.png.safetensors")  # a UTF-8 name, as safetensors needs
    assert meta["source_key"] == "caf\\xe9.png" and base64.b64decode(meta["source_key_b64"]) == raw
    assert base64.b64decode(meta["source_path_b64"]) == os.path.join(os.fsencode(folder), raw)
    again = invoke(folder, out, "--weights", ckpt, "--taps", TAPS, "--workers", "0", "--quiet")
    assert again.exit_code == 0 and [line["status"] for line in manifest(out)] == ["skipped", "skipped"]


@posix_only
def test_a_name_that_is_not_utf8_never_takes_the_output_of_its_printable_twin(tmp_path, ckpt):
    folder = tmp_path / "in"
    folder.mkdir()
    try:
        make_image(os.path.join(os.fsencode(folder), b"caf\xe9.png"))
    except OSError:
        pytest.skip("the filesystem of tmp_path refuses names that are not UTF-8")
    make_image(folder / "caf\\xe9.png", seed=1)  # a valid name, spelled like the other's printable form
    out = tmp_path / "out"
    result = invoke(folder, out, "--weights", ckpt, "--taps", TAPS, "--workers", "0", "--quiet")
    assert result.exit_code == 1
    lines = manifest(out)
    assert [(line["status"], "path_b64" in line) for line in lines] == [("error", True), ("ok", False)]
    assert "would be the output of the image caf\\xe9.png; rename one of them" in lines[0]["error"]
    _, meta = load_features(out / "caf\\xe9.png.safetensors")
    assert meta["source_path"] == str(folder / "caf\\xe9.png") and "source_path_b64" not in meta


def test_an_unreadable_subfolder_is_an_error_record_and_exit_1(tmp_path, ckpt, monkeypatch):
    # Fails on the code before the change: the folder was skipped with a warning only, exit 0.
    # (Permission bits do not stop root, so the folder is made unreadable by failing its listing.)
    make_image_tree = tmp_path / "in" / "locked"
    make_image_tree.mkdir(parents=True)
    make_image(tmp_path / "in" / "a.png")
    make_image(make_image_tree / "b.png", seed=1)
    real_scandir = os.scandir

    def scandir(path="."):
        if os.fspath(path) == str(make_image_tree):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    out = tmp_path / "out"
    result = invoke(tmp_path / "in", out, "--weights", ckpt, "--taps", TAPS, "--workers", "0")
    assert result.exit_code == 1, result.output
    lines = {line["path"]: line for line in manifest(out)}
    assert lines["a.png"]["status"] == "ok"
    assert lines["locked"]["status"] == "error"
    assert lines["locked"]["error"] == "cannot read folder (Permission denied); its images are not included"
    assert "featx: error: locked: cannot read folder (Permission denied)" in result.stderr


@posix_only
def test_a_fifo_named_like_an_image_is_ignored_with_a_record_and_never_opened(tmp_path, ckpt):
    # Fails on the code before the change: the scan opened the FIFO and waited forever (here the
    # subprocess is killed by its timeout).
    folder = tmp_path / "in"
    folder.mkdir()
    make_image(folder / "a.png")
    os.mkfifo(folder / "x.png")
    out = tmp_path / "out"
    script = "from featx_cli.main import cli; cli()"
    command = [sys.executable, "-c", script, "extract", str(folder), str(out), "--weights", str(ckpt)]
    command += ["--taps", TAPS, "--workers", "0", "--quiet"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr  # not a failure: nothing to extract there
    lines = {line["path"]: line for line in manifest(out)}
    assert lines["a.png"]["status"] == "ok"
    assert lines["x.png"] == {
        "path": "x.png",
        "reason": "not a regular file (a FIFO); not read",
        "source": str(folder / "x.png"),
        "status": "ignored",
    }
    assert "featx: ignored: x.png: not a regular file (a FIFO); not read" in done.stderr
    assert json.loads((out / "summary.json").read_text())["ignored"] == 1
    from featx.errors import ImageDecodeError
    from featx.io.images import load_image

    with pytest.raises(ImageDecodeError, match="not a regular file"):  # the decoder never opens it either
        load_image(folder / "x.png")


def png_with_rows(array, rows):
    """A PNG whose header says ``array``'s full height but whose pixel data holds only ``rows`` rows."""
    height, width, _ = array.shape
    raw = b"".join(b"\0" + array[r].tobytes() for r in range(rows))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def test_truncated_images_that_pillow_still_decodes_are_refused(tmp_path, ckpt, monkeypatch):
    # Fails on the code before the change: short.png (32 of 48 rows, then a clean end) came out with
    # black rows, and with LOAD_TRUNCATED_IMAGES set by another library the half PNG and the half
    # JPEG came out black/grey; all were "ok".
    from PIL import ImageFile

    from featx.errors import ImageDecodeError
    from featx.io.images import load_image

    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)
    folder = tmp_path / "in"
    folder.mkdir()
    make_image(folder / "good.png")
    (folder / "short.png").write_bytes(png_with_rows(array, 32))
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    (folder / "half.png").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=90)
    (folder / "half.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    assert png_with_rows(array, 48) and load_image(io_path(tmp_path, png_with_rows(array, 48))).shape == (3, 48, 40)

    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # as some libraries set it
    with pytest.raises(ImageDecodeError, match=r"holds about 32 of 48 rows"):
        load_image(folder / "short.png")
    out = tmp_path / "out"
    result = invoke(folder, out, "--weights", ckpt, "--taps", TAPS, "--workers", "0", "--quiet")
    assert result.exit_code == 1, result.output
    lines = {line["path"]: line for line in manifest(out)}
    assert lines["good.png"]["status"] == "ok"
    for name in ("short.png", "half.png", "half.jpg"):
        assert lines[name]["status"] == "error", lines[name]
        assert lines[name]["error"].startswith("truncated or corrupt image data"), lines[name]
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the caller's setting is restored


def test_a_jpeg_cut_short_and_closed_with_an_end_marker_is_an_error_record(tmp_path, ckpt):
    # Fails on the code before the change: Pillow decodes the cut JPEGs (libjpeg warns and fills the
    # rest grey), so both were "ok". The dry run reads headers only and lists them as "extract", as
    # docs/cli.md says (the real run may find more once pixels are decoded).
    rng = np.random.default_rng(1)
    y, x = np.mgrid[0:48, 0:40]
    array = np.clip(np.stack([x * 6, y * 5, x + y], -1) + rng.integers(-40, 40, (48, 40, 3)), 0, 255).astype(np.uint8)
    folder = tmp_path / "in"
    folder.mkdir()
    make_image(folder / "good.png")
    for name, options in {"cut.jpg": {}, "cut-progressive.jpg": {"progressive": True}, "good.jpg": {}}.items():
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="JPEG", quality=90, **options)
        data = buffer.getvalue()
        (folder / name).write_bytes(data if name == "good.jpg" else data[: len(data) // 2] + b"\xff\xd9")
    out = tmp_path / "out"
    common = (folder, out, "--weights", ckpt, "--taps", TAPS, "--workers", "0")

    dry = invoke(*common, "--dry-run")
    assert dry.exit_code == 0, dry.output
    names = ("cut-progressive.jpg", "cut.jpg", "good.jpg", "good.png")
    assert sorted(dry.stdout.splitlines()) == [f"extract  {name}" for name in names]
    assert not out.exists()

    result = invoke(*common, "--quiet")
    assert result.exit_code == 1, result.output
    lines = {line["path"]: line for line in manifest(out)}
    assert {name: line["status"] for name, line in lines.items()} == {
        "cut-progressive.jpg": "error",
        "cut.jpg": "error",
        "good.jpg": "ok",
        "good.png": "ok",
    }
    for name in ("cut.jpg", "cut-progressive.jpg"):
        assert lines[name]["error"].startswith("truncated or corrupt image data (the JPEG's compressed data ends"), lines[name]
        assert f"featx: error: {name}: truncated or corrupt image data" in result.stderr
        assert not (out / f"{name}.safetensors").exists()
    for name in ("good.jpg", "good.png"):
        tensors, metadata = load_features(out / f"{name}.safetensors")
        assert metadata["source_key"] == name and set(tensors) == set(TAPS.split(","))


def io_path(tmp_path, data):
    path = tmp_path / "complete.png"
    path.write_bytes(data)
    return path


def test_an_absent_device_is_a_setup_error_without_a_traceback(tmp_path):
    # Fails on the code before the change: a RuntimeError traceback from torch (exit 1).
    import torch

    folder = tmp_path / "in"
    folder.mkdir()
    make_image(folder / "a.png")
    absent = ["cuda:99"]  # more devices than any machine has
    if not torch.cuda.is_available():
        absent.append("cuda")
    if not torch.backends.mps.is_available():
        absent.append("mps")
    for device in absent:
        result = CliRunner().invoke(cli, ["extract", str(folder), str(tmp_path / "out"), "--weights", "random",
                                          "--device", device, "--workers", "0"])  # fmt: skip
        assert result.exit_code == 2, (device, result.output)
        assert f"device {device!r} is not available" in result.output and "Traceback" not in result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)
    assert not (tmp_path / "out").exists()


def test_a_full_disk_at_the_manifest_is_a_clear_error_and_keeps_the_previous_manifest(tmp_path, ckpt, monkeypatch):
    # Fails on the code before the change: an OSError traceback from write_atomic.
    import errno

    import featx.extract.summary

    folder = tmp_path / "in"
    folder.mkdir()
    make_image(folder / "a.png")
    out = tmp_path / "out"
    common = [folder, out, "--weights", ckpt, "--taps", TAPS, "--workers", "0", "--quiet"]
    assert invoke(*common).exit_code == 0
    before = (out / "manifest.jsonl").read_bytes()
    make_image(folder / "b.png", seed=1)
    real = featx.extract.summary.write_atomic

    def full_disk(path, chunks, **kwargs):
        if os.path.basename(path) in ("manifest.jsonl", "summary.json"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, chunks, **kwargs)

    monkeypatch.setattr(featx.extract.summary, "write_atomic", full_disk)
    result = CliRunner().invoke(cli, ["extract", *map(str, common)])
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)  # no traceback
    assert f"cannot write {out / 'manifest.jsonl'} (No space left on device): the previous one is kept" in result.output
    assert "this run's manifest lines stay in manifest.rank0.jsonl" in result.output
    assert (out / "manifest.jsonl").read_bytes() == before
    assert feature_path(out, "b.png").exists()  # the work is done; a rerun skips it
    monkeypatch.setattr(featx.extract.summary, "write_atomic", real)
    rerun = invoke(*common)
    assert rerun.exit_code == 0 and [line["status"] for line in manifest(out)] == ["skipped", "skipped"]


def test_a_closed_stderr_does_not_stop_the_run(tmp_path, ckpt):
    # Fails on the code before the change: once the reader of `2>&1 | head -2` was gone, the next
    # write to stderr (a progress bar update or an error line, in the writer thread) raised
    # BrokenPipeError and the run stopped without its manifest.
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("0bad.png", "1bad.png", "2bad.png"):
        (folder / name).write_text("not an image")
    for i in range(6):
        make_image(folder / f"img{i}.png", seed=i)
    out = tmp_path / "out"
    script = "from featx_cli.main import cli; cli()"
    command = [sys.executable, "-c", script, "extract", str(folder), str(out), "--weights", str(ckpt)]
    command += ["--taps", TAPS, "--workers", "0", "--batch-size", "1", "--skip-errors"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    first = [process.stdout.readline() for _ in range(2)]  # `| head -2`
    process.stdout.close()
    assert process.wait(timeout=120) == 0, first
    assert [line["status"] for line in manifest(out)] == ["error"] * 3 + ["ok"] * 6
    assert json.loads((out / "summary.json").read_text())["ok"] == 6


@posix_only
def test_a_dead_decode_worker_costs_only_the_image_that_killed_it(tmp_path, ckpt, monkeypatch):
    # Fails on the code before the change: "DataLoader worker ... is killed by signal" aborted the run.
    import signal

    import featx.extract.decoding

    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(6):
        make_image(folder / f"img{i}.png", seed=i)
    make_image(folder / "killer.png", seed=9)
    main = os.getpid()
    real = featx.extract.decoding.load_image

    def deadly(path, **kwargs):  # a decoder that crashes on one file (as a segfault would)
        if os.path.basename(path) == "killer.png" and os.getpid() != main:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(path, **kwargs)

    monkeypatch.setattr(featx.extract.decoding, "load_image", deadly)
    out = tmp_path / "out"
    result = invoke(folder, out, "--weights", ckpt, "--taps", TAPS, "--workers", "2", "--batch-size", "2")
    assert result.exit_code == 1, result.output
    lines = {line["path"]: line for line in manifest(out)}
    assert lines["killer.png"]["status"] == "error"
    assert lines["killer.png"]["error"] == "the image decoder process died on this file (killed by signal SIGKILL); skipped"
    assert sorted(k for k, line in lines.items() if line["status"] == "ok") == [f"img{i}.png" for i in range(6)]
    assert len(lines) == 7


def test_an_unreadable_weights_file_is_a_setup_error_without_a_traceback(tmp_path, ckpt, monkeypatch):
    # Fails on the code before the change: PermissionError traceback while hashing the file (exit 1).
    folder = tmp_path / "in"
    folder.mkdir()
    make_image(folder / "a.png")
    weights = tmp_path / "locked.pth"
    weights.write_bytes(ckpt.read_bytes())
    weights.chmod(0)
    if os.access(weights, os.R_OK):  # root reads anything: make the read itself fail
        import featx.weights.index

        def denied(path):
            raise PermissionError(13, "Permission denied", os.fspath(path))

        monkeypatch.setattr(featx.weights.index, "sha256_file", denied)
    result = CliRunner().invoke(cli, ["extract", str(folder), str(tmp_path / "out"), "--weights", str(weights),
                                      "--taps", TAPS, "--workers", "0"])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    assert f"cannot read weights file {weights} (Permission denied)" in result.output
