"""Image discovery: which files a run takes from folders, files and ``--files-from`` lists, and their keys.

Folders are walked for :data:`IMAGE_EXTENSIONS` (any letter case), hidden names skipped, symlinked
folders followed once; every image gets a key relative to the common root of the inputs, which
names its outputs (see :func:`find_images`). How a file is decoded is :mod:`featx.io.images`' job.
Nothing here imports torch.
"""

from __future__ import annotations

import base64
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from featx.errors import FeatxValueError, InputNotFoundError

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageSource",
    "decode_name",
    "discover",
    "find_images",
    "name_bytes",
    "printable_name",
    "read_file_list",
]

PathLike = Union[str, "os.PathLike[str]"]

IMAGE_EXTENSIONS: tuple[str, ...] = (".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
"""File extensions folder discovery keeps (compared in lower case)."""


@dataclass(frozen=True)
class ImageSource:
    """One input image.

    Attributes:
        path: absolute path (symlinks kept as given, not resolved).
        key: POSIX path relative to the common root of the inputs; outputs and manifest lines are
            named after it, so it is unique and stable across runs and ranks.
        problem: see below.
    """

    path: str
    key: str
    problem: str = ""
    """Why this entry cannot be used, found while walking (an unreadable folder, a FIFO, ...);
    ``""`` for an image to decode. Such entries are reported as failed images."""


def _raw(name: str) -> bytes:
    try:
        return os.fsencode(name)
    except UnicodeEncodeError:  # a lone surrogate that is no escaped byte
        return name.encode("utf-8", "surrogatepass")


def printable_name(name: str) -> str:
    r"""A path or key as valid UTF-8 text, for metadata, manifests and messages.

    A name that is valid UTF-8 is returned unchanged. A name that is not (on POSIX, a file name's
    bytes are not always UTF-8; Python holds the invalid bytes as surrogates) is shown with each
    invalid byte as ``\xNN``; its exact bytes are :func:`name_bytes`.

    Example:
        >>> printable_name("train/0001.png")
        'train/0001.png'
        >>> printable_name(os.fsdecode(b"caf\xe9.png")) if os.name == "posix" else "caf\\xe9.png"
        'caf\\xe9.png'
    """
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return _raw(name).decode("utf-8", "backslashreplace")
    return name


def name_bytes(name: str) -> str | None:
    r"""The exact bytes of a name that is not valid UTF-8, base64-encoded; ``None`` for a UTF-8 name.

    Example:
        >>> name_bytes("a.png") is None
        True
        >>> name_bytes(os.fsdecode(b"caf\xe9.png")) if os.name == "posix" else "Y2Fm6S5wbmc="
        'Y2Fm6S5wbmc='
    """
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return base64.b64encode(_raw(name)).decode("ascii")
    return None


def decode_name(printable: str, raw: str | None) -> str:
    r"""The name as Python holds it (surrogate-escaped), from :func:`printable_name` and :func:`name_bytes`.

    Example:
        >>> decode_name("a.png", None)
        'a.png'
        >>> decode_name("caf\\xe9.png", "Y2Fm6S5wbmc=") == os.fsdecode(b"caf\xe9.png")
        True
    """
    return printable if raw is None else os.fsdecode(base64.b64decode(raw))


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _walk(root: str, recursive: bool, unreadable: list[tuple[str, str]]) -> Iterator[str]:
    """Image files under ``root``: hidden entries skipped, symlinks followed, loops cut; folders that
    cannot be listed are appended to ``unreadable`` as ``(path, reason)``."""
    seen: set[str] = set()

    def on_error(error: OSError) -> None:
        where = os.fspath(error.filename) if error.filename is not None else root
        unreadable.append((where, f"cannot read folder ({error.strerror or error}); its images are not included"))

    for folder, subfolders, files in os.walk(root, followlinks=True, onerror=on_error):
        real = os.path.realpath(folder)
        if real in seen:  # a symlink back to a folder already walked: stop here
            subfolders[:] = []
            continue
        seen.add(real)
        subfolders[:] = sorted(name for name in subfolders if not _is_hidden(name)) if recursive else []
        for name in files:
            if not _is_hidden(name) and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                yield os.path.join(folder, name)


def _canonical(path: str) -> str:
    """``path`` absolute, with the symlinks of its folders resolved (the last part kept as named), so a
    folder reached through a symlinked path is the same root as the real one."""
    path = os.path.abspath(path)
    if os.path.isdir(path):
        return os.path.realpath(path)
    return os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))


