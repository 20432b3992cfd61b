"""featx.weights.fetch: hash verification and the explicit download, offline: file:// URLs and an
HTTP server of the test's own on 127.0.0.1."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import os
import signal
import stat
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from featx.errors import DownloadError, HashMismatchError, OutputNotWritableError, UnverifiableWeightsError
from featx.weights import VGGWeights, fetch
from featx.weights.fetch import download, remove_stale_parts, verify

VGG11 = "vgg11-8a719046.pth"


def fake_checkpoint(path, payload: bytes = b"fabricated checkpoint bytes"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    return path


def test_verify_requires_a_full_match(tmp_path):
    path = fake_checkpoint(tmp_path / "vgg19-dcbb9e9d.pth", b"not the real file")
    actual = hashlib.sha256(b"not the real file").hexdigest()  # reference: hashlib on the same bytes
    with pytest.raises(HashMismatchError, match=r"expected dcbb9e9dad569fff\w{48}, got \w+ \(.*its size is 17 bytes"):
        verify(path)
    assert verify(path, actual.upper()) == actual
    with pytest.raises(UnverifiableWeightsError, match="starts with the given 12 hex digits only: pass all 64"):
        verify(path, actual[:12])
    other = fake_checkpoint(tmp_path / "mine.pth", b"x")
    with pytest.raises(UnverifiableWeightsError, match="no known checkpoint has this sha256") as info:
        verify(other)  # nothing to check against: never a pass
    assert info.value.actual == hashlib.sha256(b"x").hexdigest() and info.value.checkpoint == ""
    with pytest.raises(ValueError, match="8 to 64 hex digits"):
        verify(other, "xyz")
    with pytest.raises(FileNotFoundError, match="no such file"):
        verify(tmp_path / "absent.pth")


def with_size(monkeypatch, member, size: int) -> None:
    """Give a registry entry another byte size (its real file is not in the tests)."""
    monkeypatch.setattr(member, "_value_", dataclasses.replace(member.value, size=size))


def test_download_checks_the_announced_size_before_reading(tmp_path, monkeypatch):
    payload = os.urandom(3 * 2**20)
    with_size(monkeypatch, VGGWeights.VGG11_IMAGENET1K_V1, len(payload) + 1)
    dest = tmp_path / "dest"
    with serving(payload, delay=0.05) as (url, sent):
        with pytest.raises(DownloadError, match=rf"the server sends {len(payload):,} bytes, but {VGG11} has"):
            download("vgg11", dest_dir=dest, progress=False, url=url)
    assert sent["bytes"] < len(payload) and list(dest.iterdir()) == []  # stopped before the body was read
    # with a sha256 of one's own (a mirror's file), the registry's size does not apply
    digest = hashlib.sha256(payload).hexdigest()
    with serving(payload) as (url, _):
        assert download("vgg11", dest_dir=dest, progress=False, url=url, sha256=digest).read_bytes() == payload


def test_a_present_file_of_another_size_is_replaced_without_hashing_it(tmp_path, monkeypatch):
    right = b"the right bytes"
    source = fake_checkpoint(tmp_path / "src" / "file.pth", right)
    member = VGGWeights.VGG11_IMAGENET1K_V1  # its entry, made to describe these bytes (size and sha256 prefix)
    monkeypatch.setattr(member, "_value_", dataclasses.replace(member.value, size=len(right),
                                                               sha256=hashlib.sha256(right).hexdigest()[:8]))  # fmt: skip
    target = fake_checkpoint(tmp_path / "dest" / VGG11, b"a much longer, truncated or other file")
    hashed = []
    real = fetch.sha256_file
    monkeypatch.setattr(fetch, "sha256_file", lambda path: hashed.append(path) or real(path))
    assert download("vgg11", dest_dir=tmp_path / "dest", progress=False, url=source.as_uri()) == target
    assert target.read_bytes() == right and hashed == []  # the size told
    assert download("vgg11", dest_dir=tmp_path / "dest", progress=False, url="file:///gone") == target
    assert hashed == [target]  # present, of the right size: hashed, and not downloaded again


def test_download_from_file_url(tmp_path):
    source = fake_checkpoint(tmp_path / "src" / "fake.pth")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    dest = tmp_path / "dest"
    path = download("vgg11", dest_dir=dest, progress=False, url=source.as_uri(), sha256=digest)
    assert path == dest / "vgg11-8a719046.pth"
    assert path.read_bytes() == source.read_bytes()
    assert sorted(p.name for p in dest.iterdir()) == ["vgg11-8a719046.pth"]
    # Already present and intact: returned without opening the (now missing) URL.
    assert download("vgg11", dest_dir=dest, progress=False, url=(tmp_path / "gone").as_uri(), sha256=digest) == path


def test_download_hash_mismatch_leaves_nothing(tmp_path):
    source = fake_checkpoint(tmp_path / "fake.pth")
    dest = tmp_path / "dest"
    with pytest.raises(HashMismatchError, match=r"expected 8a719046\.\.\., got [0-9a-f]{64}") as info:
        download(VGGWeights.VGG11_IMAGENET1K_V1, dest_dir=dest, progress=False, url=source.as_uri())
    assert info.value.actual == hashlib.sha256(source.read_bytes()).hexdigest()
    assert list(dest.iterdir()) == []
    with pytest.raises(OSError, match="could not download"):
        download("vgg11", dest_dir=dest, progress=False, url=(tmp_path / "missing").as_uri())
    assert list(dest.iterdir()) == []



# ---------------------------------------------------------------------------------------------
# A local HTTP source
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def serving(payload: bytes, *, chunk: int = 64 * 1024, delay: float = 0.0, status: int = 200,
            claimed_length: int | None = None):  # fmt: skip
    """Serve ``payload`` at ``http://127.0.0.1:PORT/file`` in ``chunk``-byte pieces, ``delay``
    seconds apart; yields ``(url, sent)``, where ``sent["bytes"]`` counts the bytes written so far."""
    sent = {"bytes": 0}
    stop = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the http.server name
            if status != 200:
                self.send_error(status)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(claimed_length if claimed_length is not None else len(payload)))
            self.end_headers()
            for start in range(0, len(payload), chunk):
                if stop.is_set():
                    return
                try:
                    self.wfile.write(payload[start : start + chunk])
                    self.wfile.flush()
                except OSError:  # the client is gone
                    return
                sent["bytes"] += len(payload[start : start + chunk])
                stop.wait(delay)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads, server.block_on_close = True, False
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/file", sent
    finally:
        stop.set()
        server.shutdown()
        server.server_close()
        thread.join(10)


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def anonymous_files_work(directory) -> bool:
    try:
        fd = os.open(directory, os.O_TMPFILE | os.O_WRONLY, 0o600)
    except (AttributeError, OSError):
        return False
    os.close(fd)
    return True


@pytest.fixture(params=["anonymous", "named"])
def temp_kind(request, monkeypatch):
    """Both ways of holding the data: an O_TMPFILE file, and the named ``.part`` fallback (forced
    by an ``open(O_TMPFILE)`` that fails with EOPNOTSUPP, as on a filesystem without support).
    Yields the kind, the named ``.part`` files opened for writing and the anonymous files opened."""
    created, anonymous = [], []
    real_open = os.open

    def spying_open(path, flags, mode=0o777, **kwargs):
        tmpfile = getattr(os, "O_TMPFILE", 0)
        if tmpfile and flags & tmpfile == tmpfile:
            if request.param == "named":
                raise OSError(errno.EOPNOTSUPP, "Operation not supported")
            anonymous.append(os.fspath(path))
        if flags & os.O_CREAT and str(path).endswith(".part"):
            created.append(os.fspath(path))
        return real_open(path, flags, mode, **kwargs)

    if request.param == "anonymous" and not anonymous_files_work(os.getcwd()):
        pytest.skip("no O_TMPFILE on this OS or filesystem")
    monkeypatch.setattr(os, "open", spying_open)
    yield request.param, created, anonymous


# ---------------------------------------------------------------------------------------------
# Download: both temporaries, HTTP, failures
# ---------------------------------------------------------------------------------------------


def test_download_over_http_in_both_temporaries(tmp_path, temp_kind):
    kind, created, anonymous = temp_kind
    payload = os.urandom(3 * 2**20 + 123)  # more than two 1 MiB chunks, not a multiple of them
    digest = hashlib.sha256(payload).hexdigest()  # reference: hashlib on the served bytes
    old = os.umask(0o022)
    try:
        with serving(payload) as (url, sent):
            path = download("vgg11", dest_dir=tmp_path / "dest", progress=False, url=url, sha256=digest)
    finally:
        os.umask(old)
    assert path == tmp_path / "dest" / VGG11 and path.read_bytes() == payload and sent["bytes"] == len(payload)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # the umask, in both ways
    assert [p.name for p in (tmp_path / "dest").iterdir()] == [VGG11]
    if kind == "named":  # the data went through one named .part file, gone now
        assert anonymous == [] and len(created) == 1
        assert os.path.basename(created[0]).startswith(f".{VGG11}.{os.getpid()}.")
    else:  # an anonymous file in the folder; no named file was ever opened for the data
        assert anonymous == [str(tmp_path / "dest")] and created == []


@pytest.mark.parametrize("interruption", [KeyboardInterrupt, OSError])
def test_interrupted_download_leaves_nothing(tmp_path, monkeypatch, temp_kind, interruption):
    payload = os.urandom(3 * 2**20)
    calls = []
    real_write = fetch._write_all

    def failing_write(fd, data):
        calls.append(len(data))
        if len(calls) == 2:  # one chunk written, then the interruption
            raise interruption("interrupted")
        real_write(fd, data)

    monkeypatch.setattr(fetch, "_write_all", failing_write)
    dest = tmp_path / "dest"
    with serving(payload) as (url, _):
        with pytest.raises(interruption):
            download("vgg11", dest_dir=dest, progress=False, url=url, sha256=hashlib.sha256(payload).hexdigest())
    assert calls == [2**20, 2**20]
    assert list(dest.iterdir()) == []


def test_download_failures_over_http(tmp_path, monkeypatch):
    dest = tmp_path / "dest"
    with serving(b"x", status=404) as (url, _):
        with pytest.raises(DownloadError, match=rf"could not download {url}: HTTP 404 .*Offline\? Copy {VGG11} into"):
            download("vgg11", dest_dir=dest, progress=False, url=url)
    with serving(b"only these bytes", claimed_length=1000) as (url, _):
        with pytest.raises(DownloadError, match="the connection closed after 16 of 1000 bytes; nothing was kept"):
            download("vgg11", dest_dir=dest, progress=False, url=url)
    monkeypatch.setattr(fetch, "TIMEOUT_S", 0.3)
    with serving(os.urandom(2 * 2**20), chunk=2**20 + 1, delay=5) as (url, _):  # one chunk, then silence
        with pytest.raises(DownloadError, match=r"no data for 0\.3 s"):
            download("vgg11", dest_dir=dest, progress=False, url=url)
    assert list(dest.iterdir()) == []


def test_download_uses_a_timeout_and_sends_featx_as_agent(tmp_path, monkeypatch):
    import urllib.request

    from featx import __version__

    source = fake_checkpoint(tmp_path / "fake.pth")
    calls = []
    real = urllib.request.urlopen

    def spy(request, timeout):
        calls.append((request.full_url, request.get_header("User-agent"), timeout))
        return real(request, timeout=timeout)

    monkeypatch.setattr(urllib.request, "urlopen", spy)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    download("vgg11", dest_dir=tmp_path / "dest", progress=False, url=source.as_uri(), sha256=digest)
    assert calls == [(source.as_uri(), f"featx/{__version__}", 60.0)]


def test_unwritable_folder_is_a_setup_error(tmp_path):
    blocker = fake_checkpoint(tmp_path / "a-file")
    with pytest.raises(OutputNotWritableError, match=f"cannot create the download folder {blocker / 'sub'}"):
        download("vgg11", dest_dir=blocker / "sub", progress=False, url=blocker.as_uri())
    with pytest.raises(ValueError, match="8 to 64 hex digits"):
        download("vgg11", dest_dir=tmp_path / "d", progress=False, sha256="xyz")
    with pytest.raises(ValueError, match="Did you mean 'VGG11_IMAGENET1K_V1'"):
        download("VGG11_IMAGENET1K", dest_dir=tmp_path / "d", progress=False)
    assert not (tmp_path / "d").exists()  # checked before anything is created


# ---------------------------------------------------------------------------------------------
# Leftovers: killed processes, older versions
# ---------------------------------------------------------------------------------------------


def test_stale_parts_of_dead_processes_are_removed_by_the_next_download(tmp_path):
    import fcntl

    dest = tmp_path / "dest"
    dest.mkdir()
    dead = dead_pid()
    hex1, hex2 = uuid.uuid4().hex, uuid.uuid4().hex
    stale = [f".{VGG11}.{dead}.part", f".{VGG11}.{dead}.{hex1}.part",
             f".{VGG11}.{dead}.{hex1}.part.{hex2}.partial"]  # fmt: skip  (the last: torch.hub's, of older featx)
    kept = [f".{VGG11}.{os.getpid()}.part",  # a live process: still downloading
            f".{VGG11}.{dead}.{hex2}.part",  # locked: a download on another host sharing the folder
            f".vgg13-c768596a.pth.{dead}.part",  # another checkpoint's
            "notes.part", f"{VGG11}.{dead}.part"]  # fmt: skip  (not featx's names)
    for name in stale + kept:
        (dest / name).write_bytes(b"half a checkpoint")
    holder = os.open(dest / kept[1], os.O_RDWR)
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        source = fake_checkpoint(tmp_path / "fake.pth")
        download("vgg11", dest_dir=dest, progress=False, url=source.as_uri(),
                 sha256=hashlib.sha256(source.read_bytes()).hexdigest())  # fmt: skip
    finally:
        os.close(holder)
    assert sorted(p.name for p in dest.iterdir()) == sorted([*kept, VGG11])
    assert remove_stale_parts(dest, VGG11) == [dest / kept[1]]  # unlocked now, its pid is dead


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_killed_download_leaves_nothing(tmp_path, sig):
    """The real command, killed while data flows in from a slow server: SIGKILL leaves no file
    (the data was in an anonymous file); Ctrl-C removes the temporary and exits 130."""
    payload = os.urandom(8 * 2**20)
    dest = tmp_path / "dest"
    anonymous = anonymous_files_work(tmp_path)
    command = [sys.executable, "-m", "featx_cli.main", "weights", "download", "vgg11", "--quiet", "--dir", str(dest),
               "--sha256", hashlib.sha256(payload).hexdigest()]  # fmt: skip
    with serving(payload, delay=0.05) as (url, sent):  # 64 KiB per 50 ms: about 6 s for the whole file
        child = subprocess.Popen([*command, "--url", url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while sent["bytes"] < 2 * 2**20 and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.02)  # until more than a 1 MiB chunk has been written into the temporary
        assert sent["bytes"] >= 2 * 2**20 and child.poll() is None, child.communicate()
        if anonymous:  # the data is in the folder, under no name
            targets = [os.readlink(f"/proc/{child.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{child.pid}/fd")]
            assert [t for t in targets if t.startswith(str(dest))], targets
            assert list(dest.iterdir()) == []
        os.kill(child.pid, sig)
        out, err = child.communicate(timeout=60)
        assert sent["bytes"] < len(payload)  # stopped mid-way
    if sig == signal.SIGINT:
        assert child.returncode == 130 and "interrupted" in err and "nothing was kept" in err, err
        assert list(dest.iterdir()) == []
    else:
        assert child.returncode == -signal.SIGKILL
        left = [p.name for p in dest.iterdir()]
        if anonymous:
            assert left == []
        else:  # the fallback's .part of the dead process, removed by the next download
            assert len(left) == 1 and left[0].startswith(f".{VGG11}.{child.pid}.")
            source = fake_checkpoint(tmp_path / "src.pth", payload)
            download("vgg11", dest_dir=dest, progress=False, url=source.as_uri(),
                     sha256=hashlib.sha256(payload).hexdigest())  # fmt: skip
            assert [p.name for p in dest.iterdir()] == [VGG11]


def test_a_planted_part_symlink_in_a_shared_home_is_neither_followed_nor_removed(tmp_path):
    # Fails on the code before the change: the stale-part check opened `.FILE.PID.part` with a plain
    # open (following the link to its target, flocking the target) and then deleted the link.
    # Reference: the victim's own bytes and mode, and the link's target read back with os.readlink.
    dest = tmp_path / "home"
    dest.mkdir()
    victim = tmp_path / "victim.bin"
    victim.write_bytes(b"someone else's checkpoint")
    before = (victim.read_bytes(), victim.stat().st_mode, victim.stat().st_mtime_ns)
    dead = dead_pid()
    link = dest / f".{VGG11}.{dead}.part"
    link.symlink_to(victim)
    fifo = dest / f".{VGG11}.{dead}.{uuid.uuid4().hex}.part"
    os.mkfifo(fifo)  # a FIFO named like a part: never opened for reading, never removed
    source = fake_checkpoint(tmp_path / "fake.pth")
    download("vgg11", dest_dir=dest, progress=False, url=source.as_uri(),
             sha256=hashlib.sha256(source.read_bytes()).hexdigest())  # fmt: skip
    assert remove_stale_parts(dest, VGG11) == []
    assert link.is_symlink() and os.readlink(link) == str(victim)  # the link is kept
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert (victim.read_bytes(), victim.stat().st_mode, victim.stat().st_mtime_ns) == before
    assert (dest / VGG11).read_bytes() == source.read_bytes()


def test_open_no_follow_refuses_links_fifos_and_folders_and_opens_regular_files(tmp_path):
    # Reference: the bytes written by hand; errno ELOOP is POSIX's answer to O_NOFOLLOW on a link.
    from featx.errors import UnsafeFileError
    from featx.io.atomic import open_no_follow

    regular = tmp_path / "regular"
    regular.write_bytes(b"data")
    fd = open_no_follow(regular, os.O_RDWR)
    try:
        assert os.read(fd, 10) == b"data"
    finally:
        os.close(fd)
    (tmp_path / "link").symlink_to(regular)
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "folder").mkdir()
    for name, code, reason in [("link", errno.ELOOP, "is a symbolic link, which featx does not follow here"),
                               ("fifo", errno.EINVAL, "is not a regular file"),
                               ("folder", errno.EISDIR, "is not a regular file")]:  # fmt: skip
        with pytest.raises(UnsafeFileError) as caught:
            open_no_follow(tmp_path / name, os.O_RDWR)
        assert (caught.value.errno, caught.value.strerror) == (code, reason)
    with pytest.raises(FileNotFoundError):
        open_no_follow(tmp_path / "absent")
    assert regular.read_bytes() == b"data"
