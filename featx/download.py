"""The one network function of featx (``download``) and file verification against known hashes.

Building an extractor never downloads: ``featx weights download NAME`` (which calls
:func:`download`) is the only path that opens a connection.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import uuid
from pathlib import Path
from typing import Union

from featx.errors import HashMismatchError
from featx.weights import _CHUNK, PathLike, VGGWeights, _member, featx_home, sha256_file

__all__ = ["download", "verify"]

def _check_hex(expected: str) -> str:
    expected = expected.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{8,64}", expected):
        raise ValueError(f"a sha256 must be 8 to 64 hex digits, got {expected!r}")
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
        raise FileNotFoundError(f"no such file: {path}")
    if expected_prefix is None:
        known = VGGWeights.from_file_name(path.name)
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
    name_or_member: Union[str, VGGWeights],
    *,
    dest_dir: Union[PathLike, None] = None,
    progress: bool = True,
    url: Union[str, None] = None,
    sha256: Union[str, None] = None,
    timeout: float = 60.0,
) -> Path:
    """Download a known checkpoint, verify its sha256 and move it into place atomically.

    This is the only function in featx that opens a network connection. The data streams to a
    temporary file in ``dest_dir`` (a progress bar on stderr), is hashed on the way, and is renamed
    to its file name only when the hash matches; otherwise nothing is left behind. An existing
    file with the right hash is returned without downloading.

    Args:
        name_or_member: a :class:`VGGWeights` member, its name, or an arch name (its default).
        dest_dir: target directory (default :func:`featx_home`).
        progress: show a tqdm progress bar on stderr.
        url: download from here instead of torchvision's URL (a mirror, or ``file://`` in tests).
        sha256: expected full sha256 (or a prefix of at least 8 digits) instead of the file name's prefix.
        timeout: socket timeout in seconds.

    Returns:
        The path of the verified file.

    Raises:
        ValueError: unknown name, or a malformed ``sha256``.
        HashMismatchError: the downloaded data has another sha256 (names expected and actual).
        OSError: the download failed (network unreachable, HTTP error, disk full).
    """
    import urllib.error
    import urllib.request

    from tqdm import tqdm

    member = _member(name_or_member)
    expected = _check_hex(sha256 if sha256 is not None else member.sha256_prefix)
    directory = Path(dest_dir if dest_dir is not None else featx_home()).expanduser()
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / member.file_name
    if target.is_file() and sha256_file(target).startswith(expected):
        return target
    source = url or member.url
    temp = directory / f".{member.file_name}.{os.getpid()}.{uuid.uuid4().hex}.part"
    handle = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # 0o666 & ~umask, unlike mkstemp's 0o600
    try:
        digest = hashlib.sha256()
        with os.fdopen(handle, "wb") as out:
            try:
                response = urllib.request.urlopen(source, timeout=timeout)
            except urllib.error.URLError as error:
                raise OSError(
                    f"could not download {source}: {getattr(error, 'reason', error)}. Offline? Copy "
                    f"{member.file_name} into {directory} by other means, or pass weights=PATH"
                ) from error
            with response:
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                with tqdm(
                    total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=member.file_name,
                    disable=not progress, file=sys.stderr,
                ) as bar:  # fmt: skip
                    while chunk := response.read(_CHUNK):
                        out.write(chunk)
                        digest.update(chunk)
                        bar.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())
        actual = digest.hexdigest()
        if not actual.startswith(expected):
            raise HashMismatchError(
                f"sha256 mismatch for {source}: expected {expected}..., got {actual}; the download was deleted",
                source=source,
                expected=expected,
                actual=actual,
            )
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return target
