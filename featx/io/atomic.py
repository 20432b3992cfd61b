"""Atomic file writes: readers see the old file or the complete new one, never a partial file.

Two entry points share one recipe (hidden temporary name in the target folder, optional fsync,
``os.replace``):

- :func:`write_atomic` writes bytes-like chunks through the page cache (manifests, summaries).
- :func:`write_atomic_buffer` writes one page-aligned buffer (see :func:`aligned_buffer`). Large
  buffers go straight to the device with ``O_DIRECT`` where the OS and filesystem allow it: the
  kernel then neither copies the data into the page cache nor writes it back later, which on a
  2-core machine is most of the CPU cost of saving feature maps (measured: kernel time of a
  96-image ``featx extract`` run 5.1 s -> 0.5 s, see ``docs/cli.md``). Where
  ``O_DIRECT`` is missing (macOS, Windows) or refused (some filesystems), it falls back to a
  buffered write of the same bytes, so the file content never depends on the path taken.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterable
from typing import Any, Union

import torch

from featx.errors import FeatxTypeError, FeatxValueError

__all__ = [
    "ALIGNMENT",
    "DIRECT_MIN_BYTES",
    "aligned_buffer",
    "is_temp_name",
    "temp_name",
    "write_atomic",
    "write_atomic_buffer",
]

PathLike = Union[str, "os.PathLike[str]"]

ALIGNMENT = 4096
"""Memory address and length alignment of buffers written with ``O_DIRECT`` (a page; this also
covers 512-byte and 4 KiB logical sectors)."""

DIRECT_MIN_BYTES = 1 << 20
"""Buffers from this size up are written with ``O_DIRECT`` where available; smaller files go
through the page cache (a synchronous device write per small file would be slower)."""


def aligned_buffer(nbytes: int) -> torch.Tensor:
    """An uninitialised ``uint8`` CPU tensor of at least ``nbytes`` whose data starts on a page.

    Its length is ``nbytes`` rounded up to :data:`ALIGNMENT`, so it can be written with
    ``O_DIRECT`` as a whole; :func:`write_atomic_buffer` trims the file to ``nbytes``.

    Args:
        nbytes: bytes needed (``>= 0``).

    Returns:
        A 1-D ``torch.uint8`` tensor, ``data_ptr() % ALIGNMENT == 0``.

    Raises:
        ValueError: ``nbytes`` is negative.

    Example:
        >>> buffer = aligned_buffer(10)
        >>> buffer.numel(), buffer.data_ptr() % ALIGNMENT
        (4096, 0)
    """
    if nbytes < 0:
        raise FeatxValueError(f"nbytes must be >= 0, got {nbytes}")
    padded = max(ALIGNMENT, nbytes + (-nbytes % ALIGNMENT))
    raw = torch.empty(padded + ALIGNMENT, dtype=torch.uint8)
    shift = -raw.data_ptr() % ALIGNMENT
    return raw[shift : shift + padded]


_TEMP = re.compile(r"^\..+\.featx-\d+\.tmp$")


def temp_name(name: str, pid: int) -> str:
    """The temporary name featx writes ``name`` under before renaming it: ``.NAME.featx-PID.tmp``.

    Hidden, never ending in ``.safetensors``, and with a featx-specific tail, so cleanup can tell
    featx's own leftovers from a user's files (:func:`is_temp_name`).

    Example:
        >>> temp_name("a.png.safetensors", 42)
        '.a.png.safetensors.featx-42.tmp'
    """
    return f".{name}.featx-{pid}.tmp"


def is_temp_name(name: str) -> bool:
    """Whether a file name is one of featx's temporary names (:func:`temp_name`).

    Example:
        >>> is_temp_name(".a.png.safetensors.featx-42.tmp"), is_temp_name(".notes.42.tmp")
        (True, False)
    """
    return _TEMP.match(name) is not None


def _temp_name(path: str) -> tuple[str, str]:
    folder, name = os.path.split(path)
    return folder, os.path.join(folder, temp_name(name, os.getpid()))


def _sync_folder(folder: str) -> None:
    """fsync a folder so a rename in it survives a power loss (POSIX; best effort)."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    try:
        dir_fd = os.open(folder or ".", os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def _write_buffered(name: str, chunks: Iterable[Any], fsync: bool) -> None:
    """Write ``chunks`` to a new file ``name`` through the page cache, optionally fsynced."""
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    with os.fdopen(fd, "wb") as handle:
        for chunk in chunks:
            handle.write(chunk)
        handle.flush()
        if fsync:
            os.fsync(handle.fileno())


def _publish(temp: str, path: str, write: Any) -> None:
    """Run ``write(temp)``, then rename ``temp`` to ``path``; remove ``temp`` on any failure."""
    try:
        write(temp)
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise


def write_atomic(path: PathLike, chunks: Iterable[Any], *, fsync: bool = True, sync_dir: bool = True) -> None:
    """Write bytes-like ``chunks`` to ``path`` atomically: a hidden temporary file in the same
    folder (``.NAME.featx-PID.tmp``, :func:`temp_name`), fsync, then ``os.replace``.

    Readers see either the old file or the complete new one, never a partial file, even if the
    process is killed. The folder must exist.

    Args:
        path: destination.
        chunks: bytes-like objects written in order.
        fsync: flush the file's data to disk before the rename, so a name that survives a power
            loss always holds complete data.
        sync_dir: also fsync the folder after the rename, so the rename itself survives a power
            loss (one journal commit per file; feature files skip it: a lost rename only means
            the file is recomputed).

    Example:
        >>> import tempfile, os
        >>> with tempfile.TemporaryDirectory() as d:
        ...     write_atomic(os.path.join(d, "a.txt"), [b"hello ", b"world"])
        ...     open(os.path.join(d, "a.txt"), "rb").read(), sorted(os.listdir(d))
        (b'hello world', ['a.txt'])
    """
    path = os.fspath(path)
    folder, temp = _temp_name(path)

    _publish(temp, path, lambda name: _write_buffered(name, chunks, fsync))
    if fsync and sync_dir:
        _sync_folder(folder)


def _write_direct(name: str, data: memoryview, nbytes: int, fsync: bool) -> bool:
    """Write the whole aligned ``data`` with ``O_DIRECT`` and trim to ``nbytes``.

    Returns ``False`` (having written nothing that matters) where ``O_DIRECT`` is refused.
    """
    try:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o666)  # type: ignore[attr-defined,unused-ignore]  # Linux only
    except OSError as error:
        if error.errno == errno.EINVAL:  # the filesystem does not support O_DIRECT
            return False
        raise
    try:
        done = 0
        while done < len(data):
            done += os.write(fd, data[done:])
        os.ftruncate(fd, nbytes)
        if fsync:
            os.fsync(fd)
    except OSError as error:
        if error.errno == errno.EINVAL:  # alignment the device does not accept: use the page cache
            return False
        raise
    finally:
        os.close(fd)
    return True


