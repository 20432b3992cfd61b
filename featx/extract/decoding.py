"""Decoding for an extraction run: the DataLoader dataset that turns an image into a tensor or an
error record, the collate function that stacks equal sizes, and the isolated retry used when a
decoder process dies.

A decoder worker can die outright (a segfault in an image library, the out-of-memory killer); the
DataLoader then fails as a whole. :func:`decode_isolated` decodes one image in a one-shot child
process, so the run can retry the batches that were in flight, image by image, and name the image
that kills its decoder instead of aborting.

Decoded images travel from the workers to the main process in shared memory (``/dev/shm`` on
Linux), which containers often keep small (Docker: 64 MB). :func:`workers_for_shared_memory`
checks the room before the workers start and decodes in the main process when it is too small;
a worker that still cannot share a batch (the room taken meanwhile, a file size limit) passes it
through its pipe instead (:func:`collate_decoded`, :class:`Receiver`), and a loader that delivers
nothing for :data:`LOADER_TIMEOUT` seconds ends the run with one line naming ``/dev/shm``
(:func:`loader_timeout_error`): never a hang.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import warnings
from collections.abc import Sequence
from typing import Any, Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from featx.errors import ExtractionError, FeatxWarning, ImageDecodeError
from featx.io.images import load_image

__all__ = [
    "Decoded",
    "DecodeDataset",
    "Planned",
    "changed_since_planning",
    "collate_decoded",
    "decode_isolated",
    "is_worker_death",
    "LOADER_TIMEOUT",
    "PREFETCH_BATCHES",
    "Receiver",
    "SHARED_MEMORY",
    "loader_timeout_error",
    "shared_memory_room",
    "to_input",
    "workers_for_shared_memory",
]

SHARED_MEMORY = "/dev/shm"
"""Where torch's worker processes put the tensors they pass (``shm_open``), on Linux."""

PREFETCH_BATCHES = 2
"""Batches each decoding worker may hold ready (the DataLoader's ``prefetch_factor``)."""

LOADER_TIMEOUT = 900.0
"""Seconds the run waits for the decoding workers' next batch before it gives up with one line
naming ``/dev/shm`` (a last resort: a batch that cannot be shared is passed through a pipe)."""

_FIX = "give the container more shared memory (docker run --shm-size=2g) or decode in the main process (--workers 0)"

Decoded = tuple[int, Optional[torch.Tensor], Optional[str]]
"""``(index, image or None, error reason or None)``."""


Planned = Optional[tuple[tuple[int, int], tuple[int, int]]]
"""What the plan read of an image: ``((bytes, mtime_ns), (H, W) as stored)``, or ``None`` (not checked)."""


class DecodeDataset(Dataset[Decoded]):
    """Decodes one image; returns an error record instead of raising (workers must not die).

    With ``planned``, an image whose file changed after planning (its bytes or mtime differ, or
    it decodes to a size the plan did not price, either way round for EXIF orientation) is that
    image's error: the memory plan and the file's metadata were made for the old file.
    """

    def __init__(
        self, paths: Sequence[str], alpha: str, max_pixels: Optional[int], planned: Optional[Sequence[Planned]] = None
    ) -> None:
        self.paths, self.alpha, self.max_pixels = list(paths), alpha, max_pixels
        self.planned = None if planned is None else list(planned)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Decoded:
        planned = None if self.planned is None else self.planned[index]
        try:
            if planned is not None:  # a replaced file is refused before it is decoded outside the plan
                info = os.stat(self.paths[index])
                changed = changed_since_planning(planned, stat=(info.st_size, info.st_mtime_ns))
                if changed is not None:
                    return index, None, changed
            image = load_image(self.paths[index], alpha=self.alpha, max_pixels=self.max_pixels)
        except ImageDecodeError as error:
            return index, None, error.reason
        except Exception as error:  # anything else is still this file's problem, not the run's
            return index, None, f"cannot decode ({type(error).__name__}: {error})"
        if planned is not None:  # replaced between the check and the decoding
            changed = changed_since_planning(planned, size=(image.shape[1], image.shape[2]))
            if changed is not None:
                return index, None, changed
        return index, image, None


