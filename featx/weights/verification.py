"""Checking files against the registry: by byte size and full sha256, as the checkpoint they are
loaded as or named like, or recognised by content; the state each check reaches
(:class:`~featx.weights.info.Verification`) and the switch that makes anything short of a full
match an error (``FEATX_REQUIRE_VERIFIED``)."""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from featx.errors import (
    FeatxValueError,
    HashMismatchError,
    InputNotFoundError,
    UnverifiableWeightsError,
    UnverifiedWeightsWarning,
)
from featx.weights._common import PathLike
from featx.weights.checkpoint import sha256_file
from featx.weights.index import indexed_sha256, remember_sha256
from featx.weights.info import Verification
from featx.weights.locations import find
from featx.weights.registry import KnownCheckpoint, known_by_file_name, known_by_sha256, known_checkpoints

__all__ = [
    "REQUIRE_VERIFIED_ENV",
    "VERIFY_MODES",
    "FileCheck",
    "HashCheck",
    "check_file",
    "check_hex",
    "check_known_hash",
    "checkpoint_status",
    "compare",
    "verify",
    "verify_mode",
]

REQUIRE_VERIFIED_ENV = "FEATX_REQUIRE_VERIFIED"
"""Environment variable: ``1`` makes every checkpoint short of a full sha256 match (a mismatch, or
a prefix-only entry) an error (see :func:`verify_mode`)."""
VERIFY_MODES = ("warn", "error")
"""What a known checkpoint's file does when it is not fully verified: ``"warn"`` (a mismatch warns
and loads as unverified, a prefix-only match loads as prefix-verified) or ``"error"`` (both raise)."""


def verify_mode(verify: Optional[str] = None) -> str:
    """The effective ``verify`` mode: the argument, else ``$FEATX_REQUIRE_VERIFIED`` (``1`` -> ``"error"``).

    Raises:
        ValueError: ``verify`` not in :data:`VERIFY_MODES`, or an unreadable environment value.

    Example:
        >>> verify_mode("error"), verify_mode("warn")
        ('error', 'warn')
    """
    if verify is None:
        raw = os.environ.get(REQUIRE_VERIFIED_ENV, "").strip().lower()
        if raw in ("", "0", "false", "no", "off"):
            return "warn"
        if raw in ("1", "true", "yes", "on"):
            return "error"
        raise FeatxValueError(
            f"{REQUIRE_VERIFIED_ENV}={raw!r}: expected 1/true/yes/on (checkpoints short of a full sha256 match are "
            "an error) or 0/false/no/off or unset (they warn)"
        )
    if verify not in VERIFY_MODES:
        raise FeatxValueError(
            f"verify must be one of {', '.join(map(repr, VERIFY_MODES))} "
            f"(or None: {REQUIRE_VERIFIED_ENV} decides), got {verify!r}"
        )
    return verify


def check_hex(expected: str) -> str:
    """A user's sha256 (or a prefix of at least 8 hex digits), lower-cased.

    Raises:
        ValueError: not 8 to 64 hex digits.

    Example:
        >>> check_hex(" DCBB9E9D ")
        'dcbb9e9d'
    """
    text = expected.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{8,64}", text):
        raise FeatxValueError(f"a sha256 must be 8 to 64 hex digits, got {expected!r}")
    return text


def compare(member: KnownCheckpoint, *, size: Optional[int], sha256: str) -> Verification:
    """How a file of ``size`` bytes with this sha256 compares with ``member``: the size first
    (where both are known), then the full sha256, or the prefix of a prefix-only entry.

    Example:
        >>> from featx.weights.registry import VGGWeights
        >>> vgg19, vgg13 = VGGWeights.VGG19_IMAGENET1K_V1, VGGWeights.VGG13_IMAGENET1K_V1
        >>> forged = "dcbb9e9d" + "0" * 56  # the right 8 hex digits, another file
        >>> compare(vgg19, size=vgg19.size, sha256=forged).value, compare(vgg19, size=1, sha256=vgg19.sha256).value
        ('mismatch', 'mismatch')
        >>> compare(vgg13, size=None, sha256="19584684" + "0" * 56).value
        'prefix'
    """
    if member.size is not None and size is not None and size != member.size:
        return Verification.MISMATCH
    full = member.full_sha256
    if full is not None:
        return Verification.SHA256 if sha256 == full else Verification.MISMATCH
    return Verification.PREFIX if sha256.startswith(member.sha256) else Verification.MISMATCH


