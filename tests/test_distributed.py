"""DistContext.on_rank0: what rank 0 reads (standard input, a pipe) reaches every rank, and so does
its failure. The collective is replaced by a pickle round trip, which is what gloo's
``broadcast_object_list`` does to the object; the real two-rank run is in
tests/test_torchrun_extract.py."""

from __future__ import annotations

import pickle
import re

import pytest

from featx.errors import ExtractionError, InputNotFoundError
from featx.extract.distributed import DistContext


class CallbackError(Exception):
    """An exception holding a lambda: pickling it fails."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.callback = lambda: None


class TwoPartError(Exception):
    """An exception whose ``__init__`` takes two arguments: it pickles, but unpickling calls
    ``TwoPartError(message)`` and fails on the receiving rank."""

    def __init__(self, what: str, why: str) -> None:
        super().__init__(f"{what}: {why}")


def two_rank_context(monkeypatch: pytest.MonkeyPatch, rank: int, sent: list[object]) -> DistContext:
    """A context that believes it is rank ``rank`` of 2; ``broadcast`` pickles rank 0's value."""
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    context = DistContext()
    context.world, context.rank = 2, rank

    def broadcast(value: object) -> object:
        if rank == 0:
            sent.append(pickle.loads(pickle.dumps(value)))
        return sent[-1]

    monkeypatch.setattr(context, "broadcast", broadcast)
    return context


def test_rank0_reads_once_and_every_rank_gets_the_value(monkeypatch):
    sent: list[object] = []
    calls = []
    assert two_rank_context(monkeypatch, 0, sent).on_rank0(lambda: calls.append(0) or ["a.png"]) == ["a.png"]
    assert two_rank_context(monkeypatch, 1, sent).on_rank0(lambda: calls.append(1) or ["b.png"]) == ["a.png"]
    assert calls == [0]  # rank 1 never reads


def test_a_failure_on_rank0_is_raised_on_every_rank_with_its_type_and_message(monkeypatch):
    sent: list[object] = []

    def missing() -> list[str]:
        raise InputNotFoundError("file list not found: list.txt")

    for rank in (0, 1):
        with pytest.raises(InputNotFoundError, match="file list not found: list.txt"):
            two_rank_context(monkeypatch, rank, sent).on_rank0(missing)


@pytest.mark.parametrize(
    "error",
    [CallbackError("the list's reader broke"), TwoPartError("the list's reader", "broke")],
    ids=["not-picklable", "not-unpicklable"],
)
def test_an_exception_that_cannot_be_sent_still_reaches_every_rank(monkeypatch, error):
    # Fails without featx.extract.distributed._sendable: rank 0 would stop in the broadcast with a
    # pickling error (or the other ranks fail to unpickle it), and the ranks that never get the
    # outcome wait for it until the process group's timeout.
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        pickle.loads(pickle.dumps(error))  # the premise: this error cannot be sent as it is
    sent: list[object] = []

    def fails() -> list[str]:
        raise error

    for rank in (0, 1):
        with pytest.raises(ExtractionError, match=re.escape(f"{type(error).__name__}: {error}")):
            two_rank_context(monkeypatch, rank, sent).on_rank0(fails)
