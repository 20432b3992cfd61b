"""`featx extract` reruns and inputs that must not cost outputs or fail for the wrong reason (issue 18,
item 7): one root however a folder is named, limits that never change features never delete them,
file lists from pipes, featx's own limit in refusals, progress that counts skips first, and
warnings as one line.

References: the bytes of the outputs of the first run; expected statuses, keys and messages are
written by hand; the 100-megapixel PNG is a header written by hand from the PNG specification
(signature, IHDR with its CRC-32, IEND), so no pixel is ever stored or decoded.
"""

from __future__ import annotations

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

from featx.extract import ExtractOptions, extract_features
from featx.io.discovery import read_file_list
from featx.io.images import probe_image
from featx_cli.extract_cmd import rate
from featx_cli.main import cli

TAPS = "relu1_1,relu2_1"


def make_images(root, names, size=(24, 32), seed=0):
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(root / name)


def common(ckpt):
    return ["--weights", str(ckpt), "--taps", TAPS, "--workers", "0", "--quiet"]


def invoke(*args, input=None):
    return CliRunner().invoke(cli, ["extract", *map(str, args)], input=input, catch_exceptions=False)


def manifest(out):
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def features(out):
    return {name: (out / name).read_bytes() for name in sorted(os.listdir(out)) if name.endswith(".safetensors")}


