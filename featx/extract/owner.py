"""The ownership record of an output folder: ``OUTPUT/featx-owner.json`` says which inputs (key roots)
its files were made from and the configuration of the last run, so a run with other inputs never
silently replaces them.

Keys are paths relative to the root of a run's inputs (:func:`featx.io.discovery.discover`), so two runs
with different roots can give the same key to different images (``train/0001.png`` and
``val/0001.png`` both become ``0001.png``). The record maps a key *prefix* to each root it accepted:
the first root gets the empty prefix; a run whose root is not recorded is refused
(:class:`~featx.errors.OutputOwnedError`) unless it asks to add its inputs (``add_inputs``), which
records the root under a prefix of its own (its folder name, made unique), so its keys are
distinct. A later run with a recorded root uses that root's prefix again.

Nothing here imports torch. The record is read and written by one process (rank 0, holding the
output folder's lock), never through a symlink (:func:`featx.io.atomic.read_no_follow`,
:func:`featx.io.atomic.write_atomic`); a record that would not change is not rewritten.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

from featx.errors import OutputNotWritableError, OutputOwnedError
from featx.io.atomic import read_no_follow, write_atomic
from featx.io.discovery import decode_name

__all__ = ["OWNER", "OWNER_FORMAT", "claim_output", "read_owner"]

OWNER = "featx-owner.json"
"""Name of the ownership record in the output folder."""

OWNER_FORMAT = "featx-owner/1"
"""Value of the record's ``format`` entry."""


def read_owner(output: os.PathLike[str] | str) -> Optional[dict[str, Any]]:
    """The folder's ownership record (``format``, ``roots``: prefix -> root, ``config``), or ``None``.

    Raises:
        OutputOwnedError: the record exists but cannot be read as one (corrupt, a symlink, not a
            regular file): it is never taken for "no record".
    """
    path = Path(output, OWNER)
    try:
        text = read_no_follow(path)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise OutputOwnedError(
            f"cannot read the ownership record {path} ({error.strerror or error}); move it away or write to "
            "another output folder"
        ) from None
    try:
        record = json.loads(text.decode("utf-8"))
    except ValueError:
        record = None
    roots = record.get("roots") if isinstance(record, dict) else None
    if not isinstance(roots, dict) or not all(isinstance(v, str) for v in roots.values()):
        raise OutputOwnedError(
            f"{path} is not a featx ownership record; move it away or write to another output folder"
        )
    return dict(record)


def _same_folder(recorded: str, root: str) -> bool:
    """Whether a recorded root and ``root`` name one folder (one may be reached through a symlink)."""
    return recorded == root or os.path.realpath(recorded) == os.path.realpath(root)


def _new_prefix(output: Path, root: str, taken: set[str]) -> str:
    base = os.path.basename(root.rstrip(os.sep)) or "root"
    prefix, n = base, 1
    while prefix in taken or os.path.lexists(output / prefix) or os.path.lexists(output / f"{prefix}.safetensors"):
        n += 1
        prefix = f"{base}-{n}"
    return prefix


