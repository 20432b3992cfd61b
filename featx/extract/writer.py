"""The writer thread of an extraction run: feature files and manifest lines, in order, off the compute thread.

The compute thread lays each file out (:func:`featx.io.featfile.serialize_features`) and queues it
with its manifest record; one background thread writes the file atomically, appends the record to
this rank's manifest part, advances the progress bar and calls ``on_record``. The queue is
bounded, so memory stays flat however many images a run has.

A failed write never costs earlier work: an image whose new file cannot be written (any error: a
full disk, ``EFBIG``, ``EDQUOT``, ``EACCES``) keeps its previous file, and its error line says so
(``kept``). A manifest part that cannot be written, or a lock that was lost
(:meth:`featx.extract.lock.OutputLock.verify`, checked about once a second), stops the run with
one :class:`~featx.errors.OutputWriteError` or :class:`~featx.errors.ExtractionError`: the
previous ``manifest.jsonl`` is left as it was, and the feature files already written are valid.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import torch

from featx.errors import ExtractionError, FeatxError, OutputNotWritableError, OutputWriteError
from featx.extract.options import ManifestRecord
from featx.extract.plan import feature_path, read_existing, record_source
from featx.io.atomic import create_new, make_folders, write_atomic_buffer
from featx.io.discovery import ImageSource, decode_name, printable_name

__all__ = ["WATCH_SECONDS", "FeatureWriter", "own_output", "write_failure"]

WATCH_SECONDS = 1.0
"""How often (at most, and at least while idle) the writer calls its ``watch`` check."""

_Item = Optional[tuple[ManifestRecord, Optional[Path], Optional[tuple[torch.Tensor, int]]]]


def own_output(path: Path, source: ImageSource) -> bool:
    """Whether ``path`` holds a valid feature file made from ``source`` (its ``source_path`` metadata).

    Example:
        >>> own_output(Path("/nonexistent/a.png.safetensors"), ImageSource("/d/a.png", "a.png"))
        False
    """
    existing = read_existing(path)
    if existing is None or "source_path" not in existing[0]:
        return False
    metadata = existing[0]
    return decode_name(metadata["source_path"], metadata.get("source_path_b64")) == source.path


def write_failure(record: ManifestRecord, path: Path, error: BaseException) -> ManifestRecord:
    """The ``"error"`` record that replaces ``record`` when its feature file ``path`` cannot be written.

    The previous output at ``path`` is never removed: where it is a valid file made from this
    image, the record names it as ``kept`` and the message says so.

    Example:
        >>> write_failure({"path": "a.png", "source": "/d/a.png", "status": "ok", "output": "a.png.safetensors"},
        ...               Path("/o/a.png.safetensors"), OSError(28, "No space left on device"))["error"]
        'cannot write /o/a.png.safetensors: No space left on device'
    """
    names = {key: value for key, value in record.items() if key in ("path", "source", "path_b64", "source_b64")}
    reason = (error.strerror if isinstance(error, OSError) else None) or str(error) or type(error).__name__
    failed: ManifestRecord = {**names, "status": "error", "error": f"cannot write {printable_name(str(path))}: {reason}"}
    if "output" in record and own_output(path, record_source(record)):
        failed["error"] += "; its previous output is kept"
        failed["kept"] = record["output"]
    return failed


class FeatureWriter:
    """One background thread that writes feature files and this rank's manifest part.

    Args:
        part: the manifest part to write (``manifest.rank{r}.jsonl``): a new file replaces
            whatever has that name (a planted symlink is replaced, its target never opened).
        capacity: queued items at most (:meth:`put` blocks beyond).
        on_record: called with each final record, from the writer thread.
        bar: a tqdm bar advanced once per record, or ``None``.
        fsync: fsync each feature file before its rename.
        direct_io: allow ``O_DIRECT`` for large feature files.
        output: the output folder. An image that fails before its file is written (decoding)
            and whose previous output it made is marked ``removed``; the file itself is deleted by
            :func:`featx.extract.summary.finish_run` once the new manifest is published. ``None``
            marks nothing.
        watch: called about once a second on the writer thread (the lock's
            :meth:`~featx.extract.lock.OutputLock.verify`); a featx error or ``OSError`` it raises
            stops the run.

    Raises:
        featx.errors.OutputNotWritableError: the manifest part cannot be created.

    Attributes:
        errors: records with status ``"error"`` written so far (including failed writes).
        failure: the error that stopped the writer (raised again by :meth:`put` and :meth:`close`).
    """

    def __init__(
        self,
        part: Path,
        capacity: int,
        on_record: Optional[Callable[[ManifestRecord], None]],
        bar: Any,
        fsync: bool,
        direct_io: bool,
        output: Optional[Path] = None,
        watch: Optional[Callable[[], None]] = None,
    ) -> None:
        self.output, self.part, self.watch = output, part, watch
        self.queue: queue.Queue[_Item] = queue.Queue(maxsize=capacity)
        self.fsync, self.direct_io = fsync, direct_io
        try:
            self.fd = create_new(part)
        except OSError as error:
            raise OutputNotWritableError(
                f"output folder {part.parent} is not writable: cannot create {part} ({error.strerror or error})"
            ) from None
        self.on_record, self.bar = on_record, bar
        self.errors = 0
        self.made: set[str] = set()
        self.crash: Optional[BaseException] = None
        self.failure: Optional[Exception] = None
        self._watched = time.monotonic()
        self.thread = threading.Thread(target=self._run, name="featx-writer", daemon=True)
        self.thread.start()

    def put(
        self, record: ManifestRecord, path: Optional[Path] = None, data: Optional[tuple[torch.Tensor, int]] = None
    ) -> None:
        """Queue a manifest record and, for ``path``, the file bytes from :func:`serialize_features`.

        Raises:
            featx.errors.OutputWriteError: the manifest part could not be written (the run stops).
            featx.errors.ExtractionError: the output folder's lock was lost (the run stops), or
                the writer thread failed (its error is the cause).
        """
        self._raise()
        self.queue.put((record, path, data))

    def _run(self) -> None:
        try:
            while True:
                try:
                    item = self.queue.get(timeout=WATCH_SECONDS)
                except queue.Empty:
                    self._check(force=True)
                    continue
                if item is None:
                    break
                self._check(force=False)
                if self.failure is None:  # after a failure the rest is dropped: the run is stopping
                    self.write(*item)
        except BaseException as error:  # surfaced in the main thread by put()/close()
            self.crash = error
            while self.queue.get() is not None:  # keep the producer from blocking forever
                pass

    def _check(self, *, force: bool) -> None:
        now = time.monotonic()
        if self.watch is None or self.failure is not None or (not force and now - self._watched < WATCH_SECONDS):
            return
        self._watched = now
        try:
            self.watch()
        except (FeatxError, OSError) as error:
            self.failure = error

    def write(self, record: ManifestRecord, path: Optional[Path], data: Optional[tuple[torch.Tensor, int]]) -> None:
        """Write one queued item (called on the writer thread).

        The file first (any error turns the record into an ``"error"`` record naming the file,
        :func:`write_failure`), then the manifest line, the progress bar and ``on_record``.
        """
        if path is not None and data is not None:
            try:
                self._make_folder(path.parent)
                write_atomic_buffer(path, *data, fsync=self.fsync, direct=self.direct_io)
            except Exception as error:  # whatever fails, this image fails: the run and the old file go on
                record = write_failure(record, path, error)
        elif record["status"] == "error" and self.output is not None and "kept" not in record:
            source = record_source(record)
            if own_output(feature_path(self.output, source.key), source):
                record = {**record, "removed": printable_name(feature_path(".", source.key).as_posix())}
        line = memoryview((json.dumps(record, sort_keys=True) + "\n").encode("utf-8"))
        try:
            while line:
                line = line[os.write(self.fd, line) :]
        except OSError as error:
            self.failure = OutputWriteError(
                f"cannot write {self.part} ({error.strerror or error}): the run stopped. The previous "
                f"{self.part.parent / 'manifest.jsonl'} is kept, and the feature files written are valid: "
                "free space and rerun to finish (finished files are skipped)",
                path=str(self.part),
            )
            return
        if record["status"] == "error":
            self.errors += 1
        if self.bar is not None:
            self.bar.update(1)
            if self.errors:
                self.bar.set_postfix(errors=self.errors, refresh=False)
        if self.on_record is not None:
            self.on_record(record)

    def _make_folder(self, folder: Path) -> None:
        """Create ``folder`` (inside the output folder); a symlink on the way is refused, never followed
        (:func:`featx.io.atomic.make_folders`: nothing is created through it)."""
        key = str(folder)
        if key in self.made:
            return
        if self.output is not None:
            make_folders(self.output, folder)
        else:
            os.makedirs(folder, exist_ok=True)
        self.made.add(key)

    def close(self) -> None:
        """Write everything queued, stop the thread and close the manifest part.

        Raises:
            featx.errors.OutputWriteError: the manifest part could not be written.
            featx.errors.ExtractionError: the output folder's lock was lost, or the writer thread
                failed (its error is the cause).
        """
        self.queue.put(None)
        self.thread.join()
        try:
            os.close(self.fd)
        except OSError as error:  # a network filesystem may report a failed write only here
            if self.failure is None:
                self.failure = OutputWriteError(f"cannot write {self.part} ({error.strerror or error})", path=str(self.part))
        self._raise()

    def _raise(self) -> None:
        if self.crash is not None:
            raise ExtractionError(f"the feature writer thread failed ({type(self.crash).__name__}: {self.crash})") from self.crash
        if self.failure is not None:
            raise self.failure
