"""Pillow's process-wide settings while featx reads images, safe when threads decode at once.

Two of Pillow's module globals decide what featx must decide itself:

- ``PIL.Image.MAX_IMAGE_PIXELS``: Pillow checks an image's size against it when the header is
  parsed (and some formats, TIFF and GIF, again when pixels are loaded). featx applies its own
  limit (``max_pixels``, by default Pillow's value) to the header, so a refusal quotes featx's limit
  and a trusted larger limit opens the file. :func:`open_header` lifts Pillow's check while it
  parses a header, under a lock, and for the whole decode when ``max_pixels`` is above Pillow's
  limit; lifts are counted across threads and the user's value comes back when the last one ends.
  The limit featx applies is read under the same lock from the user's value, so no featx call ever
  takes a lifted value for its own. Lifted means ``sys.maxsize``, never ``None``: Pillow reads the
  global twice per check, and code in another thread that read a number and then ``None`` would
  fail with a ``TypeError``. A Pillow size check in another thread during a lift passes.
- ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES``: other libraries set it globally, and Pillow then pads a
  truncated file instead of failing. :func:`strict_loading` holds it off while any featx decode is
  running (counted across threads) and restores the value it found when the last one ends.

A per-call save/set/restore is not enough: ``featx score`` decodes in threads, two overlapping calls
restore each other's values, and Pillow's limit could stay lifted for the rest of the process.
Code outside featx that changes these globals while featx decodes is not coordinated with.
Nothing here imports torch.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import threading
from collections.abc import Iterator
from typing import Any, BinaryIO, Union

from PIL import Image, ImageFile

from featx.errors import ImageDecodeError

__all__ = ["open_header", "strict_loading"]

_lock = threading.Lock()


class _CountedOverride:
    """A module global held at ``value`` while at least one featx user needs it (the calls hold
    ``_lock``): the first user keeps the value it finds, the last one puts it back."""

    def __init__(self, module: object, name: str, value: object) -> None:
        self.module, self.name, self.value = module, name, value
        self.users, self.saved = 0, None

    def enter(self) -> None:
        if self.users == 0:
            self.saved = getattr(self.module, self.name)
        self.users += 1
        setattr(self.module, self.name, self.value)

    def leave(self) -> None:
        self.users -= 1
        if self.users == 0:
            setattr(self.module, self.name, self.saved)

    def user_value(self) -> Any:
        """The value as the user set it, also while it is overridden."""
        return self.saved if self.users else getattr(self.module, self.name)


_strict = _CountedOverride(ImageFile, "LOAD_TRUNCATED_IMAGES", False)
_lifted = _CountedOverride(Image, "MAX_IMAGE_PIXELS", sys.maxsize)


def _reset_after_fork() -> None:
    """A child forked while another thread held the lock gets a fresh, unlocked one; the counts
    start again (a setting lifted by a thread the child does not have stays as the child found it)."""
    global _lock
    _lock = threading.Lock()
    _strict.users = _lifted.users = 0


os.register_at_fork(after_in_child=_reset_after_fork)


@contextlib.contextmanager
def strict_loading() -> Iterator[None]:
    """Decode with ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` off, so a truncated file raises instead
    of coming out padded; the value found is restored when the last overlapping user leaves.

    Example:
        >>> from PIL import ImageFile
        >>> with strict_loading():
        ...     ImageFile.LOAD_TRUNCATED_IMAGES
        False
    """
    with _lock:
        _strict.enter()
    try:
        yield
    finally:
        with _lock:
            _strict.leave()


def _open_regular(path: Union[str, os.PathLike[str]]) -> BinaryIO:
    """The file opened for reading without ever blocking: a FIFO, socket or device is refused from
    the opened descriptor (no race with an earlier ``stat``), as are folders and empty files."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError(path)
        if not stat.S_ISREG(info.st_mode):
            raise ImageDecodeError(path, "not a regular file (a FIFO, socket or device); not read")
        if info.st_size == 0:
            raise ImageDecodeError(path, "empty file (0 bytes)")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


@contextlib.contextmanager
def open_header(
    path: Union[str, os.PathLike[str]], max_pixels: Union[int, None]
) -> Iterator[tuple[ImageFile.ImageFile, Union[int, None]]]:
    """Open ``path`` with Pillow (header only) with Pillow's own size check lifted meanwhile, and
    while the image is open when ``max_pixels`` is above Pillow's limit (a trusted large file).

    Args:
        path: image file.
        max_pixels: featx's limit; ``None`` means Pillow's ``MAX_IMAGE_PIXELS`` as the user set it.

    Returns:
        A context manager giving ``(image, limit)``: the open image (closed with its file on exit)
        and the pixel limit the caller must apply to ``image.size`` before decoding (``None``:
        no limit, Pillow's was disabled by the user and no ``max_pixels`` given).

    Raises:
        ImageDecodeError: not a regular file, or empty.
        OSError: the file cannot be opened; ``PIL.UnidentifiedImageError`` and Pillow's other
            errors for files it cannot parse.

    Example:
        >>> import tempfile, os
        >>> with tempfile.TemporaryDirectory() as d:
        ...     Image.new("RGB", (20, 10)).save(os.path.join(d, "a.png"))
        ...     with open_header(os.path.join(d, "a.png"), 500) as (image, limit):
        ...         image.size, limit
        ((20, 10), 500)
    """
    file = _open_regular(path)
    try:
        with _lock:
            user_limit = _lifted.user_value()
            limit = user_limit if max_pixels is None else max_pixels
            trusted = user_limit is not None and limit is not None and limit > user_limit
            _lifted.enter()
            try:
                image = Image.open(file)
            finally:
                if not trusted:
                    _lifted.leave()
        try:
            with image:
                yield image, limit
        finally:
            if trusted:  # Pillow checks TIFF and GIF sizes again while loading pixels
                with _lock:
                    _lifted.leave()
    finally:
        file.close()