@dataclass(frozen=True)
class HashCheck:
    """The result of :func:`check_known_hash`.

    Attributes:
        verification: the state the file reached.
        checkpoint: the known checkpoint it was compared with or recognised as (``None`` when unknown).
    """

    verification: Verification
    checkpoint: Optional[KnownCheckpoint]


def _mismatch_text(path: Path, member: KnownCheckpoint, size: Optional[int], sha256: str, loaded_as: bool) -> str:
    origin = "torchvision's" if member.url.startswith("https://download.pytorch.org/") else f"the {member.kind} project's"
    how = f"is loaded as {origin} {member.name}" if loaded_as else f"is named like {origin} {member.name} checkpoint"
    if member.size is not None and size is not None and size != member.size:
        detail = f"its size is {size:,} bytes, not {member.size:,}"
    elif member.full_sha256 is not None:
        detail = f"its sha256 {sha256[:16]}... differs from {member.sha256[:16]}..."
    else:
        detail = f"its sha256 {sha256[:16]}... does not start with {member.sha256}"
    other = known_by_sha256(sha256)
    content = f" (its content is {other.name}'s)" if other is not None and other is not member else ""
    return (
        f"{path} {how}, but {detail}: it is a different or corrupted file{content} "
        f"(`featx weights download {member.name}` fetches the original)"
    )


def check_known_hash(
    path: Path, sha256: str, member: Optional[KnownCheckpoint], mode: str, *, size: Optional[int] = None
) -> HashCheck:
    """Compare a file with the checkpoint it is loaded as, else the one whose file name it has, else
    recognise it by its full sha256; a mismatch warns (every load) or raises, and under
    ``mode="error"`` a prefix-only match raises too.

    Args:
        path: the file.
        sha256: its full sha256.
        member: the checkpoint it is loaded as; ``None`` looks its file name up in the registry.
        mode: ``"warn"`` or ``"error"`` (see :func:`verify_mode`).
        size: its size in bytes (compared first where the checkpoint's is known; default: stat it).

    Returns:
        :class:`HashCheck`: ``SHA256`` / ``PREFIX`` / ``MISMATCH`` with the checkpoint, or
        ``SHA256`` with the checkpoint recognised by content, or ``UNKNOWN``.

    Raises:
        HashMismatchError: a mismatch with ``mode="error"``.
        UnverifiableWeightsError: a prefix-only match with ``mode="error"``.
    """
    known = member if member is not None else known_by_file_name(path.name)
    if known is None:
        by_content = known_by_sha256(sha256)
        return HashCheck(Verification.UNKNOWN if by_content is None else Verification.SHA256, by_content)
    size = path.stat().st_size if size is None else size
    state = compare(known, size=size, sha256=sha256)
    if state is Verification.PREFIX and mode == "error":
        raise UnverifiableWeightsError(
            f"{path} matches {known.name} only by the 8 hex digits of torchvision's file name ({known.sha256}): no "
            "public source gives the file's full sha256, and 32 bits can be forged, so featx cannot verify it "
            f"(its sha256 is {sha256}). Refused because verify='error' or {REQUIRE_VERIFIED_ENV}=1. To go on: compare "
            "that sha256 with one you trust (`featx weights verify PATH --sha256 HEX`), then load this checkpoint "
            "with verify_weights='warn' (recorded as prefix-verified), or use a checkpoint with a full sha256 "
            "(`featx weights list`)",
            source=str(path),
            checkpoint=known.name,
            actual=sha256,
        )
    if state is Verification.MISMATCH:
        message = _mismatch_text(path, known, size, sha256, loaded_as=member is not None and path.name != known.file_name)
        if mode == "error":
            raise HashMismatchError(
                f"{message}. Refused because verify='error' or {REQUIRE_VERIFIED_ENV}=1",
                source=str(path),
                expected=known.sha256,
                actual=sha256,
            )
        warnings.warn(
            f"{message}; loaded as unverified weights (sha256 {sha256}). Set {REQUIRE_VERIFIED_ENV}=1 to make this an error",
            UnverifiedWeightsWarning,
            stacklevel=4,
        )
    return HashCheck(state, known)