def find_images(inputs: Iterable[PathLike], *, recursive: bool = True, must_exist: bool = True) -> list[ImageSource]:
    """Collect the images named by folders and files, sorted by key: :func:`discover` without the root.

    Example:
        >>> import tempfile, pathlib
        >>> with tempfile.TemporaryDirectory() as d:
        ...     for name in ("b.PNG", "a/c.jpg", ".hidden.png", "notes.txt"):
        ...         p = pathlib.Path(d, name); p.parent.mkdir(exist_ok=True); p.touch()
        ...     [s.key for s in find_images([d])]
        ['a/c.jpg', 'b.PNG']
    """
    return discover(inputs, recursive=recursive, must_exist=must_exist)[0]


def discover(
    inputs: Iterable[PathLike], *, recursive: bool = True, must_exist: bool = True
) -> tuple[list[ImageSource], str]:
    """Collect the images named by folders and files, sorted by key.

    Folders are walked (recursively unless ``recursive=False``) for files whose extension is in
    :data:`IMAGE_EXTENSIONS` (any case); names starting with ``.`` are skipped; symlinked folders
    are followed once (a link back to a folder already walked is not entered again). A folder that
    cannot be listed is returned as an entry with a ``problem`` (reported as a failed image). Files named
    directly are kept whatever their extension. Keys are relative to the deepest folder holding
    all inputs (for one folder, the folder itself; for a file, its parent), with symlinks in the
    inputs' folders resolved: a folder named through a symlinked path has the same root, keys
    and image paths as its real path (a file named directly keeps its own name).

    Args:
        inputs: folders and/or files.
        recursive: walk subfolders.
        must_exist: raise for a missing input; with ``False`` a missing path is kept as a file
            (``--files-from`` lists: it is then reported per image when decoding fails).

    Returns:
        ``(sources, root)``: distinct images sorted by key, and the folder their keys are relative to.

    Raises:
        FileNotFoundError: an input does not exist (with ``must_exist=True``).
        ValueError: no inputs given.

    Example:
        >>> import tempfile, pathlib
        >>> with tempfile.TemporaryDirectory() as d:
        ...     pathlib.Path(d, "x.png").touch()
        ...     sources, root = discover([d])
        ...     [s.key for s in sources], root == d
        (['x.png'], True)
    """
    paths = [_canonical(os.fspath(item)) for item in inputs]
    if not paths:
        raise FeatxValueError("no inputs given: expected at least one folder or image file")
    roots: list[str] = []
    found: list[str] = []
    unreadable: list[tuple[str, str]] = []
    for path in paths:
        if os.path.isdir(path):
            roots.append(path)
            found.extend(_walk(path, recursive, unreadable))
        elif os.path.exists(path) or os.path.islink(path) or not must_exist:
            roots.append(os.path.dirname(path))
            found.append(path)
        else:
            raise InputNotFoundError(f"input not found: {path} (expected a folder or an image file)")
    base = os.path.commonpath(roots)
    unique = {path: Path(os.path.relpath(path, base)).as_posix() for path in found}
    entries = [ImageSource(path, key) for path, key in unique.items()]
    entries += [ImageSource(path, Path(os.path.relpath(path, base)).as_posix(), why) for path, why in unreadable]
    sources = sorted(entries, key=lambda source: source.key)
    return sources, base


def read_file_list(list_path: PathLike) -> list[str]:
    """Read a ``--files-from`` list: one path per line; blank lines and ``#`` comments skipped.

    ``"-"`` reads standard input; a pipe (``--files-from <(find ...)``, a FIFO) is read as it
    comes, once. Relative paths are taken relative to the current directory (as ``find ... > list``
    writes them). Names that are not UTF-8 are kept losslessly (``os.fsdecode``'s escapes).

    Raises:
        featx.errors.InputNotFoundError: the list file does not exist or cannot be read (a folder,
            permissions); a ``FileNotFoundError``.

    Example:
        >>> import tempfile
        >>> with tempfile.NamedTemporaryFile("w", suffix=".txt") as f:
        ...     _ = f.write("a.png\\n\\n# comment\\n  b.jpg  \\n"); f.flush()
        ...     read_file_list(f.name)
        ['a.png', 'b.jpg']
    """
    if os.fspath(list_path) == "-":
        stdin = sys.stdin.buffer if hasattr(sys.stdin, "buffer") else None
        data = stdin.read() if stdin is not None else os.fsencode(sys.stdin.read())
    else:
        try:
            with open(list_path, "rb") as handle:  # read once: a pipe cannot be read again
                data = handle.read()
        except FileNotFoundError:
            raise InputNotFoundError(f"file list not found: {os.fspath(list_path)}") from None
        except OSError as error:  # a folder, no permission: a setup error like a missing list
            raise InputNotFoundError(f"cannot read the file list {os.fspath(list_path)} ({error.strerror or error})") from None
    lines = (line.strip() for line in data.decode("utf-8", "surrogateescape").splitlines())
    return [line for line in lines if line and not line.startswith("#")]
