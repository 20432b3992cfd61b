"""One run per output folder: an advisory lock on ``OUTPUT/featx.lock`` held for the whole run.

The lock is ``fcntl.flock`` on an open file, so the kernel releases it when the process ends, however
it ends (SIGKILL, out of memory): a lock is never left behind by a dead run. The file holds one JSON
line naming the holder (pid, host, start time, torchrun job id) for the message a second run gets.
Under torchrun rank 0 takes the lock for the whole job (one lock per job). On a shared filesystem
(NFS v4, Lustre, GPFS) Linux maps ``flock`` to the filesystem's own byte-range locks, so runs on
different machines exclude each other too; a filesystem that cannot lock at all is refused with
:class:`~featx.errors.OutputLockError` naming it (from ``/proc/mounts``).

Safe in a folder others can write to: the file is opened with ``O_NOFOLLOW`` (a planted symlink is
refused, its target never opened or truncated) and must be a regular file. A lock file deleted or
replaced while it is held (``rm featx.lock``) is noticed by :meth:`OutputLock.verify`, which the
run calls periodically and before it publishes its manifest: the lock is taken again on the new
file, or the run stops if another run got it meanwhile.

Processes forked while the lock is held (DataLoader workers, decoders) close their copy of its
descriptor at once (``os.register_at_fork``): a ``flock`` belongs to the open file, not the
process, so otherwise workers orphaned by a SIGKILL of the run would keep the folder locked until
they noticed (about 5 s). The lock file stays in the folder after a run.

Nothing here imports torch.
"""

from __future__ import annotations

import datetime
import errno
import json
import os
import re
import socket
import stat
from pathlib import Path
from typing import Any, Optional

from featx.errors import ExtractionError, OutputInUseError, OutputLockError, OutputNotWritableError
from featx.io.atomic import read_no_follow

__all__ = ["LOCK_NAME", "OutputLock", "describe_holder", "filesystem_of"]

LOCK_NAME = "featx.lock"
"""Name of the lock file in the output folder."""

_BUSY = (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)
# flock errors that mean "this filesystem cannot lock": NFS without its lock daemon (ENOLCK),
# Lustre mounted without flock (ENOSYS), FUSE and others (EOPNOTSUPP, EINVAL)
_NO_LOCKS = (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL)
_ATTEMPTS = 10  # a lock file replaced between open and flock this often in a row is an attack
_FLAGS = os.O_RDWR | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)

_HELD: set[int] = set()  # descriptors of locks this process holds, closed in forked children


def _close_in_child() -> None:
    for fd in _HELD:
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_close_in_child)


def describe_holder(holder: Optional[dict[str, Any]]) -> str:
    """``pid 123 on host h, started 2026-12-02T10:55:17Z`` (plus the torchrun job), or a fallback.

    Example:
        >>> describe_holder({"pid": 7, "host": "n1", "started": "2026-12-02T10:55:17Z", "job": "none"})
        'pid 7 on host n1, started 2026-12-02T10:55:17Z'
        >>> describe_holder(None)
        'a process that has not written its name yet'
    """
    if not holder:
        return "a process that has not written its name yet"
    text = f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, started {holder.get('started', '?')}"
    job = holder.get("job", "none")
    return text if job in (None, "none") else f"{text}, torchrun job {job}"


def filesystem_of(path: os.PathLike[str] | str, mounts: str = "/proc/mounts") -> Optional[tuple[str, str]]:
    """``(mount point, filesystem type)`` of the mount holding ``path``, from ``mounts``; ``None`` where
    that table is missing (not Linux).

    Example:
        >>> import tempfile
        >>> with tempfile.NamedTemporaryFile("w", suffix=".mounts") as table:
        ...     _ = table.write("/dev/sda1 / ext4 rw 0 0\\nserver:/export /mnt/my\\\\040data nfs4 rw 0 0\\n")
        ...     table.flush()
        ...     filesystem_of("/mnt/my data/feats", mounts=table.name), filesystem_of("/tmp", mounts=table.name)
        (('/mnt/my data', 'nfs4'), ('/', 'ext4'))
    """
    try:
        table = Path(mounts).read_text(encoding="utf-8", errors="surrogateescape")
    except OSError:
        return None
    real = os.path.realpath(path)
    found = None
    for line in table.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), fields[1])
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and (found is None or len(point) >= len(found[0])):  # the deepest; the last of stacked mounts
            found = (point, fields[2])
    return found