@dataclass(frozen=True)
class FileCheck:
    """What :func:`check_file` found.

    Attributes:
        path: the file.
        size: its size in bytes.
        sha256: its full sha256.
        verification: ``SHA256`` (full match), ``PREFIX``, ``MISMATCH`` or ``UNKNOWN``.
        checkpoint: the known checkpoint it was compared with or recognised as.
        expected: the sha256 it was compared with (64 hex digits or a prefix), ``None`` if none.
        reason: one line saying why, for people.
    """

    path: Path
    size: int
    sha256: str
    verification: Verification
    checkpoint: Optional[KnownCheckpoint]
    expected: Optional[str]
    reason: str


def _against_given(path: Path, size: int, actual: str, expected: str) -> FileCheck:
    known = known_by_sha256(actual)
    if not actual.startswith(expected):
        return FileCheck(path, size, actual, Verification.MISMATCH, known, expected, f"the sha256 is not the given {expected}")
    if len(expected) < 64:
        reason = f"the sha256 starts with the given {len(expected)} hex digits only: pass all 64 to verify it"
        return FileCheck(path, size, actual, Verification.PREFIX, known, expected, reason)
    return FileCheck(path, size, actual, Verification.SHA256, known, expected, "the sha256 equals the given one")


def _file_sha256(path: Path, use_index: bool, known: Optional[KnownCheckpoint] = None) -> str:
    """The file's sha256: read whole, or from the index (and recorded there, with how it compares
    with ``known``, when it had to be hashed)."""
    if not use_index:
        return sha256_file(path)
    sha256, fresh = indexed_sha256(path)
    if fresh:
        extra = {} if known is None else {"checkpoint": known.name, "verification": str(compare(known, size=None, sha256=sha256))}
        try:
            remember_sha256(path, path.stat(), sha256, **extra)
        except OSError:  # an unwritable cache: the hash is still right
            pass
    return sha256


def check_file(path: PathLike, *, sha256: Optional[str] = None, use_index: bool = False) -> FileCheck:
    """Check a file against a given sha256, else against the registry, whatever its name.

    Without ``sha256``: a file named like a known checkpoint must be that file (size first, then the
    full sha256; a prefix-only entry can only reach ``PREFIX``); a file under any other name whose
    full sha256 is a known checkpoint's is that checkpoint (``SHA256``); one whose sha256 starts with
    a prefix-only entry's 8 hex digits is ``PREFIX``; anything else is ``UNKNOWN``.

    Args:
        path: the file.
        sha256: a sha256 you trust (64 hex digits; a shorter prefix reaches ``PREFIX`` at most).
        use_index: take the hash from ``cache/index.json`` when the file is unchanged since it was
            hashed (and record it there); ``False`` always reads the whole file.

    Returns:
        :class:`FileCheck`.

    Raises:
        FileNotFoundError: no such file.
        ValueError: ``sha256`` is not 8 to 64 hex digits.

    Example:
        >>> import tempfile
        >>> with tempfile.NamedTemporaryFile(suffix=".pth") as f:
        ...     _ = f.write(b"abc"); f.flush()
        ...     check_file(f.name).verification.value, check_file(f.name, sha256="ba7816bf" * 8).verification.value
        ('unknown', 'mismatch')
    """
    path = Path(path)
    expected = None if sha256 is None else check_hex(sha256)
    if not path.is_file():
        raise InputNotFoundError(f"no such file: {path}")
    size = path.stat().st_size
    actual = _file_sha256(path, use_index)
    if expected is not None:
        return _against_given(path, size, actual, expected)
    named = known_by_file_name(path.name)
    if named is not None:  # a known checkpoint's name: it must be that file
        state = compare(named, size=size, sha256=actual)
        if state is Verification.MISMATCH:
            reason = _mismatch_text(path, named, size, actual, loaded_as=False)
        else:
            reason = f"{named.name}: size and full sha256 match" if state is Verification.SHA256 else _prefix_reason(named)
        return FileCheck(path, size, actual, state, named, named.sha256, reason)
    known = known_by_sha256(actual)
    if known is not None:
        return FileCheck(
            path,
            size,
            actual,
            Verification.SHA256,
            known,
            known.sha256,
            f"{known.name}: size and full sha256 match (under another name than {known.file_name})",
        )
    by_prefix = next((m for m in known_checkpoints() if m.full_sha256 is None and actual.startswith(m.sha256)), None)
    if by_prefix is not None:
        return FileCheck(path, size, actual, Verification.PREFIX, by_prefix, by_prefix.sha256, _prefix_reason(by_prefix))
    return FileCheck(
        path,
        size,
        actual,
        Verification.UNKNOWN,
        None,
        None,
        "no known checkpoint has this sha256 or this file name: nothing to verify it against",
    )