def changed_since_planning(
    planned: tuple[tuple[int, int], tuple[int, int]],
    *,
    stat: Optional[tuple[int, int]] = None,
    size: Optional[tuple[int, int]] = None,
) -> Optional[str]:
    """Why an image cannot be extracted under its plan, or ``None`` while it still matches: its
    file's ``stat`` (``(bytes, mtime_ns)``) is not the planned one, or it decoded to a ``size``
    the plan did not price (the stored size, or its transpose for an EXIF rotation).

    Example:
        >>> planned = ((10, 5), (128, 128))
        >>> changed_since_planning(planned, stat=(10, 5)) is None, changed_since_planning(planned, size=(128, 128)) is None
        (True, True)
        >>> changed_since_planning(planned, stat=(99, 7))
        'changed after planning (planned as 128x128, 10 bytes; now 99 bytes): not extracted; rerun to extract it'
        >>> changed_since_planning(planned, size=(1356, 2040))
        'changed after planning (planned as 128x128, 10 bytes; now 1356x2040): not extracted; rerun to extract it'
    """
    planned_stat, (height, width) = planned
    if stat is not None and stat != planned_stat:
        now = f"{stat[0]} bytes"
    elif size is not None and size not in ((height, width), (width, height)):
        now = f"{size[0]}x{size[1]}"
    else:
        return None
    was = f"{height}x{width}, {planned_stat[0]} bytes"
    return f"changed after planning (planned as {was}; now {now}): not extracted; rerun to extract it"


def collate_decoded(records: list[Decoded]) -> dict[str, Any]:
    """Stack decoded images by shape (in order); pass errors through.

    In a DataLoader worker each stack is built in shared memory, where the main process maps it;
    when that memory cannot be had (a full ``/dev/shm``, a file size limit), the stack goes as a
    NumPy array through the worker's pipe instead and ``"unshared"`` says why (see
    :class:`Receiver`). Sharing never fails later in the queue's feeder thread, where the main
    process would wait for the batch forever.
    """
    groups: dict[tuple[int, ...], list[tuple[int, torch.Tensor]]] = {}
    errors = []
    for index, image, error in records:
        if image is None:
            errors.append((index, error))
        else:
            groups.setdefault(tuple(image.shape), []).append((index, image))
    stacks: list[tuple[list[int], Any]] = []
    unshared = None
    in_worker = torch.utils.data.get_worker_info() is not None
    for group in groups.values():
        images = [img for _, img in group]
        if in_worker:  # 8-bit pictures travel as their uint8 values: 4x less shared memory
            small = [_exact_uint8(img) for img in images]
            if all(img is not None for img in small):
                images = small  # type: ignore[assignment]
        stack: Any = images[0].unsqueeze(0) if len(images) == 1 else torch.stack(images)
        if in_worker:
            try:
                stack.share_memory_()
            except RuntimeError as problem:  # e.g. "unable to allocate shared memory(shm) ...: No space left on device"
                unshared = str(problem).strip().splitlines()[0] if str(problem).strip() else type(problem).__name__
                stack = stack.numpy()
        stacks.append(([i for i, _ in group], stack))
    return {"stacks": stacks, "errors": errors, "unshared": unshared}


def _exact_uint8(image: torch.Tensor) -> Optional[torch.Tensor]:
    """``image`` (float32 ``v / 255`` values) as its uint8 ``v``, or ``None`` when it holds other
    values (a 16-bit picture): :func:`to_input` turns it back into the same float32 bits."""
    values = image.mul(255).round_().to(torch.uint8)
    return values if torch.equal(values.float().div_(255), image) else None


def to_input(images: torch.Tensor, device: torch.device, layout: torch.memory_format) -> torch.Tensor:
    """A decoded batch as the extractor's float32 input on ``device`` in ``layout``: uint8 values
    are divided by 255 in float32 there, as :func:`featx.io.images.load_image` divides them (the
    same bits); float32 batches are moved as they are.

    Example:
        >>> x = torch.tensor([[[[0, 51, 255]]]], dtype=torch.uint8)
        >>> to_input(x, torch.device("cpu"), torch.contiguous_format).tolist()
        [[[[0.0, 0.20000000298023224, 1.0]]]]
    """
    if images.dtype != torch.uint8:
        return images.to(device, non_blocking=True).contiguous(memory_format=layout)
    converted = torch.empty(images.shape, dtype=torch.float32, device=device, memory_format=layout)
    return converted.copy_(images.to(device, non_blocking=True)).div_(255)


