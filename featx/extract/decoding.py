"""Decoding for an extraction run: the DataLoader dataset that turns an image into a tensor or an
error record, the collate function that stacks equal sizes, and the isolated retry used when a
decoder process dies.

A decoder worker can die outright (a segfault in an image library, the out-of-memory killer); the
DataLoader then fails as a whole. :func:`decode_isolated` decodes one image in a one-shot child
process, so the run can retry the batches that were in flight, image by image, and name the image
that kills its decoder instead of aborting.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Sequence
from typing import Any, Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from featx.errors import ImageDecodeError
from featx.io.images import load_image

__all__ = [
    "Decoded",
    "DecodeDataset",
    "Planned",
    "changed_since_planning",
    "collate_decoded",
    "decode_isolated",
    "is_worker_death",
]

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
    """Stack decoded images by shape (in order); pass errors through."""
    groups: dict[tuple[int, ...], list[tuple[int, torch.Tensor]]] = {}
    errors = []
    for index, image, error in records:
        if image is None:
            errors.append((index, error))
        else:
            groups.setdefault(tuple(image.shape), []).append((index, image))
    stacks = [([i for i, _ in group], torch.stack([img for _, img in group])) for group in groups.values()]
    return {"stacks": stacks, "errors": errors}


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