def _prefix_reason(member: KnownCheckpoint) -> str:
    return (
        f"{member.name} is prefix-verified only: the sha256 starts with {member.sha256}, the 8 hex digits in "
        "torchvision's file name, and no public source gives the full sha256, so the file cannot be verified; "
        "compare its sha256 with one you trust and pass that (--sha256 HEX)"
    )


def verify(path: PathLike, sha256: Optional[str] = None) -> str:
    """Hash a file and require a full match: with a given sha256, or with the known checkpoint it is
    (by content) or is named like.

    Args:
        path: the file.
        sha256: the expected sha256 (64 hex digits); ``None`` uses the registry (:func:`check_file`).

    Returns:
        The file's full sha256, when it equals the expected one.

    Raises:
        FileNotFoundError: no such file.
        ValueError: ``sha256`` is not 8 to 64 hex digits.
        HashMismatchError: the size or sha256 differs (a ``ValueError``).
        UnverifiableWeightsError: nothing to verify the file against (no known checkpoint, a
            prefix-only entry, or a given prefix shorter than 64 digits; a ``ValueError``).
    """
    result = check_file(path, sha256=sha256)
    if result.verification is Verification.MISMATCH:
        expected = result.expected or ""
        raise HashMismatchError(
            f"sha256 mismatch for {result.path}: expected {expected}{'...' if len(expected) < 64 else ''}, got "
            f"{result.sha256} ({result.reason})",
            source=str(result.path),
            expected=expected,
            actual=result.sha256,
        )
    if result.verification is not Verification.SHA256:
        raise UnverifiableWeightsError(
            f"cannot verify {result.path} (sha256 {result.sha256}): {result.reason}",
            source=str(result.path),
            checkpoint="" if result.checkpoint is None else result.checkpoint.name,
            actual=result.sha256,
        )
    return result.sha256


def checkpoint_status(member: KnownCheckpoint) -> tuple[Optional[Path], Optional[Verification]]:
    """Where a known checkpoint is (:func:`~featx.weights.find`) and how its file compares: the size
    first (a file of another size is a ``MISMATCH`` without being hashed), then the sha256 from the
    index (hashed once per file version). ``(None, None)`` when it is nowhere featx looks.
    """
    path = find(member)
    if path is None:
        return None, None
    try:
        size = path.stat().st_size
        if member.size is not None and size != member.size:
            return path, Verification.MISMATCH
        return path, compare(member, size=size, sha256=_file_sha256(path, use_index=True, known=member))
    except OSError:  # unreadable: not verified
        return path, Verification.MISMATCH