class OutputLock:
    """The advisory lock of one output folder (which must exist).

    Attributes:
        path: ``OUTPUT/featx.lock``.
        fd: the locked descriptor while held, else ``None``.
        created: whether :meth:`acquire` created the lock file (a refused setup removes it again).

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     lock = OutputLock(d)
        ...     lock.acquire()
        ...     lock.holder()["pid"] == os.getpid()
        ...     lock.verify()  # still the file this process locked
        ...     lock.release()
        True
    """

    def __init__(self, output: os.PathLike[str] | str) -> None:
        self.path = Path(output, LOCK_NAME)
        self.fd: Optional[int] = None
        self.created = False
        self._pid = 0

    def holder(self) -> Optional[dict[str, Any]]:
        """The holder recorded in the lock file, or ``None`` if it is empty, unreadable or a symlink."""
        try:
            text = read_no_follow(self.path).decode("utf-8")
            value = json.loads(text) if text.strip() else None
        except (OSError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    def acquire(self) -> None:
        """Take the lock without waiting and record this process as its holder.

        Raises:
            OutputInUseError: another process holds the lock (the message names it).
            OutputLockError: the filesystem cannot lock (the message names it and the way out),
                or ``featx.lock`` is a symlink or not a regular file.
            OutputNotWritableError: the lock file cannot be created or written (permissions, a
                full disk).
        """
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no advisory locks, runs are not excluded
            return
        for _ in range(_ATTEMPTS):
            fd, created = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                if created:  # leave the folder as it was (a run that opened it meanwhile sees it replaced)
                    self._unlink_if(fd)
                os.close(fd)
                if error.errno in _BUSY:
                    holder = self.holder()
                    raise OutputInUseError(
                        f"output folder {self.path.parent} is in use by another featx extract run "
                        f"({describe_holder(holder)}); wait for it to finish, or write to another output folder",
                        holder=holder,
                    ) from None
                if error.errno in _NO_LOCKS:
                    raise OutputLockError(self._no_locks_message(error)) from None
                raise
            if self._is_current(fd):  # not deleted or replaced between the open and the flock
                break
            os.close(fd)
        else:
            raise OutputLockError(f"{self.path} was replaced {_ATTEMPTS} times while featx tried to lock it")
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(self._record(), sort_keys=True) + "\n").encode("utf-8"), 0)
        except OSError as error:
            if created:
                self._unlink_if(fd)
            os.close(fd)
            raise OutputNotWritableError(
                f"output folder {self.path.parent} is not writable: cannot write {self.path} "
                f"({error.strerror or error}); free space or choose another folder"
            ) from None
        self.fd, self.created, self._pid = fd, self.created or created, os.getpid()
        _HELD.add(fd)

    def verify(self) -> None:
        """Check that ``featx.lock`` is still the file this process locked; lock it again if it was
        deleted or replaced and no other run holds the new one.

        Does nothing when the lock is not held (other ranks, dry runs, Windows).

        Raises:
            featx.errors.ExtractionError: the lock file was deleted or replaced and the folder
                cannot be locked again (another run holds it now; the message names it): this
                run must stop writing to it.
        """
        if self.fd is None or self._pid != os.getpid() or self._is_current(self.fd):
            return
        old = self.fd
        try:
            self.acquire()
        except (OutputInUseError, OutputLockError, OutputNotWritableError) as error:
            raise ExtractionError(
                f"{self.path} was deleted or replaced during this run, and featx could not lock the folder "
                f"again ({error}); this run stopped writing to {self.path.parent}. Its feature files are "
                "valid; rerun when no other run uses the folder (a rerun skips what is done)"
            ) from None
        finally:
            if self.fd != old:
                _HELD.discard(old)
                os.close(old)

    def release(self, *, remove: bool = False) -> None:
        """Clear the holder record and release the lock (closing the file releases it).

        Args:
            remove: delete the lock file instead (a refused setup that created it leaves the
                folder as it was; a run waiting on the old file notices and retries).
        """
        if self.fd is None:
            return
        fd, self.fd = self.fd, None
        _HELD.discard(fd)
        if self._pid != os.getpid():  # a forked child: its copy is already closed
            return
        if remove:
            self._unlink_if(fd)
        else:
            try:
                os.ftruncate(fd, 0)
            except OSError:
                pass
        os.close(fd)

    def _unlink_if(self, fd: int) -> None:
        """Delete the lock file if it is still the file ``fd`` has open (best effort)."""
        try:
            if self._is_current(fd):
                os.unlink(self.path)
        except OSError:
            pass

    def _open(self) -> tuple[int, bool]:
        """Open (or create) the lock file, never through a symlink; ``(fd, created)``."""
        try:
            try:
                fd, created = os.open(self.path, _FLAGS | os.O_CREAT | os.O_EXCL, 0o666), True
            except FileExistsError:
                fd, created = os.open(self.path, _FLAGS), False
        except FileNotFoundError:
            raise
        except OSError as error:
            if os.path.islink(self.path):
                raise OutputLockError(
                    f"{self.path} is a symbolic link; featx does not follow links in an output folder. "
                    "Remove it and rerun"
                ) from None
            raise OutputNotWritableError(
                f"output folder {self.path.parent} is not writable: cannot create {self.path} "
                f"({error.strerror or error}); choose another folder with write access"
            ) from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise OutputLockError(f"{self.path} is not a regular file; move it away and rerun")
        return fd, created

    def _is_current(self, fd: int) -> bool:
        """Whether ``fd`` is the file now at :attr:`path` (not deleted, not replaced)."""
        try:
            now = os.stat(self.path, follow_symlinks=False)
        except OSError:
            return False
        held = os.fstat(fd)
        return (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino) and held.st_nlink > 0

    def _record(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "job": os.environ.get("TORCHELASTIC_RUN_ID", "none"),
        }

    def _no_locks_message(self, error: OSError) -> str:
        mount = filesystem_of(self.path.parent)
        where = f" ({mount[1]} mounted at {mount[0]})" if mount is not None else ""
        return (
            f"cannot lock {self.path}: the filesystem of {self.path.parent}{where} does not support file "
            f"locks (flock: {error.strerror or error}), and featx needs one to keep two runs out of one "
            "output folder. Write OUTPUT to a local folder (and copy it afterwards), or mount the "
            "filesystem with locking (NFS: run its lock daemon, rpc.statd; Lustre: mount with -o flock)"
        )
