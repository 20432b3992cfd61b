"""torchrun support for extraction: this process's rank and world size, and the gloo collectives
(gather, broadcast, barrier) the ranks use to agree on one plan and one manifest.

Without torchrun (``WORLD_SIZE`` unset or 1) every collective is a no-op on one process.
torch is imported when a :class:`DistContext` is made, not with this module.
"""

from __future__ import annotations

import datetime
import os
import pickle
from collections.abc import Callable
from typing import Any

from featx.errors import ExtractionError

__all__ = ["BARRIER_TIMEOUT", "DistContext", "env_rank"]

BARRIER_TIMEOUT = datetime.timedelta(hours=24)
"""Timeout of the process group: ranks finish their shards at different times on big runs."""


def env_rank() -> int:
    """This process's global rank from torchrun's ``RANK`` (0 without torchrun)."""
    return int(os.environ.get("RANK", "0"))


class DistContext:
    """Rank/world from torchrun's environment; a gloo process group when ``WORLD_SIZE > 1``.

    A group this object creates is destroyed by :meth:`close`; an existing one is used and left alone.

    Attributes:
        rank: this process's rank (0 single-process).
        world: number of ranks.
        local_rank: rank on this machine (``LOCAL_RANK``), which picks the CUDA device.
    """

    def __init__(self) -> None:
        import torch.distributed as dist

        self.dist = dist
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = env_rank()
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.owned = False
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("gloo", timeout=BARRIER_TIMEOUT)
            self.owned = True
        if self.world > 1:
            self.rank, self.world = dist.get_rank(), dist.get_world_size()

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order, on every rank."""
        if self.world == 1:
            return [value]
        out: list[Any] = [None] * self.world
        self.dist.all_gather_object(out, value)
        return out

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank."""
        if self.world == 1:
            return value
        box = [value]
        self.dist.broadcast_object_list(box, src=0)
        return box[0]

    def on_rank0(self, work: Callable[[], Any]) -> Any:
        """``work()`` run by rank 0 alone and its result on every rank: for what only one process
        can read (standard input, a pipe). An exception ``work`` raises is raised on every rank, so
        no rank waits for the result forever."""
        if self.world == 1:
            return work()
        outcome: tuple[bool, Any] = (True, None)
        if self.rank == 0:
            try:
                outcome = (True, work())
            except Exception as error:  # every rank must hear of it, or they wait for rank 0 forever
                outcome = (False, _sendable(error))
        ok, value = self.broadcast(outcome)
        if not ok:
            raise value
        return value

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        if self.world > 1:
            self.dist.barrier()

    def close(self) -> None:
        """Destroy the process group if this object created it."""
        if self.owned:
            self.dist.destroy_process_group()


def _sendable(error: Exception) -> Exception:
    """``error`` if it survives a pickle round trip (how the ranks exchange objects), else an
    :class:`~featx.errors.ExtractionError` with its type and message: an exception that cannot be
    pickled would stop rank 0 in the broadcast, and one that cannot be unpickled (an ``__init__``
    with other arguments) would fail on the receiving ranks instead of being raised there."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return ExtractionError(f"{type(error).__name__}: {error}")
    return error
