"""`featx extract` under faults: a failed write never costs earlier work, and every failure is one line
and a documented exit code (docs/cli.md, "Exit codes" and "When writing fails").

Real faults where the machine allows them: ENOSPC on a small tmpfs mounted in a private mount
namespace (``unshare -rm``), EFBIG from ``RLIMIT_FSIZE`` in a subprocess (SIGXFSZ ignored, as
``ulimit -f`` does), EACCES from a read-only subfolder (as root: without CAP_DAC_OVERRIDE, via
``setpriv``); injected ``OSError``s and other exceptions otherwise. The corpus includes a file name
that is not UTF-8. References: the bytes of the outputs of the run before the fault, and the
official safetensors reader for every file a manifest line names.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import load_file

from featx.extract import ExtractOptions, extract_features, feature_path
from featx.extract import writer as writer_module
from featx.io.discovery import printable_name
from featx_cli.main import cli

TAPS = "relu1_1,relu2_1"
LATIN1 = os.fsdecode(b"caf\xe9.png")  # a Latin-1 name: not UTF-8
NAMES = ["a.png", "b.png", "sub/c.png", LATIN1]
PAUSING_FEATX = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pausing_featx.py")


def make_corpus(root, names=NAMES, size=(24, 32)):
    rng = np.random.default_rng(0)
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(root / name, format="PNG")


def common(ckpt):
    return ["--weights", str(ckpt), "--taps", TAPS, "--workers", "0", "--batch-size", "1", "--quiet"]


def invoke(*args):
    return CliRunner().invoke(cli, ["extract", *map(str, args)], catch_exceptions=False)


def prepared(tmp_path, ckpt):
    """A finished run: ``(inputs, output, {relative path: bytes} of every file in it)``."""
    make_corpus(tmp_path / "in")
    out = tmp_path / "out"
    assert invoke(tmp_path / "in", out, *common(ckpt)).exit_code == 0
    return tmp_path / "in", out, snapshot(out)


def snapshot(folder):
    return {
        os.path.relpath(os.path.join(where, name), folder): open(os.path.join(where, name), "rb").read()
        for where, _, names in os.walk(folder)
        for name in names
    }


def features(files):
    return {name: data for name, data in files.items() if name.endswith(".safetensors")}


def manifest(out):
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def assert_manifest_truthful(out):
    """No manifest line names a file that is not there and valid (read by the safetensors package)."""
    for line in manifest(out):
        for named in [line.get("output") if line["status"] in ("ok", "skipped") else None, line.get("kept")]:
            if named is not None:
                assert load_file(out / named), line  # raises if missing or invalid
        assert "removed" not in line or not (out / line["removed"]).exists()


def assert_one_line_error(stderr, code, exit_code, expected):
    assert exit_code == code, stderr
    assert "Traceback" not in stderr and "Aborted!" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and expected in errors[0], stderr


def run_limited(command, limit_bytes):
    """Run ``command`` with RLIMIT_FSIZE (SIGXFSZ ignored, so writes fail with EFBIG instead of killing)."""

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.run(command, preexec_fn=limit, capture_output=True, text=True, timeout=240)


def featx_command(*args):
    return [sys.executable, "-m", "featx_cli.main", "extract", *map(str, args)]


@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        OSError(errno.EDQUOT, "Disk quota exceeded"),
        OSError(errno.EACCES, "Permission denied"),
        RuntimeError("the disk controller said no"),
    ],
    ids=["ENOSPC", "EDQUOT", "EACCES", "RuntimeError"],
)
def test_a_failed_overwrite_keeps_every_previous_output(tmp_path, ckpt, monkeypatch, error):
    # Fails on the code before the change: each failed write deleted the image's valid previous
    # output (remove_failed_output), and a non-OSError ended the run with a writer-thread traceback.
    inputs, out, before = prepared(tmp_path, ckpt)

    def failing_write(*args, **kwargs):
        raise error

    monkeypatch.setattr(writer_module, "write_atomic_buffer", failing_write)
    result = invoke(inputs, out, *common(ckpt), "--overwrite")
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    reason = error.strerror if isinstance(error, OSError) else str(error)
    assert f"featx: error: {printable_name(LATIN1)}: cannot write" in result.output
    lines = manifest(out)
    assert [line["status"] for line in lines] == ["error"] * 4
    for line in lines:
        assert line["error"].endswith(f": {reason}; its previous output is kept") and "removed" not in line
        assert line["kept"] == line["path"] + ".safetensors"  # the printable output name, as "output" is
    assert features(snapshot(out)) == features(before)  # every earlier output, byte for byte
    assert_manifest_truthful(out)


def test_a_failed_streamed_overwrite_keeps_the_previous_output(tmp_path, ckpt, monkeypatch):
    # Fails on the code before the change: the error record of a streamed file that could not be
    # written made the writer delete the image's previous output.
    inputs, out, before = prepared(tmp_path, ckpt)

    def no_space(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_space, raising=False)
    result = invoke(inputs, out, *common(ckpt), "--overwrite", "--tile", "16")  # maps streamed tile by tile
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert all(line["kept"] and "No space left on device" in line["error"] for line in manifest(out))
    assert features(snapshot(out)) == features(before)
    assert_manifest_truthful(out)


@pytest.mark.parametrize(
    ("limit", "extra", "code", "expected"),
    [
        (600, ["--overwrite"], 1, "manifest.rank0.jsonl (File too large): the run stopped"),
        (300, ["--max-pixels", "100000"], 2, "featx-owner.json (File too large); the previous record is kept"),
    ],
    ids=["features-and-manifest-part", "owner-record-nothing-to-compute"],
)
def test_file_size_limit_efbig_is_one_line_and_keeps_earlier_outputs(tmp_path, ckpt, limit, extra, code, expected):
    # Fails on the code before the change: under `ulimit -f` every earlier output was deleted and
    # the run ended in an `OSError: [Errno 27] File too large` traceback from writer.close; a
    # resume with nothing to compute died in a traceback writing featx-owner.json.
    inputs, out, before = prepared(tmp_path, ckpt)
    done = run_limited(featx_command(inputs, out, *common(ckpt), *extra), limit)
    assert "Traceback" not in done.stderr, done.stderr
    after = snapshot(out)
    assert features(after) == features(before)  # every feature file failed, the old ones are intact
    assert_one_line_error(done.stderr, code, done.returncode, expected)
    assert after["manifest.jsonl"] == before["manifest.jsonl"]  # the previous manifest, untouched
    assert after["featx-owner.json"] == before["featx-owner.json"]
    assert not [name for name in after if "featx-" in name and name.endswith(".tmp")]
    assert_manifest_truthful(out)


FILL = """
import os, sys
folder, leave = sys.argv[1], int(sys.argv[2])
fd = os.open(os.path.join(folder, f"fill{leave}"), os.O_WRONLY | os.O_CREAT)
info = os.statvfs(folder)
todo = info.f_bavail * info.f_frsize - leave
try:
    while todo > 0 or leave == 0:
        todo -= os.write(fd, b"0" * min(max(todo, 4096), 1 << 20))
