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
import torch
from click.testing import CliRunner
from PIL import Image

import featx.metrics.score_output as score_output
from featx.metrics import psnr
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


@pytest.mark.parametrize("kind", [errno.ENOSPC, errno.EFBIG])
def test_when_no_file_can_be_written_the_rows_are_printed_and_the_old_files_kept(folders, tmp_path, monkeypatch, kind):
    pred, ref = folders
    reference = run(pred, ref, "--out", tmp_path / "ok" / "s.csv")  # the rows a working disk gets
    assert reference.exit_code == 0, reference.output
    (tmp_path / "s.csv").write_text("old rows\n"), (tmp_path / "s.json").write_text("{}\n")
    monkeypatch.setattr(score_output, "write_atomic", failing_write(kind, ""))  # every file fails
    result = run(pred, ref, "--out", tmp_path / "s.csv")
    assert result.exit_code == 1, result.output
    reason = os.strerror(kind)
    assert [line for line in result.stderr.splitlines() if line.startswith("featx: error:")] == [
        f"featx: error: cannot write {tmp_path / 's.csv'}: {reason}; its 2 row(s) follow on stdout, as CSV",
        f"featx: error: cannot write {tmp_path / 's.json'}: {reason}",
    ]
    rows = (tmp_path / "ok" / "s.csv").read_text()
    assert result.stdout.startswith("featx score: 2 of 2 pairs scored; mean psnr inf") and result.stdout.endswith(rows)
    assert "wrote" not in result.output
    assert (tmp_path / "s.csv").read_text() == "old rows\n" and (tmp_path / "s.json").read_text() == "{}\n"


@pytest.mark.skipif(os.name != "posix", reason="POSIX file names are bytes")
def test_a_name_that_is_not_utf8_is_written_losslessly(folders, tmp_path):
    pred, ref = folders
    raw = b"caf\xe9.png"
    for folder in (pred, ref):
        os.rename(folder / "a.png", os.path.join(os.fsencode(folder), raw))
    # an undecodable prediction with a non-UTF-8 name: its error line and record keep the name too
    with open(os.path.join(os.fsencode(pred), b"bad\xfe.png"), "wb") as junk:
        junk.write(b"not an image")
    Image.new("RGB", (24, 26)).save(os.path.join(os.fsencode(ref), b"bad\xfe.png"))
    result = run(pred, ref, "--out", tmp_path / "s.csv")
    assert result.exit_code == 1, result.output
    assert "featx score: 2 of 3 pairs scored (1 failed); mean psnr inf" in result.stdout  # the means are printed
    assert "featx: error: bad\\xfe.png: " in result.stderr
    rows = (tmp_path / "s.csv").read_text(encoding="utf-8").splitlines()
    assert rows[1].startswith("caf\\xe9.png,")
    payload = json.loads((tmp_path / "s.json").read_text(encoding="utf-8"))
    assert base64.b64decode(payload["names_b64"]["caf\\xe9.png"]) == raw
    assert [base64.b64decode(error["key_b64"]) for error in payload["errors"]] == [b"bad\xfe.png"]


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


@pytest.mark.skipif(os.name != "posix", reason="symbolic links")
def test_out_reaching_an_input_through_a_link_is_refused_before_scoring(folders, tmp_path, monkeypatch):
    pred, ref = folders
    before = (pred / "a.png").read_bytes()
    (tmp_path / "link.csv").symlink_to(pred / "a.png")  # --out names an input image through a link
    (tmp_path / "pred_link").symlink_to(pred, target_is_directory=True)  # PRED given through a link

    def never(*args, **kwargs):
        raise AssertionError("scored before --out was checked")

    monkeypatch.setattr("featx.metrics.score.score_folders", never)
    for pred_arg, out in ((pred, tmp_path / "link.csv"), (tmp_path / "pred_link", pred / "s.csv"),
                          (pred, tmp_path / "pred_link" / "s.csv"), (pred, ref / ".." / "hr" / "a.png")):  # fmt: skip
        result = run(pred_arg, ref, "--out", out)
        assert result.exit_code == 2 and "would be written inside the input folder" in result.output, (out, result.output)
        assert len(result.output.strip().splitlines()) == 1
    assert (pred / "a.png").read_bytes() == before and sorted(os.listdir(pred)) == ["a.png", "same.png"]


@pytest.mark.parametrize("where", ["scoring", "summary"])
def test_ctrl_c_is_one_line_and_exit_130_with_files_complete_or_as_they_were(folders, tmp_path, monkeypatch, where):
    pred, ref = folders
    (tmp_path / "s.csv").write_text("old rows\n"), (tmp_path / "s.json").write_text("{}\n")

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    if where == "scoring":
        monkeypatch.setattr("featx.metrics.score.score_folders", interrupt)
    else:  # after the CSV was written, while the summary is
        monkeypatch.setattr(score_output, "write_summary", interrupt)
    result = run(pred, ref, "--out", tmp_path / "s.csv")
    assert result.exit_code == 130, result.output
    assert result.stderr.splitlines()[-1] == (
        "featx score: interrupted (Ctrl-C); each file at --out is either complete or as it was before"
    )
    assert "Aborted!" not in result.output and (tmp_path / "s.json").read_text() == "{}\n"
    rows = (tmp_path / "s.csv").read_text()
    if where == "scoring":
        assert rows == "old rows\n"
    else:
        assert rows.startswith("key,psnr,ssim\na.png,")  # complete: written before the interrupt
    assert sorted(os.listdir(tmp_path)) == ["hr", "s.csv", "s.json", "sr"]  # no temporary left


