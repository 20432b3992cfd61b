"""The output folder's lock (featx.extract.lock.OutputLock) under deletion, replacement, forks and
filesystems without locks.

References: ``fcntl.flock`` semantics (a lock belongs to an open file; a second open of the same file
is refused while it is held) checked with a second ``OutputLock`` or a second process; the
filesystem type is read from ``/proc/mounts`` independently (``os.path.realpath`` and the longest
mount point) in the test.
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from featx.errors import ExtractionError, OutputInUseError, OutputLockError
from featx.extract import ExtractOptions, extract_features, feature_path
from featx.extract.lock import LOCK_NAME, OutputLock, filesystem_of
from featx.io.featfile import load_features
from featx_cli.main import cli

TAPS = "relu1_1,relu2_1"


def make_images(root, count):
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(root / f"img{i}.png")


def test_a_deleted_lock_file_is_taken_again_so_a_second_run_is_still_refused(tmp_path):
    # Fails on the code before the change: after `rm featx.lock` a second run locked the new file
    # and went ahead next to the first (and OutputLock had no verify()).
    first = OutputLock(tmp_path)
    first.acquire()
    try:
        os.unlink(tmp_path / LOCK_NAME)
        first.verify()  # notices, and locks a new file at the name
        with pytest.raises(OutputInUseError, match=f"pid {os.getpid()} on host"):
            OutputLock(tmp_path).acquire()
    finally:
        first.release()
    second = OutputLock(tmp_path)
    second.acquire()  # released for real at the end
    second.release()


def test_a_lock_file_replaced_and_taken_by_another_run_stops_this_one(tmp_path):
    first = OutputLock(tmp_path)
    first.acquire()
    os.unlink(tmp_path / LOCK_NAME)
    second = OutputLock(tmp_path)
    second.acquire()  # a second run that started after the rm
    try:
        with pytest.raises(ExtractionError, match=r"was deleted or replaced during this run, and featx could not lock"):
            first.verify()
        assert second.holder()["pid"] == os.getpid()  # the second run's record is left alone
    finally:
        first.release()
        second.release()


def test_a_run_whose_lock_was_taken_over_never_publishes_its_manifest(tmp_path, ckpt):
    # Fails on the code before the change: the run finished and published manifest.jsonl and
    # summary.json into a folder another run had locked meanwhile.
    make_images(tmp_path / "in", 3)
    out = tmp_path / "out"
    intruder = OutputLock(out)

    def on_record(record):
        if intruder.fd is None:  # `rm featx.lock` and a second run, after the first image
            os.unlink(out / LOCK_NAME)
            intruder.acquire()

    options = ExtractOptions(taps=TAPS, weights=str(ckpt), num_workers=0, batch_size=1, on_record=on_record)
    try:
        with pytest.raises(ExtractionError, match="deleted or replaced during this run"):
            extract_features([str(tmp_path / "in")], str(out), options)
        assert not (out / "manifest.jsonl").exists() and not (out / "summary.json").exists()
        assert load_features(feature_path(out, "img0.png"))[1]["source_key"] == "img0.png"  # finished files are valid
    finally:
        intruder.release()


def test_forked_children_do_not_keep_the_folder_locked_after_the_run_is_killed(tmp_path):
    # Fails on the code before the change: a DataLoader worker orphaned by SIGKILL of the run kept
    # the inherited lock descriptor (a flock belongs to the open file) for about 5 s.
    script = textwrap.dedent(f"""
        import os, time
        from torch.utils.data import DataLoader, Dataset
        from featx.extract.lock import OutputLock

        class Slow(Dataset):
            def __len__(self):
                return 4
            def __getitem__(self, index):
                print(os.getpid(), flush=True)  # the worker says it runs
                time.sleep(60)
                return index

        OutputLock({str(tmp_path)!r}).acquire()
        batches = iter(DataLoader(Slow(), num_workers=1, multiprocessing_context="fork"))
        time.sleep(60)
    """)
    run = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    worker = int(run.stdout.readline())
    run.kill()  # SIGKILL of the run: its worker is orphaned
    run.wait()
    try:
        os.kill(worker, 0)  # the orphaned worker is still alive ...
        lock = OutputLock(tmp_path)
        lock.acquire()  # ... and the folder is free at once
        lock.release()
    finally:
        try:
            os.kill(worker, signal.SIGKILL)
        except ProcessLookupError:
            pass
        run.stdout.close()


@pytest.mark.parametrize(
    "code",
    [errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS],  # NFS without its lock daemon; FUSE; Lustre without -o flock
    ids=["ENOLCK", "EOPNOTSUPP", "ENOSYS"],
)
def test_a_filesystem_without_flock_is_a_one_line_setup_error_naming_it(tmp_path, ckpt, monkeypatch, code):
    # Fails on the code before the change: OSError [Errno 37] No locks available from
    # OutputLock.acquire ended `featx extract` in a traceback (exit 1, "some images failed").
    make_images(tmp_path / "in", 1)

    def no_locks(fd, operation):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    out = tmp_path / "out"
    common = ["--weights", str(ckpt), "--taps", TAPS, "--workers", "0", "--quiet"]
    result = CliRunner().invoke(cli, ["extract", str(tmp_path / "in"), str(out), *common], catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    mounts = [line.split() for line in open("/proc/mounts").read().splitlines()] if os.path.exists("/proc/mounts") else []
    real = os.path.realpath(tmp_path)
    inside = [m for m in mounts if real == m[1] or real.startswith(m[1].rstrip("/") + "/")]
    if inside:
        point, kind = max(inside, key=lambda m: len(m[1]))[1:3]
        assert f"({kind} mounted at {point}) does not support file locks (flock: {os.strerror(code)})" in result.output
    assert "Write OUTPUT to a local folder" in result.output and "-o flock" in result.output
    assert not out.exists()  # a refused setup leaves nothing behind


def test_filesystem_of_reads_escaped_mount_points(tmp_path):
    table = tmp_path / "mounts"
    table.write_text("rootfs / ext4 rw 0 0\nsrv:/x /data/my\\040disk nfs rw 0 0\nsrv:/y /data/my\\040disk lustre rw 0 0\n")
    assert filesystem_of("/data/my disk/out", mounts=str(table)) == ("/data/my disk", "lustre")  # the last mounted
    assert filesystem_of("/data/my diskette", mounts=str(table)) == ("/", "ext4")  # not a prefix match
    assert filesystem_of("/x", mounts=str(tmp_path / "none")) is None


def test_a_lock_file_that_is_not_a_regular_file_is_refused(tmp_path):
    os.mkfifo(tmp_path / LOCK_NAME)  # opening a FIFO must not block either
    with pytest.raises(OutputLockError, match=r"featx.lock is not a regular file; move it away and rerun"):
        OutputLock(tmp_path).acquire()


def test_a_lock_taken_by_a_second_process_is_refused_while_held_and_free_after(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", f"from featx.extract.lock import OutputLock; OutputLock({str(tmp_path)!r}).acquire(); "
         "print('locked', flush=True); import time; time.sleep(60)"],  # fmt: skip
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputInUseError, match=f"pid {holder.pid} on host"):
            OutputLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    deadline = time.monotonic() + 10
    lock = OutputLock(tmp_path)
    while True:
        try:
            lock.acquire()
            break
        except OutputInUseError:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    lock.release()


@pytest.mark.parametrize("swap", ["deleted", "replaced"])
def test_a_lock_file_deleted_or_replaced_between_open_and_flock_is_never_the_one_held(tmp_path, monkeypatch, swap):
    # Kills the mutant "acquire keeps the first file it locked": a run that locked a file someone
    # deleted (`rm featx.lock`) or replaced right after featx opened it would hold a lock nobody
    # else can see, and a second run would get in. References: inodes from os.stat/os.fstat, and a
    # second OutputLock on the same folder.
    path = tmp_path / LOCK_NAME
    real_flock, swapped = fcntl.flock, []

    def flock_after_swap(fd, operation):
        if not swapped:  # the first attempt only: the file at the name changes under featx
            swapped.append(os.fstat(fd).st_ino)
            os.unlink(path)
            if swap == "replaced":
                path.write_bytes(b"")
        return real_flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", flock_after_swap)
    lock = OutputLock(tmp_path)
    lock.acquire()
    try:
        assert os.fstat(lock.fd).st_ino == os.stat(path).st_ino and os.fstat(lock.fd).st_nlink == 1
        monkeypatch.setattr(fcntl, "flock", real_flock)
        with pytest.raises(OutputInUseError):
            OutputLock(tmp_path).acquire()
    finally:
        lock.release()