def claim_output(
    output: os.PathLike[str] | str,
    root: str,
    config: dict[str, str],
    *,
    add_inputs: bool = False,
    write: bool = True,
) -> str:
    """Check that ``output`` may take the images keyed relative to ``root``; return their key prefix.

    A folder without a record is claimed for ``root`` (prefix ``""``). A recorded root gets its
    prefix back. Another root is refused unless ``add_inputs``, which records it under a new prefix
    (its folder name; ``-2``, ``-3``... if taken or if ``output`` already has an entry of that name).
    With ``write`` the record is (re)written with ``config`` as the last run's configuration
    (atomically, and only if it changes).

    Raises:
        OutputOwnedError: ``root`` is not recorded and ``add_inputs`` is false (the message says
            what to do), or the record is unreadable.
        featx.errors.OutputNotWritableError: the record cannot be written (a full disk, a file
            size limit, permissions); the previous record is kept.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     first = claim_output(d, "/data/train", {})
        ...     again = claim_output(d, "/data/train", {})
        ...     added = claim_output(d, "/data/val", {}, add_inputs=True)
        ...     sorted(read_owner(d)["roots"].items())
        ...     first, again, added
        [('', '/data/train'), ('val', '/data/val')]
        ('', '', 'val')
    """
    output = Path(output)
    record = read_owner(output)
    roots: dict[str, str] = {} if record is None else dict(record["roots"])
    prefix = next((key for key, value in roots.items() if _same_folder(value, root)), None)
    if prefix is None and roots and not add_inputs:
        recorded = ", ".join(sorted(roots.values()))
        proposal = _new_prefix(output, root, set(roots))
        raise OutputOwnedError(
            f"output folder {output} holds features of the images under {recorded} (see {output / OWNER}); "
            f"this run's images are under {root}, and their keys (paths relative to it) could name the same "
            f"files. Write to a new output folder, or pass --add-inputs (add_inputs=True) to add these images "
            f"under keys starting with '{proposal}/'",
            recorded=tuple(sorted(roots.values())),
            root=root,
        )
    if prefix is None:
        prefix = "" if not roots else _new_prefix(output, root, set(roots))
        roots[prefix] = root
    if write:
        payload = {"format": OWNER_FORMAT, "roots": dict(sorted(roots.items())), "config": dict(sorted(config.items()))}
        data = (json.dumps(payload, indent=2) + "\n").encode("utf-8")
        if record is None or json.dumps(record, sort_keys=True) != json.dumps(payload, sort_keys=True):
            try:
                write_atomic(output / OWNER, [data])
            except OSError as error:
                kept = "the previous record is kept" if record is not None else "nothing was written"
                raise OutputNotWritableError(
                    f"output folder {output} is not writable: cannot write {output / OWNER} "
                    f"({error.strerror or error}); {kept}. Free space (or fix the permissions) and rerun"
                ) from None
    return prefix


def earlier_records(
    output: os.PathLike[str] | str,
    manifest: str,
    this_run: set[tuple[str, Optional[str]]],
    prefix: str,
    pending: frozenset[tuple[str, Optional[str]]] = frozenset(),
) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """Sort the previous manifest's lines for keys this run did not process.

    Args:
        output: the output folder.
        manifest: the manifest's file name in it (read before it is replaced).
        this_run: the keys of this run's images, as ``(path, path_b64)`` of their manifest lines.
        prefix: this run's key prefix (:func:`claim_output`).
        pending: keys of this run's images it did not reach (an interrupted run): their previous
            lines are kept while their output is still there.

    Returns:
        ``(kept, stale)``: the lines of images under the folder's *other* input roots and of
        ``pending`` images (kept in the new manifest, so it still lists every image of the folder),
        and ``(key, reason)`` of each output of *this* root whose image is gone or was not among
        this run's inputs (left on disk and listed in ``summary.json`` as ``stale``).
    """
    output = Path(output)
    try:
        text = read_no_follow(output / manifest).decode("utf-8")
        previous = [json.loads(line) for line in text.splitlines() if line.strip()]
    except (OSError, ValueError):
        return [], []
    record = read_owner(output)
    prefixes = [p for p in (record or {}).get("roots", {}) if p]

    def here(key: str) -> bool:
        if prefix:
            return key.startswith(f"{prefix}/")
        return not any(key.startswith(f"{p}/") for p in prefixes)

    kept, stale = [], []
    for line in previous:
        key = line.get("path")
        if not isinstance(key, str) or (key, line.get("path_b64")) in this_run:
            continue
        real_key = decode_name(key, line.get("path_b64"))
        if (key, line.get("path_b64")) in pending:
            if line.get("status") not in ("ok", "skipped") or os.path.isfile(output / str(line.get("output"))):
                kept.append(line)
        elif not here(real_key):
            kept.append(line)
        elif line.get("status") in ("ok", "skipped") and os.path.isfile(output / str(line.get("output"))):
            source = decode_name(str(line.get("source", "")), line.get("source_b64"))
            gone = not os.path.lexists(source) if source else True
            stale.append((key, "image not found" if gone else "not among this run's inputs"))
    return kept, stale