@pytest.mark.parametrize("metric", ["psnr", "ssim"])
def test_a_pred_batch_of_one_is_never_broadcast_over_three_targets(metric):
    from featx.metrics import ssim

    function = {"psnr": psnr, "ssim": ssim}[metric]
    pred, target = torch.rand(1, 3, 16, 16, dtype=torch.float64), torch.rand(3, 3, 16, 16, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"same shape \(B, C, H, W\), got \(1, 3, 16, 16\) and \(3, 3, 16, 16\)"):
        function(pred, target)


def test_setup_errors_exit_2_with_one_line(tmp_path):
    (tmp_path / "sr").mkdir(), (tmp_path / "hr").mkdir()
    empty = run(tmp_path / "sr", tmp_path / "hr", "--out", tmp_path / "s.csv")
    assert empty.exit_code == 2 and "no images found in" in empty.output and not (tmp_path / "s.csv").exists()
    assert len(empty.output.strip().splitlines()) == 1
    both = run(tmp_path / "sr", tmp_path / "hr", "--pred-suffix", "_x4", "--pred-pattern", "{stem}_x4")
    assert both.exit_code == 2 and "not both" in both.output


def test_failed_pairs_exit_1_and_gray_against_rgb_warns_once_naming_the_pairs_and_the_convention(tmp_path):
    pred, ref = tmp_path / "sr", tmp_path / "hr"
    pred.mkdir(), ref.mkdir()
    gray = RNG.integers(0, 256, (30, 30), dtype=np.uint8)
    color = np.dstack([gray, np.clip(gray.astype(int) + RNG.integers(-9, 10, gray.shape), 0, 255), gray]).astype(np.uint8)
    Image.fromarray(gray).save(pred / "g.png")  # a gray prediction against an RGB reference
    Image.fromarray(color).save(ref / "g.png")
    Image.fromarray(color).save(pred / "r.png")  # and the reverse
    Image.fromarray(gray).save(ref / "r.png")
    Image.fromarray(gray[:15, :15]).save(pred / "tiny.png")  # gray against RGB, but not scored
    Image.fromarray(color[:15, :15]).save(ref / "tiny.png")
    result = run(pred, ref, "--out", tmp_path / "s.csv", "--crop-border", "8", "--metrics", "psnr")
    assert result.exit_code == 1, result.output
    warning_lines = [line for line in result.output.splitlines() if line.startswith("featx: warning:")]
    assert warning_lines == [
        "featx: warning: 2 pair(s) compare a gray image with an RGB one: g.png (gray prediction), r.png (gray "
        "reference); the gray image is repeated to RGB for every metric, as BasicSR's test.py reads images "
        "(cv2.IMREAD_COLOR); BasicSR's calculate_psnr_ssim.py would stop on such a pair"
    ]
    assert "featx: error: tiny.png: too small for psnr: needs at least 1x1 pixels after crop_border=8" in result.output
    assert "2 of 3 pairs scored (1 failed)" in result.output
    # the convention, computed independently: the gray image repeated to 3 channels, float64 MSE over all of them
    repeated = np.dstack([gray] * 3)[8:-8, 8:-8].astype(np.float64) / 255
    expected = -10 * np.log10(np.mean((repeated - color[8:-8, 8:-8] / 255) ** 2))
    rows = dict(line.split(",") for line in (tmp_path / "s.csv").read_text().splitlines()[1:])
    assert float(rows["g.png"]) == pytest.approx(expected, abs=1e-6) and float(rows["r.png"]) == float(rows["g.png"])


def test_one_warning_line_names_five_pairs_and_counts_the_others(tmp_path):
    pred, ref = tmp_path / "sr", tmp_path / "hr"
    pred.mkdir(), ref.mkdir()
    gray = RNG.integers(0, 256, (16, 16), dtype=np.uint8)
    for k in range(7):
        Image.fromarray(gray).save(pred / f"{k}.png")
        Image.fromarray(np.dstack([gray] * 3)).save(ref / f"{k}.png")
    result = run(pred, ref, "--out", tmp_path / "s.csv", "--metrics", "psnr")
    assert result.exit_code == 0, result.output
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("featx: warning:")]
    assert "7 pair(s) compare a gray image with an RGB one: 0.png (gray prediction), " in line
    assert "4.png (gray prediction) and 2 more (all under warnings in the JSON summary); " in line and "5.png" not in line
    assert len(json.loads((tmp_path / "s.json").read_text())["warnings"]) == 7