class Receiver:
    """Turns what the loader delivers back into tensors, warning once (a ``FeatxWarning``) when a
    worker had to pass its images through its pipe because shared memory was short.

    Example:
        >>> receive = Receiver()
        >>> batch = receive({"stacks": [([0], np.zeros((1, 3, 2, 2), np.float32))], "errors": [], "unshared": None})
        >>> type(batch["stacks"][0][1]).__name__
        'Tensor'
    """

    def __init__(self) -> None:
        self.warned = False

    def __call__(self, decoded: dict[str, Any]) -> dict[str, Any]:
        unshared = decoded.get("unshared")
        if unshared and not self.warned:
            self.warned = True
            warnings.warn(
                f"decoded images cannot be passed in shared memory ({SHARED_MEMORY}: {unshared}); they go through "
                f"a pipe, more slowly: {_FIX}",
                FeatxWarning,
                stacklevel=2,
            )
        # in place: the loader's batch must not keep the decoded pixels alive once they are used
        decoded["stacks"] = [(ids, torch.from_numpy(s) if isinstance(s, np.ndarray) else s) for ids, s in decoded["stacks"]]
        return decoded


def shared_memory_room(path: str = SHARED_MEMORY) -> Optional[int]:
    """Bytes free for unprivileged use in the shared-memory filesystem, or ``None`` where there is
    none to measure (not Linux)."""
    try:
        info = os.statvfs(path)
    except (OSError, AttributeError):
        return None
    return info.f_bavail * info.f_frsize


def workers_for_shared_memory(workers: int, batch_bytes: int, *, room: Optional[int] = None) -> int:
    """How many decoding workers may start: ``workers``, or 0 (with a ``FeatxWarning``) when the
    batches they would hold at once in shared memory (``PREFETCH_BATCHES`` each, plus the one the
    main process is working on) do not fit its free room (``room``, default
    :func:`shared_memory_room`).

    Example:
        >>> workers_for_shared_memory(2, 10 * 2**20, room=2**30)
        2
    """
    if workers == 0:
        return 0
    room = shared_memory_room() if room is None else room
    needed = (workers * PREFETCH_BATCHES + 1) * batch_bytes
    if room is None or needed <= room:
        return workers
    warnings.warn(
        f"{SHARED_MEMORY} has {room // 2**20} MiB free, less than the {-(-needed // 2**20)} MiB that {workers} decoding "
        f"workers would share; decoding in the main process instead. To use workers, {_FIX.split(' or ')[0]}",
        FeatxWarning,
        stacklevel=2,
    )
    return 0


def loader_timeout_error(error: BaseException, workers: int) -> Optional[ExtractionError]:
    """The one-line error for a DataLoader that timed out waiting for its workers, else ``None``."""
    if not (isinstance(error, RuntimeError) and "DataLoader timed out" in str(error)):
        return None
    return ExtractionError(
        f"the {workers} decoding worker(s) delivered nothing for {LOADER_TIMEOUT:.0f} s; a worker that cannot pass "
        f"its images (a full {SHARED_MEMORY}) is the usual cause: {_FIX}"
    )


def is_worker_death(error: BaseException) -> bool:
    """Whether a DataLoader failure is a worker process that died (not an error in featx's code)."""
    text = str(error)
    return isinstance(error, RuntimeError) and "DataLoader worker" in text


def _decode_child(connection: Any, dataset: DecodeDataset, index: int) -> None:
    _, image, error = dataset[index]
    connection.send((None if image is None else image.numpy(), error))
    connection.close()


def decode_isolated(dataset: DecodeDataset, index: int, *, timeout: float = 600.0) -> Decoded:
    """Decode image ``index`` in a one-shot child process; a child that dies is this image's error.

    Returns:
        As ``dataset[index]``, or an error record naming how the decoder died.
    """
    context = multiprocessing.get_context()
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_decode_child, args=(sender, dataset, index), daemon=True)
    child.start()
    sender.close()
    result = None
    try:
        if receiver.poll(timeout):
            result = receiver.recv()
    except (EOFError, OSError):  # the child died before it answered
        result = None
    finally:
        receiver.close()
        child.join(timeout=5)
        if child.is_alive():
            child.kill()
            child.join()
    if result is None:
        code = child.exitcode
        how = f"killed by signal {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit code {code}"
        return index, None, f"the image decoder process died on this file ({how}); skipped"
    array, error = result
    return index, None if array is None else torch.from_numpy(np.asarray(array)), error