def png_header(path, width, height):
    """A PNG that declares ``width`` x ``height`` RGB pixels and holds none (enough for a header check)."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))


@pytest.mark.parametrize("first", ["real", "link"])
def test_a_folder_named_through_a_symlinked_path_is_the_same_root(tmp_path, ckpt, first):
    # Fails on the code before the change: the second run, through the other name of the same
    # folder, was refused as "other inputs" (exit 2): roots were compared as written, not resolved.
    make_images(tmp_path / "data" / "in", ["a.png", "b.png"])
    (tmp_path / "link").symlink_to(tmp_path / "data", target_is_directory=True)
    names = {"real": tmp_path / "data" / "in", "link": tmp_path / "link" / "in"}
    out = tmp_path / "out"
    assert invoke(names[first], out, *common(ckpt)).exit_code == 0
    before = features(out)
    second = invoke(names["link" if first == "real" else "real"], out, *common(ckpt))
    assert second.exit_code == 0, second.output
    assert [line["status"] for line in manifest(out)] == ["skipped", "skipped"]
    assert features(out) == before
    owner = json.loads((out / "featx-owner.json").read_text())
    assert list(owner["roots"]) == [""]  # one root, never a second prefix


def test_a_lower_max_pixels_keeps_and_skips_outputs_already_extracted(tmp_path, ckpt):
    # Fails on the code before the change: the rerun refused both finished 768-pixel images
    # (exit 1) and deleted their valid outputs, although the limit never changes features.
    make_images(tmp_path / "in", ["a.png", "b.png"])
    out = tmp_path / "out"
    assert invoke(tmp_path / "in", out, *common(ckpt)).exit_code == 0
    before = features(out)
    make_images(tmp_path / "in", ["new.png"], seed=1)  # not extracted yet: the limit applies to it
    limited = invoke(tmp_path / "in", out, *common(ckpt), "--max-pixels", "500")
    assert limited.exit_code == 1, limited.output
    lines = {line["path"]: line for line in manifest(out)}
    assert lines["a.png"]["status"] == lines["b.png"]["status"] == "skipped"
    assert lines["new.png"]["status"] == "error" and "above the limit of 500 pixels" in lines["new.png"]["error"]
    assert "removed" not in lines["new.png"]
    assert features(out) == before  # the two outputs, byte for byte; nothing for new.png
    overwrite = invoke(tmp_path / "in", out, *common(ckpt), "--max-pixels", "500", "--overwrite")
    assert overwrite.exit_code == 1  # --overwrite recomputes, so the limit refuses all three
    lines = {line["path"]: line for line in manifest(out)}
    assert {line["status"] for line in lines.values()} == {"error"}
    assert lines["a.png"]["kept"] == "a.png.safetensors" and "its previous output is kept" in lines["a.png"]["error"]
    assert "kept" not in lines["new.png"]
    assert features(out) == before  # and still deletes nothing it could not replace


def test_a_lower_max_pixels_for_an_image_without_alpha_under_another_alpha_mode_keeps_it(tmp_path, ckpt):
    # Fails on the code before the change: see above; --alpha error after --alpha drop does not
    # change the features of an image without alpha, so its output stays (skipped).
    make_images(tmp_path / "in", ["a.png"])
    out = tmp_path / "out"
    assert invoke(tmp_path / "in", out, *common(ckpt), "--alpha", "drop").exit_code == 0
    before = features(out)
    rerun = invoke(tmp_path / "in", out, *common(ckpt), "--alpha", "error", "--max-pixels", "100")
    assert rerun.exit_code == 0, rerun.output
    assert [line["status"] for line in manifest(out)] == ["skipped"]
    assert features(out) == before


def test_files_from_stdin_reads_the_list(tmp_path, ckpt):
    # Fails on the code before the change: "Error: file list not found: -" (exit 2).
    make_images(tmp_path / "in", ["a.png", "b.png", "c.png"])
    listed = f"{tmp_path / 'in' / 'a.png'}\n# a comment\n\n{tmp_path / 'in' / 'c.png'}\n"
    out = tmp_path / "out"
    result = invoke("--files-from", "-", out, *common(ckpt), input=listed)
    assert result.exit_code == 0, result.output
    assert [line["path"] for line in manifest(out)] == ["a.png", "c.png"]


@pytest.mark.skipif(sys.platform == "win32", reason="bash process substitution")
def test_files_from_a_pipe_reads_the_stream_once(tmp_path, ckpt):
    # Fails on the code before the change: "Error: file list not found: /dev/fd/63" (exit 2): the
    # list was checked with os.path.isfile, which a pipe is not.
    make_images(tmp_path / "in", ["a.png", "b.png"])
    out = tmp_path / "out"
    featx = " ".join(f"'{part}'" for part in [sys.executable, "-m", "featx_cli.main", "extract"])
    rest = " ".join(f"'{part}'" for part in [str(out), *common(ckpt)])
    script = f"{featx} --files-from <(find '{tmp_path / 'in'}' -name '*.png' | sort) {rest}"
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    assert [line["path"] for line in manifest(out)] == ["a.png", "b.png"]


def test_a_missing_or_unreadable_file_list_is_a_setup_error(tmp_path, ckpt):
    out = tmp_path / "out"
    missing = invoke("--files-from", tmp_path / "absent.txt", out, *common(ckpt))
    assert missing.exit_code == 2 and f"Error: file list not found: {tmp_path / 'absent.txt'}" in missing.output
    (tmp_path / "folder").mkdir()
    folder = invoke("--files-from", tmp_path / "folder", out, *common(ckpt))
    assert folder.exit_code == 2 and "is a directory" in folder.output, folder.output
    with pytest.raises(FileNotFoundError, match="cannot read the file list"):
        read_file_list(tmp_path / "folder")
    assert not out.exists()


def test_a_refusal_under_max_pixels_quotes_featx_limit_not_pillows(tmp_path, ckpt):
    # Fails on the code before the change: with --max-pixels 50000000 (below Pillow's 89478485) a
    # 100-megapixel image was refused by Pillow's own check, quoting "exceeds limit of 89478485".
    png_header(tmp_path / "big.png", 10000, 10000)
    with pytest.raises(ValueError) as caught:
        probe_image(tmp_path / "big.png", max_pixels=50_000_000)
    assert "image is 10000x10000 = 100000000 pixels, above the limit of 50000000 pixels" in str(caught.value)
    assert "89478485" not in str(caught.value)
    result = invoke(tmp_path, tmp_path / "out", *common(ckpt), "--max-pixels", "50000000", "--dry-run")
    assert "above the limit of 50000000 pixels" in result.output and "89478485" not in result.output
    assert probe_image(tmp_path / "big.png", max_pixels=100_000_000) == (10000, 10000)  # a trusted scan opens


def test_skipped_images_are_counted_before_any_work_starts(tmp_path, ckpt):
    # Fails on the code before the change: an up-to-date image sharing a batch with a new one was
    # recorded only when that batch had been decoded and computed (the bar counted it late).
    make_images(tmp_path / "in", ["a.png", "c.png"])
    options = dict(taps=TAPS, weights=str(ckpt), num_workers=0, batch_size=4)
    out = tmp_path / "out"
    extract_features([str(tmp_path / "in")], str(out), ExtractOptions(**options))
    make_images(tmp_path / "in", ["b.png", "d.png"], seed=1)  # same size: one batch with a and c
    order = []
    extract_features([str(tmp_path / "in")], str(out), ExtractOptions(**options, on_record=lambda r: order.append(r)))
    assert [(r["path"], r["status"]) for r in order] == [
        ("a.png", "skipped"), ("c.png", "skipped"), ("b.png", "ok"), ("d.png", "ok")
    ]  # fmt: skip


def test_the_summary_speaks_of_seconds_per_image_below_one_image_a_second():
    # Fails on the code before the change: a run of 280 s per image said "0.00 img/s extracted".
    assert rate(2, 560.0) == "280.0 s/img"
    assert rate(96, 12.0) == "8.00 img/s"
    assert rate(1, 1.0) == "1.00 img/s"
    assert rate(0, 5.0) == "0 img/s"


def test_warnings_print_as_one_featx_line_without_python_file_and_line(tmp_path, ckpt, monkeypatch):
    # Fails on the code before the change: the memory plan's FeatxWarning printed as
    # ".../engine.py:405: FeatxWarning: max_memory ..." followed by the source line.
    from featx.extract import memory_plan as memory_plan_module

    make_images(tmp_path / "in", ["a.png"])
    monkeypatch.setattr(memory_plan_module, "WORKER_BYTES", 1 << 60)  # no room for any decoding worker
    args = ["extract", str(tmp_path / "in"), str(tmp_path / "out"), "--weights", str(ckpt), "--taps", TAPS]
    result = CliRunner().invoke(cli, [*args, "--workers", "2", "--quiet"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    warned = [line for line in lines if "warning" in line.lower()]
    assert len(warned) == 1 and warned[0].startswith("featx: warning: max_memory "), lines
    assert "decoding runs in 0 worker process(es) (the main process)" in warned[0]
    assert not [line for line in lines if ".py:" in line or "warnings.warn" in line or "FeatxWarning" in line]


def test_dry_run_summary_and_manifest_say_which_images_are_tiled_and_the_disk_the_run_writes(tmp_path, ckpt):
    # Fails on the code before the change: neither the dry run, the summary nor the manifest said
    # which images were tiled or how, and the dry run gave no estimate of the disk it would write.
    # Reference for the estimate, by hand: float32 relu1_1 (64, 24, 32) + relu2_1 (128, 12, 16) per
    # 24x32 image = 196608 + 98304 bytes; the real files add only their JSON headers.
    make_images(tmp_path / "in", ["a.png", "b.png"])
    make_images(tmp_path / "in", ["small.png"], size=(16, 16))  # not above --tile 16: untiled
    out = tmp_path / "out"
    args = [tmp_path / "in", out, "--weights", ckpt, "--taps", TAPS, "--workers", "0", "--tile", "16"]
    dry = invoke(*args, "--dry-run", "--quiet")
    assert dry.exit_code == 0, dry.output
    lines = dry.output.splitlines()
    assert "extract  a.png (tiles of 16 px)" in lines and "extract  b.png (tiles of 16 px)" in lines
    assert "extract  small.png" in lines
    expected = 2 * (196608 + 98304) + (64 * 16 * 16 + 128 * 8 * 8) * 4
    assert expected == 688128  # 672.0 KiB
    assert (
        "dry run: 3 images: 3 to extract (2 in tiles), 0 up to date, 0 failing; "
        "about 672.0 KiB of feature files to write; nothing written"
    ) in lines
    assert not out.exists()

    real = invoke(*args)
    assert real.exit_code == 0, real.output
    assert '\n  tiled:    2 images in tiles of 16 px (a.png, b.png; "tile" in the manifest)\n' in real.output
    records = {line["path"]: line for line in manifest(out)}
    assert records["a.png"]["tile"] == records["b.png"]["tile"] == 16 and "tile" not in records["small.png"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tiled"] == [{"path": "a.png", "tile": 16}, {"path": "b.png", "tile": 16}]
    written = sum(path.stat().st_size for path in out.glob("*.safetensors"))
    assert expected < written < expected + 3 * 4096  # the estimate leaves out only the headers


def test_a_dry_run_refuses_a_budget_the_real_run_would_refuse(tmp_path, ckpt):
    # The dry run now plans memory as the real run does (to name the images it would tile), so a
    # --max-memory below what the process already uses is refused by both, in one line, exit 2.
    make_images(tmp_path / "in", ["a.png"])
    out = tmp_path / "out"
    args = [tmp_path / "in", out, "--weights", ckpt, "--taps", TAPS, "--workers", "0", "--max-memory", "1MiB", "--quiet"]
    for extra in (["--dry-run"], []):
        result = invoke(*args, *extra)
        assert result.exit_code == 2, result.output
        errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
        assert len(errors) == 1 and "is below what the process already uses" in errors[0]
        assert "Traceback" not in result.output and not out.exists()
