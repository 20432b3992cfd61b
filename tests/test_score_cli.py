"""`featx score` failures: one line, the documented exit code (docs/cli.md), and what could be
written was written. Write failures are injected as the OSError a full disk or a refused
permission raises (the process runs as root here, where permissions do not stop writes)."""

from __future__ import annotations

import base64
import errno
import json
import os

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import featx.metrics.score_output as score_output
from featx_cli import score_cmd
from featx_cli.main import cli

RNG = np.random.default_rng(3)


@pytest.fixture()
def folders(tmp_path):
    """sr/ and hr/: one noisy pair and one identical pair (PSNR inf)."""
    pred, ref = tmp_path / "sr", tmp_path / "hr"
    pred.mkdir(), ref.mkdir()
    for name, noise in (("a.png", 10), ("same.png", 0)):
        image = RNG.integers(0, 256, (24, 26, 3), dtype=np.uint8)
        Image.fromarray(image).save(ref / name)
        noisy = np.clip(image.astype(int) + RNG.integers(-noise, noise + 1, image.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(pred / name)
    return pred, ref


def run(*args):
    result = CliRunner().invoke(cli, ["score", *map(str, args), "--quiet"])
    assert "Traceback" not in result.output and (result.exception is None or isinstance(result.exception, SystemExit))
    return result


def failing_write(kind: int, suffix: str):
    original = score_output.write_atomic

    def write(path, chunks, **options):
        if os.fspath(path).endswith(suffix):
            raise OSError(kind, os.strerror(kind), os.fspath(path))
        return original(path, chunks, **options)

    return write


def test_strict_json_records_an_infinite_psnr_as_null_with_a_count(folders, tmp_path):
    pred, ref = folders
    result = run(pred, ref, "--out", tmp_path / "s.csv")
    assert result.exit_code == 0, result.output
    assert "psnr inf (1 identical pair(s); " in result.output
    text = (tmp_path / "s.json").read_text()
    payload = json.loads(text, parse_constant=lambda name: pytest.fail(f"non-strict JSON constant {name}"))
    assert payload["means"]["psnr"] is None and payload["infinite"] == {"psnr": 1, "ssim": 0}
    finite = [float(row.split(",")[1]) for row in (tmp_path / "s.csv").read_text().splitlines()[1:] if "inf" not in row]
    assert payload["finite_means"]["psnr"] == pytest.approx(np.mean(finite))
    assert "same.png,inf,1.0" in (tmp_path / "s.csv").read_text()


@pytest.mark.parametrize("kind", [errno.ENOSPC, errno.EACCES])
def test_a_failed_summary_keeps_the_rows(folders, tmp_path, monkeypatch, kind):
    pred, ref = folders
    monkeypatch.setattr(score_output, "write_atomic", failing_write(kind, ".json"))
    result = run(pred, ref, "--out", tmp_path / "s.csv")
    assert result.exit_code == 1, result.output
    assert f"featx: error: cannot write {tmp_path / 's.json'}: {os.strerror(kind)}" in result.output
    assert (tmp_path / "s.csv").read_text().startswith("key,psnr,ssim\na.png,")
    assert "featx score: wrote " in result.output and "mean psnr" in result.output  # the means were printed


def test_a_failed_csv_leaves_the_old_file_and_still_writes_the_summary(folders, tmp_path, monkeypatch):
    pred, ref = folders
    (tmp_path / "s.csv").write_text("old rows\n")
    monkeypatch.setattr(score_output, "write_atomic", failing_write(errno.ENOSPC, ".csv"))
    result = run(pred, ref, "--out", tmp_path / "s.csv")
    assert result.exit_code == 1 and "No space left on device" in result.output
    assert (tmp_path / "s.csv").read_text() == "old rows\n" and json.loads((tmp_path / "s.json").read_text())["scored"] == 2


@pytest.mark.skipif(os.name != "posix", reason="POSIX file names are bytes")
def test_a_name_that_is_not_utf8_is_written_losslessly(folders, tmp_path):
    pred, ref = folders
    raw = b"caf\xe9.png"
    for folder in (pred, ref):
        os.rename(folder / "a.png", os.path.join(os.fsencode(folder), raw))
    result = run(pred, ref, "--out", tmp_path / "s.csv")
    assert result.exit_code == 0, result.output
    rows = (tmp_path / "s.csv").read_text(encoding="utf-8").splitlines()
    assert rows[1].startswith("caf\\xe9.png,")
    names = json.loads((tmp_path / "s.json").read_text(encoding="utf-8"))["names_b64"]
    assert base64.b64decode(names["caf\\xe9.png"]) == raw


def test_out_inside_an_input_or_named_json_is_refused(folders, tmp_path):
    pred, ref = folders
    before = (pred / "a.png").read_bytes()
    inside = run(pred, ref, "--out", pred / "a.png")
    assert inside.exit_code == 2 and "would be written inside the input folder" in inside.output
    assert (pred / "a.png").read_bytes() == before and not (pred / "a.json").exists()
    assert run(pred, ref, "--out", ref / "sub" / "s.csv").exit_code == 2
    named_json = run(pred, ref, "--out", tmp_path / "scores.json")
    assert named_json.exit_code == 2 and "give a .csv name" in named_json.output
    assert not (tmp_path / "scores.json").exists()


def test_setup_errors_exit_2_with_one_line(tmp_path):
    (tmp_path / "sr").mkdir(), (tmp_path / "hr").mkdir()
    empty = run(tmp_path / "sr", tmp_path / "hr", "--out", tmp_path / "s.csv")
    assert empty.exit_code == 2 and "no images found in" in empty.output and not (tmp_path / "s.csv").exists()
    assert len(empty.output.strip().splitlines()) == 1
    both = run(tmp_path / "sr", tmp_path / "hr", "--pred-suffix", "_x4", "--pred-pattern", "{stem}_x4")
    assert both.exit_code == 2 and "not both" in both.output


def test_failed_pairs_exit_1_and_gray_against_rgb_warns_once(tmp_path):
    pred, ref = tmp_path / "sr", tmp_path / "hr"
    pred.mkdir(), ref.mkdir()
    gray = RNG.integers(0, 256, (30, 30), dtype=np.uint8)
    Image.fromarray(gray).save(pred / "g.png")
    Image.fromarray(np.dstack([gray] * 3)).save(ref / "g.png")
    Image.fromarray(gray[:15, :15]).save(pred / "tiny.png")
    Image.fromarray(gray[:15, :15]).save(ref / "tiny.png")
    result = run(pred, ref, "--out", tmp_path / "s.csv", "--crop-border", "4")
    assert result.exit_code == 1, result.output
    warning_lines = [line for line in result.output.splitlines() if line.startswith("featx: warning:")]
    assert len(warning_lines) == 1 and "1 pair(s) compare a gray image with an RGB one" in warning_lines[0]
    assert "featx: error: tiny.png: too small for ssim: needs at least 11x11 pixels" in result.output
    assert "1 of 2 pairs scored (1 failed)" in result.output


def test_cli_choices_match_the_library():
    from featx.metrics.conventions import CROP_SCOPES, GRAY_MODES
    from featx.metrics.lpips import LPIPS_NETS

    assert score_cmd.GRAY_MODES == GRAY_MODES and score_cmd.CROP_SCOPES == CROP_SCOPES
    assert score_cmd.LPIPS_NETS == tuple(LPIPS_NETS)


def test_a_full_disk_keeps_the_rows_on_a_real_tmpfs(folders, tmp_path):
    # a private mount namespace with a 12 KiB tmpfs, 8 KiB of it filled: the CSV fits, the summary not
    import shutil
    import subprocess
    import sys

    if shutil.which("unshare") is None:
        pytest.skip("no unshare here")
    pred, ref = folders
    mount, kept = tmp_path / "mnt", tmp_path / "kept"
    mount.mkdir(), kept.mkdir()
    featx = [sys.executable, "-c", "from featx_cli.main import cli; cli()"]
    script = (
        f"mount -t tmpfs -o size=12k tmpfs {mount} || exit 99; head -c 8192 /dev/zero > {mount}/filler; "
        f'"$@" score {pred} {ref} --out {mount}/s.csv --quiet --workers 0 2> {kept}/stderr; echo $? > {kept}/code; '
        f"cp {mount}/s.csv {kept}/ 2>/dev/null; ls {mount} > {kept}/listing"
    )
    done = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", *featx], timeout=300)
    if done.returncode == 99 or not (kept / "code").exists():
        pytest.skip("cannot mount a tmpfs here")
    stderr = (kept / "stderr").read_text()
    assert (kept / "code").read_text().strip() == "1", stderr
    assert "Traceback" not in stderr and "No space left on device" in stderr
    assert (kept / "s.csv").read_text().startswith("key,psnr,ssim\na.png,")
    assert (kept / "listing").read_text().split() == ["filler", "s.csv"]  # no temporary left behind