def write_atomic_buffer(
    path: PathLike, buffer: torch.Tensor, nbytes: int, *, fsync: bool = True, direct: bool = True
) -> None:
    """Atomically write the first ``nbytes`` of an :func:`aligned_buffer` to ``path``.

    Same guarantees as :func:`write_atomic` (hidden temporary name, optional fsync, rename;
    the folder itself is not synced). From :data:`DIRECT_MIN_BYTES` up, the data is written with
    ``O_DIRECT`` where available (Linux and most filesystems), bypassing the page cache: the
    file is not cached for an immediate re-read, and the kernel spends almost no CPU on it.
    Either way the file holds exactly ``buffer[:nbytes]``.

    Args:
        path: destination; its folder must exist.
        buffer: a contiguous ``uint8`` CPU tensor from :func:`aligned_buffer`.
        nbytes: bytes of ``buffer`` that make the file (``<= buffer.numel()``).
        fsync: flush the data to disk before the rename.
        direct: allow ``O_DIRECT``; ``False`` always writes through the page cache (then the
            file stays cached for an immediate re-read).

    Raises:
        TypeError: ``buffer`` is not a contiguous ``uint8`` CPU tensor.
        ValueError: ``nbytes`` is outside ``[0, buffer.numel()]``.
        OSError: the file cannot be written (nothing is left at ``path`` or the temporary name).

    Example:
        >>> import tempfile, os
        >>> buffer = aligned_buffer(5)
        >>> buffer[:5] = torch.tensor(list(b"hello"), dtype=torch.uint8)
        >>> with tempfile.TemporaryDirectory() as d:
        ...     write_atomic_buffer(os.path.join(d, "a.bin"), buffer, 5)
        ...     open(os.path.join(d, "a.bin"), "rb").read()
        b'hello'
    """
    if not (
        isinstance(buffer, torch.Tensor)
        and buffer.dtype == torch.uint8
        and buffer.device.type == "cpu"
        and buffer.is_contiguous()
    ):
        raise FeatxTypeError(f"buffer must be a contiguous uint8 CPU tensor from aligned_buffer(), got {buffer!r:.80}")
    if not 0 <= nbytes <= buffer.numel():
        raise FeatxValueError(f"nbytes must be in [0, {buffer.numel()}] (the buffer's length), got {nbytes}")
    path = os.fspath(path)
    _, temp = _temp_name(path)
    data = buffer.numpy().data.cast("B")
    direct = (
        direct
        and hasattr(os, "O_DIRECT")
        and nbytes >= DIRECT_MIN_BYTES
        and buffer.data_ptr() % ALIGNMENT == 0
        and buffer.numel() % ALIGNMENT == 0
    )

    def write(name: str) -> None:
        if not (direct and _write_direct(name, data, nbytes, fsync)):
            _write_buffered(name, [data[:nbytes]], fsync)

    _publish(temp, path, write)
