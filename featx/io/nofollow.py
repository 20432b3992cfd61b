"""Files and folders in a folder others can write to, never reached through a symlink planted there.

An output folder or a shared ``FEATX_HOME`` may hold a symlink someone planted at a name featx uses
(``featx.lock -> ~/.bashrc``, ``OUT/sub -> /elsewhere``). The helpers here open files with
``O_NOFOLLOW`` and make folders part by part with ``O_DIRECTORY | O_NOFOLLOW``, so such a link is
refused (:class:`~featx.errors.UnsafeFileError`, ``errno`` ``ELOOP``), its target never opened,
truncated or written into. New files are made by :mod:`featx.io.atomic` (exclusive temporaries).
Nothing here imports torch.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Union

from featx.errors import FeatxValueError, UnsafeFileError

__all__ = ["make_folders", "open_no_follow", "read_no_follow"]

PathLike = Union[str, "os.PathLike[str]"]

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_BINARY = getattr(os, "O_BINARY", 0)  # Windows: no newline translation
_LINK = "is a symbolic link, which featx does not follow here"


def open_no_follow(path: PathLike, flags: int = os.O_RDONLY) -> int:
    """Open the regular file ``path`` with ``flags``, never through a symlink at its last component.

    ``O_NOFOLLOW`` and ``O_NONBLOCK`` are added (a FIFO planted at ``path`` does not block the call),
    and the descriptor is not inherited by programs run later. Use it for files that live in a
    folder others can write to (an output folder, a shared ``FEATX_HOME``).

    Args:
        path: the file; with ``os.O_CREAT`` in ``flags`` it is created with mode ``0o666`` less the
            umask.
        flags: ``os.open`` flags (``os.O_RDONLY`` by default).

    Returns:
        The open descriptor (the caller closes it).

    Raises:
        FileNotFoundError: nothing at ``path`` (and no ``O_CREAT``).
        featx.errors.UnsafeFileError: ``path`` is a symlink (``errno`` ``ELOOP``, "is a symbolic link,
            which featx does not follow here") or not a regular file (a FIFO, a device, a folder).
        OSError: ``path`` cannot be opened.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     with open(os.path.join(d, "a"), "w") as handle:
        ...         _ = handle.write("text")
        ...     os.symlink(os.path.join(d, "a"), os.path.join(d, "link"))
        ...     fd = open_no_follow(os.path.join(d, "a"), os.O_RDWR)
        ...     os.read(fd, 4)
        ...     os.close(fd)
        ...     try:
        ...         open_no_follow(os.path.join(d, "link"), os.O_RDWR)
        ...     except OSError as error:
        ...         print(error.strerror)
        b'text'
        is a symbolic link, which featx does not follow here
    """
    path = os.fspath(path)
    try:
        fd = os.open(path, flags | _NOFOLLOW | _CLOEXEC | _BINARY | getattr(os, "O_NONBLOCK", 0), 0o666)
    except OSError as error:
        if error.errno != errno.ENOENT and os.path.islink(path):  # ELOOP on Linux, EMLINK/EFTYPE on BSDs
            raise UnsafeFileError(errno.ELOOP, _LINK, path) from None
        if error.errno == errno.EISDIR:
            raise UnsafeFileError(errno.EISDIR, "is not a regular file", path) from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UnsafeFileError(errno.EINVAL, "is not a regular file", path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def make_folders(root: PathLike, folder: PathLike) -> None:
    """Create ``folder`` and its missing parents below the existing folder ``root``, never through a symlink.

    Each part below ``root`` is made (if missing) and entered by descriptor with
    ``O_DIRECTORY | O_NOFOLLOW``: a symlink planted anywhere on the way (``OUT/sub -> /elsewhere``)
    is refused before anything is created through it, so nothing is ever made outside ``root``.
    ``root`` itself is trusted (the caller chose it). Where the OS has no ``O_DIRECTORY`` /
    ``O_NOFOLLOW`` (Windows), the parts are made with ``os.mkdir`` and checked with ``lstat``.

    Args:
        root: an existing folder.
        folder: ``root`` or a folder inside it.

    Raises:
        featx.errors.UnsafeFileError: a part of the way is a symlink (``ELOOP``) or not a folder.
        featx.errors.FeatxValueError: ``folder`` is not inside ``root``.
        OSError: a part cannot be created (permissions, a full disk).

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     make_folders(d, os.path.join(d, "a", "b"))
        ...     os.symlink(os.path.join(d, "a"), os.path.join(d, "link"))
        ...     try:
        ...         make_folders(d, os.path.join(d, "link", "c"))
        ...     except OSError as error:
        ...         print(error.strerror)
        ...     os.path.isdir(os.path.join(d, "a", "b")), os.path.exists(os.path.join(d, "a", "c"))
        is a symbolic link, which featx does not follow here
        (True, False)
    """
    root, folder = os.path.abspath(os.fspath(root)), os.path.abspath(os.fspath(folder))
    relative = os.path.relpath(folder, root)
    if relative == os.curdir:
        return
    parts = relative.split(os.sep)
    if parts[0] == os.pardir or os.path.isabs(relative):
        raise FeatxValueError(f"folder {folder} is not inside {root}")
    directory = getattr(os, "O_DIRECTORY", 0)
    if not (directory and _NOFOLLOW and os.open in os.supports_dir_fd):  # pragma: no cover - not POSIX
        current = root
        for part in parts:
            current = os.path.join(current, part)
            try:
                os.mkdir(current)
            except FileExistsError:
                pass
            if not stat.S_ISDIR(os.lstat(current).st_mode):
                raise UnsafeFileError(errno.ENOTDIR, "is a symbolic link or not a folder", current)
        return
    flags = os.O_RDONLY | directory | _NOFOLLOW | _CLOEXEC
    fd = os.open(root, os.O_RDONLY | directory | _CLOEXEC)
    current = root
    try:
        for part in parts:
            current = os.path.join(current, part)
            try:
                os.mkdir(part, dir_fd=fd)
            except FileExistsError:
                pass
            try:
                child = os.open(part, flags, dir_fd=fd)
            except OSError as error:
                if error.errno in (errno.ELOOP, errno.ENOTDIR):
                    if os.path.islink(current):
                        raise UnsafeFileError(errno.ELOOP, _LINK, current) from None
                    raise UnsafeFileError(errno.ENOTDIR, "is not a folder", current) from None
                raise
            os.close(fd)
            fd = child
    finally:
        os.close(fd)


def read_no_follow(path: PathLike) -> bytes:
    """The bytes of the regular file ``path``, never read through a symlink at its last component.

    A FIFO or device planted at ``path`` is not read either (the open does not block on it).

    Raises:
        FileNotFoundError: nothing at ``path``.
        featx.errors.UnsafeFileError: ``path`` is a symlink (``errno`` ``ELOOP``, "is a symbolic link,
            which featx does not follow here") or not a regular file.
        OSError: ``path`` cannot be read.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     with open(os.path.join(d, "a"), "w") as handle:
        ...         _ = handle.write("text")
        ...     os.symlink(os.path.join(d, "a"), os.path.join(d, "link"))
        ...     read_no_follow(os.path.join(d, "a"))
        ...     try:
        ...         read_no_follow(os.path.join(d, "link"))
        ...     except OSError as error:
        ...         print(error.strerror)
        b'text'
        is a symbolic link, which featx does not follow here
    """
    fd = open_no_follow(path)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)
