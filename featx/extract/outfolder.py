"""The output folder's setup for one extraction run: created, proven writable, locked and claimed before
any image is processed, and left as it was found when the setup is refused.

A run writes to its output folder only once its setup has succeeded: the ownership record
(``featx-owner.json``) is written by :meth:`OutputSetup.commit`, after planning and the memory
budget. Until then, a refusal (too small a ``max_memory``, an owner conflict, Ctrl-C) removes what
the setup made: the folders it created and the lock file it created. The writability probe is a
new temporary file (:func:`featx.io.atomic.create_temp`: never through a symlink), removed however
its write ends (a full disk included).

Under torchrun, rank 0 takes the lock and reads and writes the record; every rank gets its answer,
or fails with the same error.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from featx.errors import OutputInUseError, OutputLockError, OutputNotWritableError, OutputOwnedError
from featx.extract.distributed import DistContext
from featx.extract.lock import OutputLock
from featx.extract.owner import claim_output
from featx.io.atomic import create_temp

__all__ = ["OutputSetup", "probe_writable"]

_SHARED_ERRORS = (OutputInUseError, OutputLockError, OutputNotWritableError, OutputOwnedError)


def probe_writable(output: Path) -> None:
    """Prove ``output`` (an existing folder) writable by writing and removing a new temporary file.

    Raises:
        OutputNotWritableError: the file cannot be created or written (permissions, a read-only or
            full filesystem, a file size limit); nothing is left behind.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     probe_writable(Path(d))
        ...     os.listdir(d)
        []
    """
    try:
        fd, temp = create_temp(output, "featx-probe")
        try:
            try:
                os.write(fd, b"probe")
            finally:
                os.close(fd)
        finally:
            os.unlink(temp)
    except OSError as error:
        raise OutputNotWritableError(
            f"output folder {output} is not writable ({error.strerror or error}); choose another folder "
            "with write access (or free space)"
        ) from None


class OutputSetup:
    """The setup of one run's output folder, undone if the run is refused before :meth:`commit`.

    Args:
        output: the output folder (absolute).
        lock: its :class:`~featx.extract.lock.OutputLock`.
        dist: the run's ranks.
    """

    def __init__(self, output: Path, lock: OutputLock, dist: DistContext) -> None:
        self.output, self.lock, self.dist = output, lock, dist
        self.created: list[Path] = []  # folders this setup made, deepest first
        self.committed = False

    def prepare(self) -> None:
        """Create the folder, prove it writable, and (rank 0) take its lock.

        Raises:
            OutputNotWritableError: the folder cannot be created or written.
            featx.errors.OutputInUseError: another run holds the folder.
            featx.errors.OutputLockError: the folder cannot be locked (its filesystem, or a
                ``featx.lock`` that is a symlink).
        """
        missing, folder = [], self.output
        while not os.path.lexists(folder) and folder != folder.parent:
            missing.append(folder)
            folder = folder.parent
        try:
            self.output.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OutputNotWritableError(
                f"output folder {self.output} is not writable ({error.strerror or error}); it cannot be created. "
                "Choose another folder with write access"
            ) from None
        self.created = missing
        probe_writable(self.output)
        self._on_rank0(self.lock.acquire)

    def claim(self, root: str, config: dict[str, str], *, add_inputs: bool) -> str:
        """Check the ownership record (writing nothing); return this run's key prefix.

        Raises:
            OutputOwnedError: the folder was made from other inputs and ``add_inputs`` is false.
        """
        if not self.output.is_dir():
            return ""
        return str(self._on_rank0(lambda: claim_output(self.output, root, config, add_inputs=add_inputs, write=False)))

    def commit(self, root: str, config: dict[str, str], *, add_inputs: bool) -> None:
        """Write the ownership record (if it changes); from here on the setup is not undone.

        Raises:
            OutputNotWritableError: the record cannot be written (the previous one is kept).
        """
        self._on_rank0(lambda: claim_output(self.output, root, config, add_inputs=add_inputs, write=True))
        self.committed = True

    def undo(self) -> None:
        """After a refusal before :meth:`commit`: remove the lock file and the folders this setup
        created (folders only if empty). Never raises."""
        if self.committed:
            return
        self.lock.release(remove=self.lock.created)
        for folder in self.created:
            try:
                folder.rmdir()
            except OSError:
                break

    def _on_rank0(self, action: Callable[[], Any]) -> Any:
        """Run ``action`` on rank 0; every rank returns its result or raises its error alike."""
        answer: tuple[Any, Any] = (None, None)
        if self.dist.rank == 0:
            try:
                answer = (action(), None)
            except _SHARED_ERRORS as error:
                extra = getattr(error, "holder", None) if isinstance(error, OutputInUseError) else None
                if isinstance(error, OutputOwnedError):
                    extra = (error.recorded, error.root)
                answer = (None, (type(error).__name__, str(error), extra))
        answer = self.dist.broadcast(answer)
        if answer[1] is None:
            return answer[0]
        kind, message, extra = answer[1]
        if kind == "OutputInUseError":
            raise OutputInUseError(message, holder=extra)
        if kind == "OutputOwnedError":
            raise OutputOwnedError(message, recorded=extra[0], root=extra[1])
        raise {cls.__name__: cls for cls in _SHARED_ERRORS}[kind](message)