except OSError:
    pass
"""


def private_tmpfs_works():
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not private_tmpfs_works(), reason="no private mount namespace here (unshare -rm); "
                    "test_a_failed_overwrite_keeps_every_previous_output injects ENOSPC instead")  # fmt: skip
def test_a_full_tmpfs_enospc_is_one_line_and_keeps_earlier_outputs(tmp_path, ckpt):
    # Fails on the code before the change: on a nearly full disk the overwrite deleted every earlier
    # output, and on a full disk the writability probe ".featx-probe-PID" was left behind.
    inputs, out, before = prepared(tmp_path, ckpt)
    mount, logs = tmp_path / "mnt", tmp_path / "logs"
    mount.mkdir()
    logs.mkdir()
    fill = tmp_path / "fill.py"  # fill FOLDER LEAVE: take all but LEAVE bytes of the filesystem
    fill.write_text(FILL)
    featx = " ".join(f"'{part}'" for part in featx_command(inputs, f"{mount}/out", *common(ckpt)))
    script = textwrap.dedent(f"""
        mount -t tmpfs -o size=3m tmpfs '{mount}' || exit 99
        cp -a '{out}' '{mount}/out'
        '{sys.executable}' '{fill}' '{mount}' 102400
        {featx} --overwrite 2> '{logs}/near.err'; echo $? > '{logs}/near.rc'
        cp -a '{mount}/out' '{logs}/near'
        '{sys.executable}' '{fill}' '{mount}' 0
        {featx} 2> '{logs}/full.err'; echo $? > '{logs}/full.rc'
        cp -a '{mount}/out' '{logs}/full'
    """)
    done = subprocess.run(["unshare", "-rm", "bash", "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    near_err = (logs / "near.err").read_text()
    assert int((logs / "near.rc").read_text()) == 1 and "Traceback" not in near_err, near_err
    assert all("No space left on device; its previous output is kept" in line["error"] for line in manifest(logs / "near"))
    assert features(snapshot(logs / "near")) == features(before)
    assert_manifest_truthful(logs / "near")
    full_err = (logs / "full.err").read_text()
    assert_one_line_error(full_err, 2, int((logs / "full.rc").read_text()), "is not writable (No space left on device)")
    assert snapshot(logs / "full") == snapshot(logs / "near")  # nothing written, no probe left


def test_a_folder_without_write_permission_eacces_keeps_its_outputs(tmp_path, ckpt):
    # Fails on the code before the change: the error line of an image whose folder is read-only did
    # not say that its previous output was kept (and a writable folder would have lost it).
    inputs, out, before = prepared(tmp_path, ckpt)
    command = featx_command(inputs, out, *common(ckpt), "--overwrite")
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("root without setpriv: permissions cannot be enforced; EACCES is injected elsewhere")
        command = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", *command]  # root without CAP_DAC_OVERRIDE
    (out / "sub").chmod(0o555)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=240)
    finally:
        (out / "sub").chmod(0o755)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    lines = {line["path"]: line for line in manifest(out)}
    assert lines["sub/c.png"]["error"].endswith("Permission denied; its previous output is kept")
    assert lines["sub/c.png"]["kept"] == "sub/c.png.safetensors"
    assert {line["status"] for path, line in lines.items() if path != "sub/c.png"} == {"ok"}
    assert features(snapshot(out))["sub/c.png.safetensors"] == before["sub/c.png.safetensors"]
    assert_manifest_truthful(out)


@pytest.mark.parametrize("existing", [False, True])
def test_a_refused_setup_writes_nothing_to_the_output_folder(tmp_path, ckpt, existing):
    # Fails on the code before the change: featx-owner.json (and the folder, and featx.lock) were
    # written before --max-memory was refused.
    make_corpus(tmp_path / "in", ["a.png"])
    out = tmp_path / "out" / "feats"
    if existing:
        assert invoke(tmp_path / "in", out, *common(ckpt)).exit_code == 0
    before = snapshot(out) if existing else None
    result = invoke(tmp_path / "in", out, *common(ckpt), "--max-memory", "1MiB", "--alpha", "drop")
    assert result.exit_code == 2 and "max_memory 1 MiB is below" in result.output, result.output
    if existing:
        assert snapshot(out) == before
    else:
        assert not (tmp_path / "out").exists()


def test_ctrl_c_writes_the_summary_and_exits_130(tmp_path, ckpt):
    # Fails on the code before the change: click printed "Aborted!", the exit code was 1, and no
    # summary was written.
    make_corpus(tmp_path / "in", ["a.png", "b.png", "c.png", "d.png"])
    out = tmp_path / "out"
    command = [sys.executable, PAUSING_FEATX, "1", "extract", str(tmp_path / "in"), str(out), *common(ckpt)]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env={**os.environ, "FEATX_TEST_STALL": "compute"})
    deadline = time.monotonic() + 120
    while not (out.exists() and any(name.endswith(".safetensors") for name in os.listdir(out))):
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
        time.sleep(0.05)
    time.sleep(0.3)  # the compute thread reaches its stall
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "Aborted!" not in stderr
    assert "featx extract: interrupted (Ctrl-C): 1 extracted, 0 skipped, 0 failed, 3 not reached" in stderr
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["interrupted"], summary["ok"], summary["pending"]) == (True, 1, 3)
    assert [line["path"] for line in manifest(out)] == ["a.png"]
    assert_manifest_truthful(out)
    options = ExtractOptions(taps=TAPS, weights=str(ckpt), num_workers=0, batch_size=1)
    resumed = extract_features([str(tmp_path / "in")], str(out), options)
    assert (resumed.skipped, resumed.ok, resumed.interrupted) == (1, 3, False)


def test_feature_files_are_fsynced_before_their_rename(tmp_path, ckpt, monkeypatch):
    # Kills the mutants "no fsync in featstream's commit" and "no fsync in atomic writes": a
    # power loss could otherwise leave a published name over data never flushed (zeros after a
    # valid header, which resume skips). Each published file's inode must be fsynced first.
    make_corpus(tmp_path / "in", ["a.png"], size=(40, 48))
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def spy_fsync(fd):
        events.append(("fsync", os.fstat(fd).st_ino))
        return real_fsync(fd)

    def spy_replace(src, dst):
        events.append(("replace", os.stat(src, follow_symlinks=False).st_ino, os.fspath(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", spy_fsync)
    monkeypatch.setattr(os, "replace", spy_replace)
    for name, extra in (("whole", {}), ("streamed", {"tile": "16"})):
        events.clear()
        options = ExtractOptions(taps=TAPS, weights=str(ckpt), num_workers=0, **extra)
        extract_features([str(tmp_path / "in")], str(tmp_path / name), options)
        published = feature_path(tmp_path / name, "a.png")
        (renamed,) = [event for event in events if event[0] == "replace" and event[2] == str(published)]
        assert ("fsync", renamed[1]) in events[: events.index(renamed)], f"{name}: the file was not fsynced before its rename"


def test_a_resume_with_nothing_to_compute_that_cannot_write_its_owner_record_is_one_line(tmp_path, ckpt):
    # Issue 18 item 6: a resume whose images are all up to date still rewrites featx-owner.json
    # when its configuration changed (here --alpha drop); a real EFBIG there (RLIMIT_FSIZE of 200
    # bytes: the probe's 5 bytes and the lock's line fit, the record does not) must be one line and
    # exit 2 (docs/cli.md: OUTPUT not writable), with every earlier file as it was.
    inputs, out, before = prepared(tmp_path, ckpt)
    done = run_limited(featx_command(inputs, out, *common(ckpt), "--alpha", "drop"), 200)
    assert_one_line_error(done.stderr, 2, done.returncode, f"cannot write {out / 'featx-owner.json'} (File too large)")
    assert "the previous record is kept" in done.stderr
    after = snapshot(out)
    assert {name: data for name, data in after.items() if name != "featx.lock"} == {
        name: data for name, data in before.items() if name != "featx.lock"
    }
    assert_manifest_truthful(out)
