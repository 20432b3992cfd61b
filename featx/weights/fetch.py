"""The one network function of featx (:func:`download`).

Building an extractor never downloads: ``featx weights download NAME`` (which calls
:func:`download`) is the only path that opens a connection.

A download streams into an anonymous file (Linux ``O_TMPFILE``) in the target directory: it has
no name until its sha256 matched, so a killed process (even by SIGKILL) leaves nothing behind,
the kernel frees the space. Where the OS or the filesystem has no anonymous files, the data goes
to a hidden ``.NAME.PID.HEX.part`` file instead, and every download first removes the ``.part``
files of its checkpoint that a process no longer alive left behind (:func:`remove_stale_parts`).
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import sys
import uuid
from pathlib import Path
from typing import Any, Optional, Union

from featx._version import __version__
from featx.errors import DownloadError, HashMismatchError, OutputNotWritableError
from featx.io.nofollow import open_no_follow
from featx.weights._common import PathLike
from featx.weights.checkpoint import sha256_file
from featx.weights.locations import featx_home
from featx.weights.registry import KnownCheckpoint, member_of
from featx.weights.verification import check_hex, verify

__all__ = ["download", "remove_stale_parts", "verify"]  # verify: featx.weights.verification's, imported here before

CHUNK = 1 << 20  # bytes read from the connection at a time
TIMEOUT_S = 60.0  # a connection that sends no data for this long fails the download

# ".NAME.PID.part", ".NAME.PID.HEX.part", and the ".NAME.PID.HEX.part.HEX.partial" files that
# torch.hub's writer of earlier featx versions left when it was killed.
_PART = re.compile(r"\.(?P<name>.+)\.(?P<pid>[0-9]+)(?:\.[0-9a-f]{32})?\.part(?:\.[0-9a-f]{32}\.partial)?")
# errors of an open() with O_TMPFILE that mean "not here" (old kernel, filesystem without support)
_NO_TMPFILE = {errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL}


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: another user's live process
        return True
    return True


def _locked(path: Path) -> bool:
    """Whether ``path`` must be left alone: another open file holds its flock (a download in
    progress on another host sharing the folder, where its pid means nothing here), or it is not
    a regular file featx can open (a symlink planted in a shared ``FEATX_HOME``: never opened
    through, never removed)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return False
    try:
        fd = open_no_follow(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    except OSError:  # a symlink, a FIFO, or cannot even open it: not ours to judge
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # also releases the probe's lock
    return False


def _lock(fd: int) -> None:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # a filesystem without locks: the pid alone marks the file as in use
        pass


def remove_stale_parts(directory: PathLike, file_name: str) -> list[Path]:
    """Delete the temporary files of ``file_name`` in ``directory`` whose process is gone.

    Only hidden ``.FILE_NAME.PID[.HEX].part`` files (and the ``.part.HEX.partial`` files of
    earlier featx versions) are considered; one is removed when no process ``PID`` is alive and
    no other process holds its lock. Nothing is removed on Windows, where a pid cannot be probed
    safely.

    Returns:
        The files removed.
    """
    if os.name == "nt":  # pragma: no cover - os.kill(pid, 0) would terminate the process there
        return []
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    for name in names:
        match = _PART.fullmatch(name)
        if match is None or match["name"] != file_name:
            continue
        path = Path(directory) / name
        if _pid_alive(int(match["pid"])) or _locked(path):
            continue
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        except OSError:
            continue  # someone else's file in a shared folder: left alone
        removed.append(path)
    return removed


def _umask() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # the portable way to read it: set and restore
    os.umask(mask)
    return mask


def _part_path(directory: Path, file_name: str) -> Path:
    return directory / f".{file_name}.{os.getpid()}.{uuid.uuid4().hex}.part"


def _open_temp(directory: Path, file_name: str) -> tuple[int, Optional[Path]]:
    """A file to download into: ``(fd, None)`` for an anonymous file, else ``(fd, its path)``."""
    cloexec = getattr(os, "O_CLOEXEC", 0)
    tmpfile = getattr(os, "O_TMPFILE", None)
    if tmpfile is not None and os.path.isdir("/proc/self/fd"):  # naming it later goes through /proc
        try:
            # the mode the umask leaves, as open() of a named file would give
            return os.open(directory, tmpfile | os.O_WRONLY | cloexec, 0o666 & ~_umask()), None
        except OSError as error:
            if error.errno not in _NO_TMPFILE:
                raise
    path = _part_path(directory, file_name)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | cloexec, 0o666), path


