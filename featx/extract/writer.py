"""The writer thread of an extraction run: feature files and manifest lines, in order, off the compute thread.

The compute thread lays each file out (:func:`featx.io.featfile.serialize_features`) and queues it
with its manifest record; one background thread writes the file atomically, appends the record to
this rank's manifest part, advances the progress bar and calls ``on_record``. The queue is
bounded, so memory stays flat however many images a run has.
"""

from __future__ import annotations

import json
import os
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import torch

from featx.errors import ExtractionError
from featx.extract.options import ManifestRecord
from featx.extract.plan import record_source, remove_failed_output
from featx.io.atomic import write_atomic_buffer
from featx.io.discovery import printable_name

__all__ = ["FeatureWriter", "write_failure"]

_Item = Optional[tuple[ManifestRecord, Optional[Path], Optional[tuple[torch.Tensor, int]]]]


def write_failure(record: ManifestRecord, path: Path, error: OSError) -> ManifestRecord:
    """The ``"error"`` record that replaces ``record`` when its feature file ``path`` cannot be written.

    Example:
        >>> write_failure({"path": "a.png", "source": "/d/a.png", "status": "ok"}, Path("/o/a.png.safetensors"),
        ...               OSError(28, "No space left on device"))["error"]
        'cannot write /o/a.png.safetensors: No space left on device'
    """
    names = {key: value for key, value in record.items() if key in ("path", "source", "path_b64", "source_b64")}
    return {**names, "status": "error", "error": f"cannot write {printable_name(str(path))}: {error.strerror or error}"}


class FeatureWriter:
    """One background thread that writes feature files and this rank's manifest part.

    Args:
        part: the manifest part to write (``manifest.rank{r}.jsonl``), truncated.
        capacity: queued items at most (:meth:`put` blocks beyond).
        on_record: called with each final record, from the writer thread.
        bar: a tqdm bar advanced once per record, or ``None``.
        fsync: fsync each feature file before its rename.
        direct_io: allow ``O_DIRECT`` for large feature files.
        output: the output folder: the previous output of an image that fails now is removed
            (``removed`` in its record; see :func:`featx.extract.plan.remove_failed_output`);
            ``None`` removes nothing.

    Attributes:
        errors: records with status ``"error"`` written so far (including failed writes).
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
    ) -> None:
        self.output = output
        self.queue: queue.Queue[_Item] = queue.Queue(maxsize=capacity)
        self.fsync, self.direct_io = fsync, direct_io
        self.handle = open(part, "w", encoding="utf-8")
        self.on_record, self.bar = on_record, bar
        self.errors = 0
        self.made: set[str] = set()
        self.crash: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._run, name="featx-writer", daemon=True)
        self.thread.start()

    def put(
        self, record: ManifestRecord, path: Optional[Path] = None, data: Optional[tuple[torch.Tensor, int]] = None
    ) -> None:
        """Queue a manifest record and, for ``path``, the file bytes from :func:`serialize_features`.

        Raises:
            RuntimeError: the writer thread failed earlier (its error is the cause).
        """
        if self.crash is not None:
            raise ExtractionError("the feature writer thread failed") from self.crash
        self.queue.put((record, path, data))

    def _run(self) -> None:
        try:
            while True:
                item = self.queue.get()
                if item is None:
                    break
                self.write(*item)
        except BaseException as error:  # surfaced in the main thread by put()/close()
            self.crash = error
            while self.queue.get() is not None:  # keep the producer from blocking forever
                pass

    def write(self, record: ManifestRecord, path: Optional[Path], data: Optional[tuple[torch.Tensor, int]]) -> None:
        """Write one queued item (called on the writer thread).

        The file first (an ``OSError`` turns the record into an ``"error"`` record naming the file),
        then the manifest line (flushed), the progress bar and ``on_record``.
        """
        if path is not None and data is not None:
            try:
                folder = str(path.parent)
                if folder not in self.made:
                    os.makedirs(folder, exist_ok=True)
                    self.made.add(folder)
                write_atomic_buffer(path, *data, fsync=self.fsync, direct=self.direct_io)
            except OSError as error:
                record = write_failure(record, path, error)
        if record["status"] == "error" and self.output is not None:
            removed = remove_failed_output(self.output, record_source(record))
            if removed is not None:
                record = {**record, "removed": removed}
        self.handle.write(json.dumps(record, sort_keys=True) + "\n")
        self.handle.flush()
        if record["status"] == "error":
            self.errors += 1
        if self.bar is not None:
            self.bar.update(1)
            if self.errors:
                self.bar.set_postfix(errors=self.errors, refresh=False)
        if self.on_record is not None:
            self.on_record(record)

    def close(self) -> None:
        """Write everything queued, stop the thread and close the manifest part.

        Raises:
            RuntimeError: the writer thread failed (its error is the cause).
        """
        self.queue.put(None)
        self.thread.join()
        self.handle.close()
        if self.crash is not None:
            raise ExtractionError("the feature writer thread failed") from self.crash