@pytest.mark.parametrize("height", [9, 8])
def test_crop_border_boundary_in_featx_score_and_psnr(tmp_path, height):
    # 2 * crop_border == height - 1 leaves one row: scored, on exactly that row; == height leaves none: that pair's error
    pred, ref = tmp_path / "sr", tmp_path / "hr"
    pred.mkdir(), ref.mkdir()
    a, b = (RNG.integers(0, 256, (height, 10, 3), dtype=np.uint8) for _ in range(2))
    Image.fromarray(a).save(pred / "p.png"), Image.fromarray(b).save(ref / "p.png")
    result = run(pred, ref, "--out", tmp_path / "s.csv", "--crop-border", "4", "--metrics", "psnr")
    tensors = [torch.from_numpy(x).permute(2, 0, 1)[None].double() / 255 for x in (a, b)]
    if height == 9:
        assert result.exit_code == 0, result.output
        # reference: numpy float64 on the one row and two columns the crop leaves, [4:5, 4:6]
        expected = -10 * np.log10(np.mean((a[4:5, 4:6] / 255 - b[4:5, 4:6] / 255) ** 2))
        got = float((tmp_path / "s.csv").read_text().splitlines()[1].split(",")[1])
        assert got == pytest.approx(expected, rel=1e-7)  # from the float32 decoded pixels
        assert float(psnr(*tensors, crop_border=4)) == pytest.approx(expected, rel=1e-12)
    else:
        assert result.exit_code == 1, result.output
        assert ("featx: error: p.png: too small for psnr: needs at least 1x1 pixels after crop_border=4 "
                "(at least 9x9), got 8x10") in result.stderr  # fmt: skip
        with pytest.raises(ValueError, match=r"psnr needs images of at least 1x1 pixels after crop_border=4"):
            psnr(*tensors, crop_border=4)


def test_cli_choices_match_the_library():
    from featx.metrics.conventions import CROP_SCOPES, GRAY_MODES
    from featx.metrics.lpips import LPIPS_NETS

    assert score_cmd.GRAY_MODES == GRAY_MODES and score_cmd.CROP_SCOPES == CROP_SCOPES
    assert score_cmd.LPIPS_NETS == tuple(LPIPS_NETS)


@pytest.mark.parametrize("full", ["summary", "both"])
def test_a_full_disk_keeps_the_rows_on_a_real_tmpfs(folders, tmp_path, full):
    # a private mount namespace with a 12 KiB tmpfs (3 pages): "summary": 8 KiB filled, the CSV fits,
    # the summary not; "both": an older CSV and summary and 4 KiB filled, nothing fits
    import shutil
    import subprocess
    import sys

    if shutil.which("unshare") is None:
        pytest.skip("no unshare here")
    pred, ref = folders
    mount, kept = tmp_path / "mnt", tmp_path / "kept"
    mount.mkdir(), kept.mkdir()
    featx = [sys.executable, "-c", "from featx_cli.main import cli; cli()"]
    setup = f"head -c 8192 /dev/zero > {mount}/filler"
    if full == "both":
        setup = f"echo old > {mount}/s.csv && echo old > {mount}/s.json && head -c 4096 /dev/zero > {mount}/filler"
    script = (
        f"mount -t tmpfs -o size=12k tmpfs {mount} || exit 99; {setup}; "
        f'"$@" score {pred} {ref} --out {mount}/s.csv --quiet --workers 0 > {kept}/stdout 2> {kept}/stderr; '
        f"echo $? > {kept}/code; cp {mount}/s.csv {mount}/s.json {kept}/ 2>/dev/null; ls {mount} > {kept}/listing"
    )
    done = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", *featx], timeout=300)
    if done.returncode == 99 or not (kept / "code").exists():
        pytest.skip("cannot mount a tmpfs here")
    stderr, stdout = (kept / "stderr").read_text(), (kept / "stdout").read_text()
    assert (kept / "code").read_text().strip() == "1", stderr
    assert "Traceback" not in stderr and f"featx: error: cannot write {mount}/s.json: No space left on device" in stderr
    if full == "summary":
        assert (kept / "s.csv").read_text().startswith("key,psnr,ssim\na.png,")
        assert (kept / "listing").read_text().split() == ["filler", "s.csv"]  # no temporary left behind
    else:
        assert f"cannot write {mount}/s.csv: No space left on device; its 2 row(s) follow on stdout" in stderr
        lines = stdout.splitlines()  # the means, then the rows that could not be written
        assert lines[0].startswith("featx score: 2 of 2 pairs scored; mean psnr inf") and lines[1] == "key,psnr,ssim"
        assert lines[2].startswith("a.png,") and lines[3] == "same.png,inf,1.0" and len(lines) == 4
        assert (kept / "s.csv").read_text() == (kept / "s.json").read_text() == "old\n"  # the older files stand
        assert (kept / "listing").read_text().split() == ["filler", "s.csv", "s.json"]