def _link_anonymous(fd: int, path: Path) -> None:
    """Give the ``O_TMPFILE`` file ``fd`` the name ``path``: ``linkat(AT_SYMLINK_FOLLOW)`` of its
    ``/proc/self/fd`` entry (``os.link`` uses it when given a directory fd; plain ``link()``
    would not follow the entry and fail with EXDEV)."""
    folder = os.open(path.parent, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        os.link(f"/proc/self/fd/{fd}", path.name, dst_dir_fd=folder, follow_symlinks=True)
    finally:
        os.close(folder)


def _sync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - not openable as a file (Windows)
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - a filesystem that cannot sync directories
        pass
    finally:
        os.close(fd)


def _offline_hint(file_name: str, directory: Path) -> str:
    return f"Offline? Copy {file_name} into {directory} by other means, or pass weights=PATH"


def _failure(source: str, error: BaseException, file_name: str, directory: Path) -> DownloadError:
    import urllib.error

    if isinstance(error, urllib.error.HTTPError):
        reason = f"HTTP {error.code} {error.reason}"
    elif isinstance(error, urllib.error.URLError):
        reason = str(error.reason)
    elif isinstance(error, TimeoutError):
        reason = f"no data for {TIMEOUT_S:g} s"
    else:
        reason = str(error) or type(error).__name__
    return DownloadError(f"could not download {source}: {reason}; nothing was kept. {_offline_hint(file_name, directory)}")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _stream(
    response: Any, fd: int, *, source: str, file_name: str, directory: Path, progress: bool, size: Optional[int]
) -> tuple[str, int]:
    """Copy the response into ``fd`` in :data:`CHUNK` pieces; return the data's sha256 and length.
    A ``Content-Length`` other than the checkpoint's known ``size`` fails before any data is read."""
    import http.client

    from tqdm import tqdm

    length = response.headers.get("Content-Length")
    announced = int(length) if length is not None and length.isdigit() else None
    if announced is not None and size is not None and announced != size:
        raise DownloadError(
            f"could not download {source}: the server sends {announced:,} bytes, but {file_name} has {size:,}; it "
            "is another file (a moved URL or an error page?). Nothing was kept"
        )
    total = size if announced is None else announced
    digest = hashlib.sha256()
    received = 0
    with tqdm(total=total, desc=file_name, unit="B", unit_scale=True, unit_divisor=1024, disable=not progress,
              file=sys.stderr) as bar:  # fmt: skip
        while True:
            try:
                data = response.read(CHUNK)
            except (OSError, http.client.HTTPException) as error:
                raise _failure(source, error, file_name, directory) from error
            if not data:
                break
            try:
                _write_all(fd, data)
            except OSError as error:
                raise DownloadError(
                    f"could not write the download of {source} into {directory}: {error.strerror or error}; nothing was kept"
                ) from error
            digest.update(data)
            received += len(data)
            bar.update(len(data))
    if announced is not None and received != announced:
        message = f"the connection closed after {received} of {announced} bytes"
        raise DownloadError(f"could not download {source}: {message}; nothing was kept. {_offline_hint(file_name, directory)}")
    return digest.hexdigest(), received


def _is_present(target: Path, expected: str, size: Optional[int]) -> bool:
    """Whether ``target`` already is the file: its size first (no hashing of a wrong file), then its sha256."""
    if not target.is_file() or (size is not None and target.stat().st_size != size):
        return False
    actual = sha256_file(target)
    return actual == expected if len(expected) == 64 else actual.startswith(expected)


def download(
    name_or_member: Union[str, KnownCheckpoint],
    *,
    dest_dir: Union[PathLike, None] = None,
    progress: bool = True,
    url: Union[str, None] = None,
    sha256: Union[str, None] = None,
) -> Path:
    """Download a known checkpoint, verify its size and sha256 and move it into place atomically.

    This is the only function in featx that opens a network connection (``urllib``;
    ``http(s)://`` and ``file://`` URLs; a connection silent for :data:`TIMEOUT_S` seconds
    fails). The data is streamed in 1 MiB chunks, hashed on the way, into an anonymous file in
    ``dest_dir`` (Linux ``O_TMPFILE``; elsewhere a hidden ``.NAME.PID.HEX.part`` file), fsynced,
    and given its file name only when its size and full sha256 match the registry's (a server
    announcing another size fails before the data is read). A prefix-only entry can only be checked
    against the 8 hex digits of its file name unless ``sha256`` gives the full hash: the returned
    file is then prefix-verified. On a mismatch, an error or Ctrl-C the
    temporary data is deleted; a killed process leaves no anonymous file, and the ``.part``
    files of dead processes are removed by the next download (:func:`remove_stale_parts`). An
    existing file with the right hash is returned without downloading. The file follows the
    umask (``0o644`` with ``umask 022``).

    Args:
        name_or_member: a registry member (:class:`VGGWeights`, :class:`MetricWeights`, ...), its name
            (``"LPIPS_VGG_V0_1"``), an arch name (its default backbone), or torchvision's name
            (``"VGG19_Weights.IMAGENET1K_V1"``).
        dest_dir: target directory (default :func:`featx_home`).
        progress: show a tqdm progress bar on stderr.
        url: download from here instead of the published URL (a mirror, or ``file://`` in tests).
        sha256: expected full sha256 (or a prefix of at least 8 digits) instead of the known one
            (the known byte size is then not required either: a mirror may serve another file).

    Returns:
        The path of the verified file.

    Raises:
        ValueError: unknown name, or a malformed ``sha256`` (:class:`FeatxValueError`).
        OutputNotWritableError: ``dest_dir`` cannot be created or written (an ``OSError``).
        HashMismatchError: the downloaded data has another size or sha256 (names expected and actual).
        DownloadError: the download failed (unreachable, HTTP error, timeout, short read, disk
            full; an ``OSError``); the message says how to get the file without a connection.
    """
    import urllib.error
    import urllib.request

    member = member_of(name_or_member)
    expected = check_hex(sha256 if sha256 is not None else member.sha256)
    size = member.size if sha256 is None else None
    directory = Path(dest_dir if dest_dir is not None else featx_home()).expanduser()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputNotWritableError(
            f"cannot create the download folder {directory} ({error.strerror or error}); choose another folder"
        ) from None
    target = directory / member.file_name
    if _is_present(target, expected, size):
        return target
    remove_stale_parts(directory, member.file_name)
    source = url or member.url
    try:
        fd, temp = _open_temp(directory, member.file_name)
    except OSError as error:
        raise OutputNotWritableError(
            f"cannot write into the download folder {directory} ({error.strerror or error}); choose another folder"
        ) from None
    try:
        _lock(fd)  # marks a named temporary as in use for processes on other hosts
        request = urllib.request.Request(source, headers={"User-Agent": f"featx/{__version__}"})
        try:
            response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
        except (urllib.error.URLError, OSError, ValueError) as error:  # ValueError: not a URL
            raise _failure(source, error, member.file_name, directory) from error
        with response:
            actual, received = _stream(response, fd, source=source, file_name=member.file_name,
                                       directory=directory, progress=progress, size=size)  # fmt: skip
        matches = actual == expected if len(expected) == 64 else actual.startswith(expected)
        if not matches or (size is not None and received != size):
            what = f"{received:,} bytes, expected {size:,}" if size is not None and received != size else "the sha256 differs"
            shown = expected if len(expected) == 64 else f"{expected}..."
            raise HashMismatchError(
                f"sha256 mismatch for {source}: expected {shown}, got {actual} ({what}); nothing was kept",
                source=source,
                expected=expected,
                actual=actual,
            )
        os.fsync(fd)  # the data is on disk before the name says the file is complete
        if temp is None:  # the anonymous file gets a name next to the target, then the target's
            temp = _part_path(directory, member.file_name)
            _link_anonymous(fd, temp)
        os.replace(temp, target)
        temp = None
        _sync_directory(directory)
    finally:
        os.close(fd)
        if temp is not None:
            temp.unlink(missing_ok=True)
    return target
