"""An output folder has one owner: one run at a time (a kernel-released lock), only featx's own
temporaries are removed, resume decides from every option that changes the output, and a run with
other inputs never silently replaces files made from another source.

References: the holder's pid is the subprocess's own ``Popen.pid`` and the host
``socket.gethostname()``; expected keys, statuses and file lists are written by hand.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
from click.testing import CliRunner
from PIL import Image

from featx.extract import feature_path
from featx.io.featfile import load_features
from featx_cli.main import cli

TAPS = "relu1_1,relu2_1"
PAUSING_FEATX = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pausing_featx.py")


def make_images(root, count, size=(24, 32), seed=0, prefix="img"):
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(root / f"{prefix}{i}.png")


def invoke(*args):
    return CliRunner().invoke(cli, ["extract", *map(str, args)], catch_exceptions=False)


def manifest(out):
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def start_paused(inputs, out, common, after=1):
    """The real command in a subprocess, its writer stalled after ``after`` files; returns once they exist."""
    command = [sys.executable, PAUSING_FEATX, str(after), "extract", *map(str, inputs), str(out), *map(str, common)]
    process = subprocess.Popen([*command, "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (out.exists() and any(name.endswith(".safetensors") for name in os.listdir(out))):
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "no output appeared"
        time.sleep(0.05)
    return process


def stop(process):
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stderr.close()


def test_a_second_run_into_a_busy_output_exits_2_naming_the_holder(tmp_path, ckpt):
    # Fails on the code before the change: the second run started writing into the same folder
    # (exit 0 here, or a crash on the other's manifest parts), with no lock at all.
    make_images(tmp_path / "in", 4)
    out = tmp_path / "out"
    common = ["--weights", ckpt, "--taps", TAPS, "--batch-size", "1", "--workers", "0"]
    process = start_paused([tmp_path / "in"], out, common)
    try:
        second = invoke(tmp_path / "in", out, *common, "--dtype", "bfloat16")
        assert second.exit_code == 2, second.output
        assert "is in use by another featx extract run" in second.output
        assert f"pid {process.pid} on host {socket.gethostname()}, started 20" in second.output
        assert "Traceback" not in second.output
        assert (out / "manifest.rank0.jsonl").exists()  # the holder's manifest part, left alone
    finally:
        stop(process)
    # the kernel released the dead holder's lock: the next run goes ahead and finishes the folder
    third = invoke(tmp_path / "in", out, *common, "--quiet")
    assert third.exit_code == 0, third.output
    assert [line["status"] for line in manifest(out)].count("ok") >= 1
    assert (out / "featx.lock").read_text() == ""  # released: no holder recorded


def test_cleanup_removes_only_featx_temporaries(tmp_path, ckpt):
    # Fails on the code before the change: every hidden ``.X.<digits>.tmp`` older than the run was
    # deleted anywhere under OUT, so the user's two files below were lost.
    make_images(tmp_path / "in", 1)
    out = tmp_path / "out"
    (out / "notes").mkdir(parents=True)
    old = time.time() - 3600
    mine = {out / ".notes.2024.tmp": b"user data", out / "notes" / ".draft.7.tmp": b"more user data"}
    leftover = out / ".img0.png.safetensors.featx-4242.tmp"  # what a killed featx run leaves
    for path, data in [*mine.items(), (leftover, b"partial")]:
        path.write_bytes(data)
        os.utime(path, (old, old))
    result = invoke(tmp_path / "in", out, "--weights", ckpt, "--taps", TAPS, "--workers", "0", "--quiet")
    assert result.exit_code == 0, result.output
    assert {path: path.read_bytes() for path in mine if path.exists()} == mine  # the user's files, untouched
    assert not leftover.exists()


def test_resume_checks_alpha_and_removes_outputs_that_now_fail(tmp_path, ckpt):
    # Fails on the code before the change: under --alpha error the RGBA image extracted with
    # --alpha drop was "skipped" (exit 0). A lower --max-pixels keeps finished outputs (the limit
    # never changes features): tests/test_extract_reruns.py.
    make_images(tmp_path / "in", 1)  # img0.png, 24x32 RGB
    rgba = np.dstack([np.full((24, 32, 3), 90, np.uint8), np.full((24, 32), 200, np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "in" / "rgba.png")
    out = tmp_path / "out"
    common = ["--weights", ckpt, "--taps", TAPS, "--workers", "0", "--quiet"]
    assert invoke(tmp_path / "in", out, *common, "--alpha", "drop").exit_code == 0
    assert feature_path(out, "rgba.png").exists()

    strict = invoke(tmp_path / "in", out, *common)  # --alpha error (the default)
    assert strict.exit_code == 1, strict.output
    lines = {line["path"]: line for line in manifest(out)}
    assert lines["img0.png"]["status"] == "skipped"  # no alpha: its output is the same either way
    assert lines["rgba.png"]["status"] == "error" and "--alpha drop" in lines["rgba.png"]["error"]
    assert lines["rgba.png"]["removed"] == "rgba.png.safetensors"
    assert not feature_path(out, "rgba.png").exists()  # no output left looking valid

    assert invoke(tmp_path / "in", out, *common, "--alpha", "drop").exit_code == 0  # rgba comes back
    assert [line["status"] for line in manifest(out)] == ["skipped", "ok"]


def test_a_run_with_other_inputs_is_refused_and_add_inputs_keeps_keys_distinct(tmp_path, ckpt):
    # Fails on the code before the change: `extract val/ feats/` after `extract train/ feats/` wrote
    # val's img0.png over train's (same key, exit 0) and the manifest forgot the train images.
    make_images(tmp_path / "train", 2, seed=0)
    make_images(tmp_path / "val", 1, seed=1)
    out = tmp_path / "feats"
    common = ["--weights", ckpt, "--taps", TAPS, "--workers", "0", "--quiet"]
    assert invoke(tmp_path / "train", out, *common).exit_code == 0
    train_bytes = feature_path(out, "img0.png").read_bytes()

    refused = invoke(tmp_path / "val", out, *common)
    assert refused.exit_code == 2, refused.output
    owner = json.loads((out / "featx-owner.json").read_text())
    assert owner["roots"] == {"": str(tmp_path / "train")} and owner["config"]["taps"] == TAPS
    assert f"holds features of the images under {tmp_path / 'train'}" in refused.output
    assert "Write to a new output folder, or pass --add-inputs" in refused.output and "'val/'" in refused.output
    assert feature_path(out, "img0.png").read_bytes() == train_bytes  # nothing replaced
    assert [line["path"] for line in manifest(out)] == ["img0.png", "img1.png"]  # nor forgotten

    added = invoke(tmp_path / "val", out, *common, "--add-inputs")
    assert added.exit_code == 0, added.output
    assert feature_path(out, "img0.png").read_bytes() == train_bytes
    _, meta = load_features(feature_path(out, "val/img0.png"))
    assert meta["source_path"] == str(tmp_path / "val" / "img0.png") and meta["source_key"] == "val/img0.png"
    assert [(line["path"], line["status"]) for line in manifest(out)] == [
        ("img0.png", "ok"), ("img1.png", "ok"), ("val/img0.png", "ok")
    ]  # fmt: skip
    assert json.loads((out / "featx-owner.json").read_text())["roots"] == {
        "": str(tmp_path / "train"), "val": str(tmp_path / "val")
    }  # fmt: skip
    again = invoke(tmp_path / "val", out, *common)  # a recorded root: its prefix, no flag needed
    assert again.exit_code == 0, again.output
    assert {line["path"]: line["status"] for line in manifest(out)}["val/img0.png"] == "skipped"


def test_outputs_of_deleted_images_are_listed_as_stale_and_foreign_files_never_replaced(tmp_path, ckpt):
    make_images(tmp_path / "in", 3)
    out = tmp_path / "out"
    common = ["--weights", ckpt, "--taps", TAPS, "--workers", "0"]
    assert invoke(tmp_path / "in", out, *common, "--quiet").exit_code == 0
    os.unlink(tmp_path / "in" / "img1.png")
    result = invoke(tmp_path / "in", out, *common)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stale"] == [{"path": "img1.png", "reason": "image not found"}]
    assert "stale:    1 outputs of images that are gone" in result.stdout
    assert [line["path"] for line in manifest(out)] == ["img0.png", "img2.png"]

    # a feature file at img2's name that another image made is an error, and is kept as it is
    foreign = feature_path(out, "img0.png").read_bytes()
    feature_path(out, "img2.png").write_bytes(foreign)
    clash = invoke(tmp_path / "in", out, *common, "--overwrite", "--quiet")
    assert clash.exit_code == 1
    assert "img2.png: its output img2.png.safetensors was made from another image" in clash.stderr
    assert feature_path(out, "img2.png").read_bytes() == foreign
