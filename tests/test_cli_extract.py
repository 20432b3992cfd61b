"""`featx extract` end to end: mixed real-world inputs, bad files, kill and resume, usage errors.

Reference features come from calling ``VGGFeatures`` directly on ``featx.io.images.load_image`` output
with the same checkpoint file (saved random weights); expected failures are written by hand.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest
import skimage.data
import torch
from click.testing import CliRunner
from PIL import Image

from featx.backbones.vgg.features import VGGFeatures
from featx.extract import feature_path
from featx.io.featfile import load_features
from featx.io.images import load_image
from featx_cli.main import cli

TAPS = "relu1_1,relu2_1"
PAUSING_FEATX = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pausing_featx.py")


def small(array: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.asarray(Image.fromarray(array).resize((width, height), Image.Resampling.BILINEAR))


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def good_corpus(root) -> dict[str, tuple[int, int]]:
    """scikit-image pictures at tiny mixed sizes and modes; returns key -> decoded (H, W)."""
    d = skimage.data
    (root / "sub" / "deep").mkdir(parents=True)
    Image.fromarray(small(d.astronaut(), 32, 24)).save(root / "astronaut.png")
    Image.fromarray(small(d.astronaut()[::-1], 32, 24)).save(root / "astronaut_flipped.png")  # same size: batched
    Image.fromarray(small(d.coffee(), 36, 24)).save(root / "sub" / "COFFEE.JPG", quality=95)  # upper-case ext
    Image.fromarray(small(d.camera(), 24, 24)).save(root / "sub" / "deep" / "camera.png")  # gray
    rgba = np.dstack([small(d.chelsea(), 32, 24), np.full((24, 32), 200, np.uint8)])
    Image.fromarray(rgba).save(root / "chelsea_rgba.png")  # needs --alpha drop
    brick16 = small(d.brick(), 24, 24).astype(np.uint16) * 257 + 3
    Image.fromarray(brick16).save(root / "sub" / "brick16.png")  # 16-bit gray
    Image.fromarray(small(d.coffee(), 32, 24)).quantize(16).save(root / "coffee_palette.png")  # palette
    rotated = Image.fromarray(small(d.chelsea(), 40, 24))
    exif = rotated.getexif()
    exif[0x0112] = 6  # stored 24x40, shown 40x24
    rotated.save(root / "sub" / "rotated.jpeg", exif=exif.tobytes())
    Image.fromarray(small(d.gravel(), 28, 20)).save(root / "GRAVEL.PNG")
    return {
        "GRAVEL.PNG": (20, 28),
        "astronaut.png": (24, 32),
        "astronaut_flipped.png": (24, 32),
        "chelsea_rgba.png": (24, 32),
        "coffee_palette.png": (24, 32),
        "sub/COFFEE.JPG": (24, 36),
        "sub/brick16.png": (24, 24),
        "sub/deep/camera.png": (24, 24),
        "sub/rotated.jpeg": (40, 24),
    }


def bad_corpus(root) -> dict[str, str]:
    """Broken inputs next to two good ones; returns name -> expected reason (regex)."""
    root.mkdir(parents=True, exist_ok=True)
    Image.fromarray(small(skimage.data.astronaut(), 24, 16)).save(root / "good1.png")
    Image.fromarray(small(skimage.data.coffee(), 24, 16)).save(root / "good2.jpg")
    png = (root / "good1.png").read_bytes()
    jpg = (root / "good2.jpg").read_bytes()
    (root / "zero.png").write_bytes(b"")
    (root / "trunc.png").write_bytes(png[: len(png) // 2])
    (root / "trunc.jpg").write_bytes(jpg[: len(jpg) // 2])
    (root / "text.png").write_text("this is not an image\n")
    import tifffile

    tifffile.imwrite(
        root / "two.tif", np.zeros((8, 8, 2), np.uint8), photometric="minisblack", extrasamples=["unspecified"]
    )
    Image.new("RGBA", (16, 16)).save(root / "alpha.png")
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    (root / "bomb.png").write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"\0" * 8))
        + png_chunk(b"IEND", b"")
    )
    return {
        "zero.png": r"empty file \(0 bytes\)",
        "trunc.png": "truncated",
        "trunc.jpg": "truncated",
        "text.png": "cannot identify the file format",
        "two.tif": "unsupported channel count: 2 channels",
        "alpha.png": "has an alpha channel .*--alpha drop",
        "bomb.png": "decompression-bomb",
    }


def manifest(out):
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def invoke(*args):
    return CliRunner().invoke(cli, ["extract", *map(str, args)], catch_exceptions=False)


def test_mixed_corpus_matches_direct_extractor(tmp_path, ckpt):
    expected_sizes = good_corpus(tmp_path / "in")
    out = tmp_path / "out"
    result = invoke(tmp_path / "in", out, "--weights", ckpt, "--taps", TAPS, "--alpha", "drop", "--batch-size", "3")
    assert result.exit_code == 0, result.output
    assert "9 images: 9 extracted, 0 skipped (up to date), 0 failed" in result.stdout
    assert f"features: {out}" in result.stdout
    model = VGGFeatures("vgg19", TAPS, weights=str(ckpt))
    for key, (height, width) in expected_sizes.items():
        image = load_image(tmp_path / "in" / key, alpha="drop")
        assert image.shape == (3, height, width)
        with torch.no_grad():
            expected = model(image[None])
        tensors, meta = load_features(feature_path(out, key))
        assert meta["source_key"] == key and meta["taps"] == TAPS
        for name in ("relu1_1", "relu2_1"):
            # same weights file on both sides; batched forward may differ only in the last bits
            torch.testing.assert_close(tensors[name], expected[name][0], rtol=1e-4, atol=1e-5)
    lines = manifest(out)
    assert [line["path"] for line in lines] == sorted(expected_sizes)
    assert all(line["status"] == "ok" for line in lines)
    assert {line["path"]: line["shapes"]["relu2_1"] for line in lines}["sub/rotated.jpeg"] == [128, 20, 12]
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["files"], summary["ok"], summary["skipped"], summary["error"]) == (9, 9, 0, 0)

    again = invoke(tmp_path / "in", out, "--weights", ckpt, "--taps", TAPS, "--alpha", "drop", "--quiet")
    assert again.exit_code == 0 and again.output == ""  # quiet and nothing failed: silent
    assert {line["status"] for line in manifest(out)} == {"skipped"}

    # the page-cache write path (--no-direct-io, no fsync, no malloc tuning) writes the same bytes
    cached = tmp_path / "cached"
    options = ("--alpha", "drop", "--batch-size", "3", "--no-direct-io", "--no-fsync", "--no-malloc-tuning", "--quiet")
    assert invoke(tmp_path / "in", cached, "--weights", ckpt, "--taps", TAPS, *options).exit_code == 0
    for key in expected_sizes:
        assert feature_path(cached, key).read_bytes() == feature_path(out, key).read_bytes()


def test_bad_files_reported_and_exit_codes(tmp_path, ckpt):
    reasons = bad_corpus(tmp_path / "in")
    out = tmp_path / "out"
    result = invoke(tmp_path / "in", out, "--weights", ckpt, "--taps", TAPS, "--workers", "2")
    assert result.exit_code == 1
    lines = {line["path"]: line for line in manifest(out)}
    assert sorted(lines) == sorted([*reasons, "good1.png", "good2.jpg"])
    for name, reason in reasons.items():
        assert lines[name]["status"] == "error"
        assert __import__("re").search(reason, lines[name]["error"]), lines[name]["error"]
        assert f"featx: error: {name}: " in result.stderr  # reported on stderr as well
    assert lines["good1.png"]["status"] == lines["good2.jpg"]["status"] == "ok"
    assert "9 images: 2 extracted, 0 skipped (up to date), 7 failed" in result.stdout

    quiet = invoke(tmp_path / "in", out, "--weights", ckpt, "--taps", TAPS, "--quiet", "--skip-errors")
    assert quiet.exit_code == 0
    assert quiet.stderr.count("featx: error: ") == 7  # --quiet still reports failures
    assert "7 of 9 images failed" in quiet.stderr and "%|" not in quiet.stderr  # no progress bar


def test_alpha_without_drop_names_the_option(tmp_path, ckpt):
    good_corpus(tmp_path / "in")
    result = invoke(tmp_path / "in", tmp_path / "out", "--weights", ckpt, "--taps", TAPS)
    assert result.exit_code == 1
    assert (
        "featx: error: chelsea_rgba.png: has an alpha channel (RGBA); pass alpha='drop' (CLI: --alpha drop)"
        in result.stderr
    )


def test_killed_run_resumes_to_identical_outputs(tmp_path, ckpt):
    rng = np.random.default_rng(0)
    (tmp_path / "in").mkdir()
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(tmp_path / "in" / f"img{i}.png")
    common = ["--weights", ckpt, "--taps", TAPS, "--batch-size", "2", "--workers", "0"]
    reference = invoke(tmp_path / "in", tmp_path / "ref", *common)
    assert reference.exit_code == 0

    out = tmp_path / "out"
    # the real command, its writer thread stalled after the third file (tests/pausing_featx.py):
    # batch [img2, img3] is then half done
    command = [sys.executable, PAUSING_FEATX, "3", "extract", tmp_path / "in", out]
    process = subprocess.Popen(
        [str(c) for c in command + common + ["--quiet"]],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    finished: list[str] = []
    try:
        while len(finished) < 3:
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "no output appeared"
            names = os.listdir(out) if out.exists() else []
            # at every moment: anything named *.safetensors is a complete, valid feature file
            finished = [n for n in names if n.endswith(".safetensors")]
            for name in finished:
                assert not name.startswith(".")
                load_features(out / name)
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
        process.stderr.close()
    assert sorted(finished) == ["img0.png.safetensors", "img1.png.safetensors", "img2.png.safetensors"]
    assert not (out / "manifest.jsonl").exists()

    resumed = invoke(tmp_path / "in", out, *common)
    assert resumed.exit_code == 0, resumed.output
    assert [(line["path"], line["status"]) for line in manifest(out)] == [
        (f"img{i}.png", "skipped" if i < 3 else "ok") for i in range(6)
    ]
    for i in range(6):
        assert (
            feature_path(out, f"img{i}.png").read_bytes() == feature_path(tmp_path / "ref", f"img{i}.png").read_bytes()
        )
    leftovers = sorted(n for n in os.listdir(out) if not n.endswith(".safetensors"))
    assert leftovers == ["featx-owner.json", "featx.lock", "manifest.jsonl", "summary.json"]  # parts merged, no temp files


def test_random_weights_warn_and_sample_images(tmp_path):
    result = invoke("--sample-images", tmp_path / "demo", "--weights", "random", "--taps", "relu1_1", "--reduce", "gap")
    assert result.exit_code == 0, result.output
    assert "--weights random: features come from randomly initialised weights" in result.stderr
    assert "NOTE: the weights were RANDOM" in result.stdout
    assert "7 images: 7 extracted" in result.stdout
    assert f"images:   {tmp_path / 'demo' / 'images'}" in result.stdout
    names = sorted(p.name for p in (tmp_path / "demo" / "images").iterdir())
    assert names == sorted(f"{n}.png" for n in ("astronaut", "brick", "camera", "chelsea", "coffee", "grass", "gravel"))
    tensors, meta = load_features(tmp_path / "demo" / "features" / "astronaut.png.safetensors")
    assert tensors["relu1_1"].shape == (64,) and meta["weights_id"] == "random" and meta["reduce"] == "gap"


def test_default_weights_missing_is_a_setup_error(tmp_path):
    bad_corpus(tmp_path / "in")
    result = invoke(tmp_path / "in", tmp_path / "out")
    assert result.exit_code == 2
    assert "weights not found" in result.output and "featx weights download" in result.output
    assert "--weights random" in result.output  # the CLI's own hint
    assert not (tmp_path / "out" / "manifest.jsonl").exists()


def test_usage_and_setup_errors(tmp_path, ckpt):
    (tmp_path / "in").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "in" / "a.png")
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("a regular file")
    w = ["--weights", ckpt, "--taps", "relu1_1"]
    cases = [
        ([tmp_path / "in"], "missing OUTPUT folder"),
        ([], "missing arguments"),
        (
            [tmp_path / "in", tmp_path / "o", "--preset", "gatys", "--taps", "relu1_1"],
            "--preset sets the arch and taps",
        ),
        (
            [tmp_path / "in", tmp_path / "o", "--reduce", "mean", *w],
            "'mean' is not one of 'none', 'gap', 'gmp', 'gram'",
        ),
        ([tmp_path / "in", tmp_path / "o", "--batch-size", "0", *w], "--batch-size"),
        (
            [tmp_path / "in", tmp_path / "file" / "out", *w],
            r"output folder .*file/out is not writable \(Not a directory\)",
        ),
        ([tmp_path / "nope", tmp_path / "o", *w], "input not found: .*nope"),
        ([tmp_path / "empty", tmp_path / "o", *w], "no images found in .*empty"),
        (["--sample-images", tmp_path / "d", tmp_path / "in", tmp_path / "o"], "takes no INPUT/OUTPUT"),
        ([tmp_path / "in", tmp_path / "o", "--taps", "rleu1_1", "--weights", ckpt], "Did you mean 'relu1_1'"),
        ([tmp_path / "in", tmp_path / "o", "--files-from", tmp_path / "nolist.txt", *w], "file list not found"),
    ]
    for args, message in cases:
        result = invoke(*args)
        assert result.exit_code == 2, (args, result.output)
        assert __import__("re").search(message, result.output), (message, result.output)
    assert not (tmp_path / "o").exists()


def test_dry_run_lists_and_writes_nothing(tmp_path, ckpt):
    bad_corpus(tmp_path / "in")
    result = invoke(tmp_path / "in", tmp_path / "out", "--weights", ckpt, "--taps", TAPS, "--dry-run")
    assert result.exit_code == 1  # it would fail: header-level errors were found
    assert "extract  good1.png" in result.stdout and "error    zero.png: empty file (0 bytes)" in result.stdout
    assert "error    alpha.png: has an alpha channel (RGBA)" in result.stdout  # header-level, as in the real run
    assert "error    two.tif: unsupported channel count: 2 channels" in result.stdout
    assert "dry run: 9 images:" in result.stderr
    assert not (tmp_path / "out").exists()


def test_no_recursive_and_files_from(tmp_path, ckpt):
    good_corpus(tmp_path / "in")
    flat = invoke(
        tmp_path / "in", tmp_path / "flat", "--weights", ckpt, "--taps", TAPS, "--no-recursive", "--alpha", "drop"
    )
    assert flat.exit_code == 0
    assert [line["path"] for line in manifest(tmp_path / "flat")] == [
        "GRAVEL.PNG", "astronaut.png", "astronaut_flipped.png", "chelsea_rgba.png", "coffee_palette.png"
    ]  # fmt: skip
    listing = tmp_path / "list.txt"
    listing.write_text(f"{tmp_path / 'in' / 'sub' / 'COFFEE.JPG'}\n{tmp_path / 'in' / 'astronaut.png'}\n")
    listed = invoke("--files-from", listing, tmp_path / "listed", "--weights", ckpt, "--taps", TAPS)
    assert listed.exit_code == 0
    assert [line["path"] for line in manifest(tmp_path / "listed")] == ["astronaut.png", "sub/COFFEE.JPG"]


def test_choices_are_the_library_constants_and_no_torch_at_import():
    from featx.extract import DESCRIPTORS, DTYPES
    from featx.extract.engine import TORCH_DTYPES
    from featx.io.images import ALPHA_MODES

    params = {param.name: param for param in cli.commands["extract"].params}
    assert params["reduce"].type.choices == DESCRIPTORS
    assert params["dtype"].type.choices == DTYPES == tuple(TORCH_DTYPES)
    assert params["alpha"].type.choices == ALPHA_MODES
    assert "pause_after" not in params  # no test-only hooks in the shipped command
    code = "import sys, featx_cli.extract_cmd; print(sorted({'torch', 'numpy', 'PIL'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("arch", ["vgg16", "vgg11_bn"])
def test_default_taps_work_for_every_arch(tmp_path, arch):
    # Fails on the code before the change: the default taps were the ttsr_lte preset, which is
    # defined for vgg19 only, so `featx extract --arch vgg16` without --taps exited 2.
    (tmp_path / "in").mkdir()
    Image.fromarray(small(skimage.data.astronaut(), 16, 16)).save(tmp_path / "in" / "a.png")
    result = invoke(tmp_path / "in", tmp_path / "out", "--arch", arch, "--weights", "random", "--workers", "0")
    assert result.exit_code == 0, result.output
    tensors, meta = load_features(feature_path(tmp_path / "out", "a.png"))
    assert meta["arch"] == arch and meta["taps"] == "relu1_1,relu2_1,relu3_1"
    # expected shapes from VGG's plan: 64/128/256 channels at strides 1/2/4
    assert {name: tuple(t.shape) for name, t in tensors.items()} == {
        "relu1_1": (64, 16, 16), "relu2_1": (128, 8, 8), "relu3_1": (256, 4, 4)
    }  # fmt: skip


def test_dry_run_reports_alpha_like_the_real_run(tmp_path, ckpt):
    # Fails on the code before the change: the dry run listed rgba.png as "extract" (the header
    # check knew no alpha rule) and the real run then failed it.
    (tmp_path / "in").mkdir()
    Image.fromarray(small(skimage.data.astronaut(), 16, 16)).save(tmp_path / "in" / "good.png")
    rgba = np.dstack([small(skimage.data.chelsea(), 16, 16), np.full((16, 16), 200, np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "in" / "rgba.png")
    reason = "has an alpha channel (RGBA); pass alpha='drop' (CLI: --alpha drop) to discard it"
    common = (tmp_path / "in", tmp_path / "out", "--weights", ckpt, "--taps", TAPS, "--workers", "0")

    dry = invoke(*common, "--dry-run")
    assert dry.exit_code == 1  # it would fail
    assert dry.stdout.splitlines() == ["extract  good.png", f"error    rgba.png: {reason}"]
    assert "1 to extract, 0 up to date, 1 failing" in dry.stderr
    dropped = invoke(*common, "--dry-run", "--alpha", "drop")
    assert dropped.exit_code == 0
    assert dropped.stdout.splitlines() == ["extract  good.png", "extract  rgba.png"]
    assert not (tmp_path / "out").exists()

    real = invoke(*common, "--quiet")  # the real run fails the same image with the same reason
    assert real.exit_code == 1
    assert {line["path"]: line.get("error") for line in manifest(tmp_path / "out")} == {
        "good.png": None,
        "rgba.png": reason,
    }
