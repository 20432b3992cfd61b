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
import signal
from collections.abc import Sequence
from typing import Any, Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from featx.errors import ImageDecodeError
from featx.io.images import load_image

__all__ = ["Decoded", "DecodeDataset", "collate_decoded", "decode_isolated", "is_worker_death"]

Decoded = tuple[int, Optional[torch.Tensor], Optional[str]]
"""``(index, image or None, error reason or None)``."""


class DecodeDataset(Dataset[Decoded]):
    """Decodes one image; returns an error record instead of raising (workers must not die)."""

    def __init__(self, paths: Sequence[str], alpha: str, max_pixels: Optional[int]) -> None:
        self.paths, self.alpha, self.max_pixels = list(paths), alpha, max_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Decoded:
        try:
            return index, load_image(self.paths[index], alpha=self.alpha, max_pixels=self.max_pixels), None
        except ImageDecodeError as error:
            return index, None, error.reason
        except Exception as error:  # anything else is still this file's problem, not the run's
            return index, None, f"cannot decode ({type(error).__name__}: {error})"


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
