"""The one network function of featx (:func:`download`) and file verification against known hashes.

Building an extractor never downloads: ``featx weights download NAME`` (which calls
:func:`download`) is the only path that opens a connection.
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path
from typing import Union

from featx.errors import DownloadError, FeatxValueError, HashMismatchError, InputNotFoundError
from featx.weights._common import PathLike
from featx.weights.checkpoint import sha256_file
from featx.weights.locations import featx_home
from featx.weights.registry import KnownCheckpoint, known_by_file_name, member_of

__all__ = ["download", "verify"]


def _check_hex(expected: str) -> str:
    expected = expected.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{8,64}", expected):
        raise FeatxValueError(f"a sha256 must be 8 to 64 hex digits, got {expected!r}")
    return expected


def verify(path: PathLike, expected_prefix: Union[str, None] = None) -> str:
    """Hash a file and check it against ``expected_prefix`` or the known prefix in its file name.

    Args:
        path: the file.
        expected_prefix: the expected sha256 or its start; ``None`` uses the prefix of the known
            checkpoint with this file name (no check when the name is not a known one).

    Returns:
        The full sha256 hex digest.

    Raises:
        FileNotFoundError: no such file.
        HashMismatchError: the sha256 does not start with the expected digits (a ``ValueError``).
    """
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"no such file: {path}")
    if expected_prefix is None:
        known = known_by_file_name(path.name)
        expected_prefix = known.sha256_prefix if known is not None else None
    actual = sha256_file(path)
    if expected_prefix is not None:
        expected = _check_hex(expected_prefix)
        if not actual.startswith(expected):
            raise HashMismatchError(
                f"sha256 mismatch for {path}: expected {expected}..., got {actual}",
                source=str(path),
                expected=expected,
                actual=actual,
            )
    return actual


def download(
    name_or_member: Union[str, KnownCheckpoint],
    *,
    dest_dir: Union[PathLike, None] = None,
    progress: bool = True,
    url: Union[str, None] = None,
    sha256: Union[str, None] = None,
) -> Path:
    """Download a known checkpoint, verify its full sha256 and move it into place atomically.

    This is the only function in featx that opens a network connection. The data is fetched with
    ``torch.hub.download_url_to_file`` (a progress bar on stderr; ``http(s)://`` and ``file://``
    URLs) into a hidden temporary file in ``dest_dir``, hashed, fsynced and renamed to its file
    name only when the hash matches. On a mismatch, an error or an interruption (Ctrl-C) the
    temporary file is deleted: nothing is left behind. An existing file with the right hash is
    returned without downloading. The file follows the umask (``0o644`` with ``umask 022``).

    Args:
        name_or_member: a :class:`VGGWeights` or :class:`MetricWeights` member, its name
            (``"LPIPS_VGG_V0_1"``), an arch name (its default backbone), or torchvision's name
            (``"VGG19_Weights.IMAGENET1K_V1"``).
        dest_dir: target directory (default :func:`featx_home`).
        progress: show a tqdm progress bar on stderr.
        url: download from here instead of the published URL (a mirror, or ``file://`` in tests).
        sha256: expected full sha256 (or a prefix of at least 8 digits) instead of the known one.

    Returns:
        The path of the verified file.

    Raises:
        ValueError: unknown name, or a malformed ``sha256``.
        HashMismatchError: the downloaded data has another sha256 (names expected and actual).
        OSError: the download failed (network unreachable, HTTP error, disk full).
    """
    import urllib.error

    import torch.hub

    member = member_of(name_or_member)
    expected = _check_hex(sha256 if sha256 is not None else member.sha256_prefix)
    directory = Path(dest_dir if dest_dir is not None else featx_home()).expanduser()
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / member.file_name
    if target.is_file() and sha256_file(target).startswith(expected):
        return target
    source = url or member.url
    # torch.hub writes DST.<uuid>.partial with open() (mode 0o666 & ~umask), removes it on any
    # error and moves it to DST when complete; it reads file:// URLs through urllib's FileHandler.
    temp = directory / f".{member.file_name}.{os.getpid()}.{uuid.uuid4().hex}.part"
    try:
        try:
            torch.hub.download_url_to_file(source, str(temp), hash_prefix=None, progress=progress)
        except urllib.error.URLError as error:
            raise DownloadError(
                f"could not download {source}: {getattr(error, 'reason', error)}. Offline? Copy "
                f"{member.file_name} into {directory} by other means, or pass weights=PATH"
            ) from error
        actual = sha256_file(temp)
        if not actual.startswith(expected):
            raise HashMismatchError(
                f"sha256 mismatch for {source}: expected {expected}..., got {actual}; the download was deleted",
                source=source,
                expected=expected,
                actual=actual,
            )
        descriptor = os.open(temp, os.O_RDONLY)
        try:
            os.fsync(descriptor)  # the data is on disk before the name says the file is complete
        finally:
            os.close(descriptor)
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)  # after os.replace there is nothing left to remove
    return target
