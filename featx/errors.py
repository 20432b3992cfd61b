"""Every exception and warning featx raises, under one base class each.

Catch :class:`FeatxError` for any featx failure, or the builtin base each error also derives
from (``ValueError``, ``FileNotFoundError``, ``OSError``), as code written before this module did.
Nothing here imports torch.

Example:
    >>> issubclass(WeightsNotFoundError, FeatxError), issubclass(WeightsNotFoundError, FileNotFoundError)
    (True, True)
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

__all__ = [
    "FeatxError",
    "FeatxTypeError",
    "FeatxValueError",
    "FeatxWarning",
    "HashMismatchError",
    "DownloadError",
    "ExtractionError",
    "ImageDecodeError",
    "InputNotFoundError",
    "InputRangeWarning",
    "IntegrationImportError",
    "OutputInUseError",
    "OutputOwnedError",
    "OutputWriteError",
    "OutputNotWritableError",
    "RandomWeightsWarning",
    "UnverifiableWeightsError",
    "UnverifiedWeightsWarning",
    "WeightsLoadError",
    "WeightsNotFoundError",
]


class FeatxError(Exception):
    """Base class of every exception featx raises on purpose."""


class FeatxWarning(UserWarning):
    """Base class of every warning featx emits."""


class FeatxValueError(FeatxError, ValueError):
    """An argument or an input has the right type but a wrong value (an unknown name, a bad shape,
    NaN features, ...); the message says what was expected and what was received."""


class FeatxTypeError(FeatxError, TypeError):
    """An argument or an input has the wrong type; the message names the expected type."""


class RandomWeightsWarning(FeatxWarning):
    """An extractor was built with ``weights=None``: its features come from random weights."""


class UnverifiedWeightsWarning(FeatxWarning):
    """A file at a known checkpoint's name does not have that checkpoint's sha256.

    It is loaded (the keys and shapes fit), but recorded under its real hash with
    ``verified=False``, never under the official weights id.
    """


class InputRangeWarning(FeatxWarning):
    """Inputs look like another value range than the module's ``input_range``."""


@dataclass(frozen=True)
class MissingWeights:
    """One weights file a run needs and could not find: what :attr:`WeightsNotFoundError.missing`
    holds, so that the Python API and the command line can each word the fixes their own way.

    Attributes:
        argument: the Python keyword that takes a path instead (``"weights"``, ``"lin_weights"``,
            ``"dists_weights"``).
        file_name: the known checkpoint's file name, or the path that was given.
        name: the known checkpoint's name (``"VGG19_IMAGENET1K_V1"``); ``None`` for a given path.
        sha256: its sha256 as far as it is known (64 or 8 hex digits).
        size: its size in bytes, ``None`` where unknown.
        url: where ``featx weights download NAME`` fetches it.
        searched: the directories searched.
        requirement: a Python package that ships an identical copy featx would find (``"lpips"``).
    """

    argument: str
    file_name: str
    name: Optional[str] = None
    sha256: str = ""
    size: Optional[int] = None
    url: str = ""
    searched: tuple[Path, ...] = ()
    requirement: Optional[str] = None


class WeightsNotFoundError(FeatxError, FileNotFoundError):
    """One or more weights files are not on disk. Construction never downloads; the message gives
    the fixes, and lists every missing file of the run at once.

    Attributes:
        path: the file that was looked for (a name for known checkpoints, else the path); the
            first one when several are missing.
        searched: directories searched (empty for an explicit path).
        missing: every missing file (:class:`MissingWeights`), for messages in other words
            (``featx.weights.missing_message``).
    """

    def __init__(
        self,
        message: str,
        *,
        path: Optional[str] = None,
        searched: Iterable[Path] = (),
        missing: Iterable[MissingWeights] = (),
    ) -> None:
        super().__init__(message)
        self.path = path
        self.searched = tuple(searched)
        self.missing = tuple(missing)


