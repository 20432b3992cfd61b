"""One run per output folder: an advisory lock on ``OUTPUT/featx.lock`` held for the whole run.

The lock is ``fcntl.flock`` on an open file, so the kernel releases it when the process ends, however
it ends (SIGKILL, out of memory): a lock is never left behind by a dead run. The file holds one JSON
line naming the holder (pid, host, start time, torchrun job id) for the message a second run gets.
Under torchrun rank 0 takes the lock for the whole job (one lock per job). On a shared filesystem
(NFS v4, Lustre, GPFS) Linux maps ``flock`` to the filesystem's own byte-range locks, so runs on
different machines exclude each other too. The lock file stays in the folder (removing it would let
two runs lock two different files).

Nothing here imports torch.
"""

from __future__ import annotations

import datetime
import errno
import json
import os
import socket
from pathlib import Path
from typing import Any, Optional

from featx.errors import OutputInUseError

__all__ = ["LOCK_NAME", "OutputLock", "describe_holder"]

LOCK_NAME = "featx.lock"
"""Name of the lock file in the output folder."""


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


class OutputLock:
    """The advisory lock of one output folder (which must exist).

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     lock = OutputLock(d)
        ...     lock.acquire()
        ...     lock.holder()["pid"] == os.getpid()
        ...     lock.release()
        True
    """

    def __init__(self, output: os.PathLike[str] | str) -> None:
        self.path = Path(output, LOCK_NAME)
        self.fd: Optional[int] = None

    def holder(self) -> Optional[dict[str, Any]]:
        """The holder recorded in the lock file, or ``None`` if it is empty or unreadable."""
        try:
            text = self.path.read_text(encoding="utf-8")
            value = json.loads(text) if text.strip() else None
        except (OSError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    def acquire(self) -> None:
        """Take the lock without waiting and record this process as its holder.

        Raises:
            OutputInUseError: another process holds the lock (the message names it).
            OSError: the lock file cannot be opened.
        """
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no advisory locks, runs are not excluded
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(fd)
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            holder = self.holder()
            raise OutputInUseError(
                f"output folder {self.path.parent} is in use by another featx extract run "
                f"({describe_holder(holder)}); wait for it to finish, or write to another output folder",
                holder=holder,
            ) from None
        started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": started,
            "job": os.environ.get("TORCHELASTIC_RUN_ID", "none"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record, sort_keys=True) + "\n").encode("utf-8"), 0)
        self.fd = fd

    def release(self) -> None:
        """Clear the holder record and release the lock (closing the file releases it)."""
        if self.fd is None:
            return
        fd, self.fd = self.fd, None
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass
        os.close(fd)