class WeightsLoadError(FeatxError, ValueError):
    """A checkpoint cannot be used: unreadable, unsafe, or its keys/shapes/values do not fit the model.

    Attributes:
        path: the checkpoint path (``None`` for in-memory state dicts).
        missing: expected keys that are absent (sorted).
        unexpected: keys that belong to no kept layer (sorted).
        mismatched: ``"key: expected (a, b), got (c, d)"`` entries (sorted).
    """

    def __init__(
        self,
        message: str,
        *,
        path: Optional[str] = None,
        missing: Iterable[str] = (),
        unexpected: Iterable[str] = (),
        mismatched: Iterable[str] = (),
    ) -> None:
        super().__init__(message)
        self.path = path
        self.missing = tuple(missing)
        self.unexpected = tuple(unexpected)
        self.mismatched = tuple(mismatched)


class HashMismatchError(FeatxError, ValueError):
    """A file is not the expected one: its sha256 differs from the expected sha256 (or does not
    start with an expected prefix), or its byte size differs from the known size.

    Attributes:
        source: the file or URL.
        expected: the expected sha256 (64 hex digits, or a prefix).
        actual: the full sha256 of the data.
    """

    def __init__(self, message: str, *, source: str, expected: str, actual: str) -> None:
        super().__init__(message)
        self.source, self.expected, self.actual = source, expected, actual


class UnverifiableWeightsError(FeatxError, ValueError):
    """A file cannot be verified and verification was required: no full sha256 is known to compare
    it with. Raised for a checkpoint whose file matches only the 8 hex digits of torchvision's file
    name (no public source gives its full sha256) under ``verify="error"`` or
    ``FEATX_REQUIRE_VERIFIED=1``, and by ``featx.weights.verify`` for a file of no known checkpoint.

    Attributes:
        source: the file.
        checkpoint: the known checkpoint it matches by prefix (``""`` when none).
        actual: the file's full sha256.
    """

    def __init__(self, message: str, *, source: str, checkpoint: str, actual: str) -> None:
        super().__init__(message)
        self.source, self.checkpoint, self.actual = source, checkpoint, actual


class ImageDecodeError(FeatxError, ValueError):
    """An image file cannot be turned into an RGB tensor; ``str(error)`` is ``"PATH: reason"``.

    Attributes:
        path: the file.
        reason: one line saying what is wrong (and the option that would accept it, if any).
    """

    def __init__(self, path: Union[str, os.PathLike[str]], reason: str) -> None:
        super().__init__(f"{os.fspath(path)}: {reason}")
        self.path = os.fspath(path)
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across DataLoader workers
        return (type(self), (self.path, self.reason))


class DownloadError(FeatxError, OSError):
    """``featx weights download`` could not fetch a file (offline, refused, interrupted); nothing
    partial is left behind."""


class InputNotFoundError(FeatxError, FileNotFoundError):
    """An input that was named (an image, a folder, a file list, a feature file) does not exist."""


class ExtractionError(FeatxError, RuntimeError):
    """A feature extraction run cannot finish: its writer thread failed, or the ranks of a
    distributed run disagree about the work (the message says which); finished files stay valid."""


class OutputNotWritableError(FeatxError, OSError):
    """The output folder cannot be created or written (checked before any work)."""


class OutputInUseError(FeatxError, OSError):
    """Another ``featx extract`` run holds the output folder's lock (one run per folder at a time).

    Attributes:
        holder: what the holder recorded (``pid``, ``host``, ``started``, ``job``), or ``None``.
    """

    def __init__(self, message: str, *, holder: Optional[dict[str, Any]] = None) -> None:
        super().__init__(message)
        self.holder = holder


class OutputOwnedError(FeatxError, ValueError):
    """The output folder holds features of other inputs (``OUTPUT/featx-owner.json``), and this run
    did not ask to add its inputs; nothing was written. The message says what to do.

    Attributes:
        recorded: the input roots the folder's files were made from.
        root: this run's input root.
    """

    def __init__(self, message: str, *, recorded: tuple[str, ...] = (), root: str = "") -> None:
        super().__init__(message)
        self.recorded, self.root = recorded, root


class OutputWriteError(FeatxError, OSError):
    """A run's manifest or summary cannot be written (a full disk, a lost mount); the previous file
    is kept and the feature files already written stay valid.

    Attributes:
        path: the file that could not be written.
    """

    def __init__(self, message: str, *, path: str = "") -> None:
        super().__init__(message)
        self.path = path


class IntegrationImportError(FeatxError, ImportError):
    """A framework that a ``featx.integrations`` module plugs into cannot be imported (it is not
    installed, or it fails on import); nothing was registered. The message gives the reason and the fix."""
