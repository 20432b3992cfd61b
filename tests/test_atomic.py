"""featx.io.atomic: page-aligned buffers and atomic writes, direct (O_DIRECT) and buffered.

References: the bytes written are compared with the buffer's own bytes (numpy) and with what
``featx.io.featfile.save_features`` writes through the page-cache path; feature files are read back with
the official ``safetensors`` reader.
"""

from __future__ import annotations

import errno
import os

import pytest
import safetensors.torch
import torch

from featx.io import atomic
from featx.io.atomic import ALIGNMENT, DIRECT_MIN_BYTES, aligned_buffer, write_atomic, write_atomic_buffer
from featx.io.featfile import save_features, serialize_features

HAS_DIRECT = hasattr(os, "O_DIRECT")


def filled(nbytes: int, seed: int = 0) -> torch.Tensor:
    buffer = aligned_buffer(nbytes)
    generator = torch.Generator().manual_seed(seed)
    buffer[:nbytes] = torch.randint(0, 256, (nbytes,), dtype=torch.uint8, generator=generator)
    return buffer


@pytest.mark.parametrize("nbytes", [0, 1, ALIGNMENT, ALIGNMENT + 1, 3 * ALIGNMENT - 7])
def test_aligned_buffer_starts_on_a_page_and_covers_a_whole_number_of_pages(nbytes):
    buffer = aligned_buffer(nbytes)
    assert buffer.dtype == torch.uint8 and buffer.is_contiguous()
    assert buffer.data_ptr() % ALIGNMENT == 0
    assert buffer.numel() % ALIGNMENT == 0 and buffer.numel() >= max(nbytes, 1)
    assert buffer.numel() < nbytes + 2 * ALIGNMENT


def test_aligned_buffer_rejects_negative_size():
    with pytest.raises(ValueError, match="nbytes must be >= 0, got -1"):
        aligned_buffer(-1)


@pytest.mark.parametrize("nbytes", [0, 5, DIRECT_MIN_BYTES - 1, DIRECT_MIN_BYTES, DIRECT_MIN_BYTES + 12345])
def test_write_atomic_buffer_writes_exactly_the_first_nbytes(tmp_path, nbytes):
    buffer = filled(nbytes)
    path = tmp_path / "out.bin"
    write_atomic_buffer(path, buffer, nbytes)
    assert path.read_bytes() == buffer[:nbytes].numpy().tobytes()  # reference: the buffer itself
    assert os.listdir(tmp_path) == ["out.bin"]  # no temporary file left


def direct_spy(monkeypatch, *, refuse: str = "") -> list[tuple]:
    """Record (and optionally refuse) the switch to O_DIRECT and the writes of featx.io.atomic.

    ``refuse="fcntl"`` answers EINVAL to turning O_DIRECT on (a filesystem without it, such as
    FUSE), ``refuse="write"`` to writes made while it is on (an alignment the device refuses).
    """
    import fcntl

    events: list[tuple] = []
    direct_fds: set[int] = set()
    real_fcntl, real_pwrite = fcntl.fcntl, os.pwrite

    def spy_fcntl(fd, command, *args):
        if command == fcntl.F_SETFL:
            on = bool(args[0] & os.O_DIRECT)
            if on and refuse == "fcntl":
                events.append(("refused", fd))
                raise OSError(errno.EINVAL, "Invalid argument")
            (direct_fds.add if on else direct_fds.discard)(fd)
            events.append(("direct" if on else "buffered", fd))
        return real_fcntl(fd, command, *args)

    def spy_pwrite(fd, data, offset):
        if fd in direct_fds and refuse == "write":
            events.append(("refused", fd))
            raise OSError(errno.EINVAL, "Invalid argument")
        events.append(("pwrite", fd, fd in direct_fds))
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(fcntl, "fcntl", spy_fcntl)
    monkeypatch.setattr(atomic.os, "pwrite", spy_pwrite)
    return events


def test_large_buffers_use_o_direct_and_small_ones_the_page_cache(tmp_path, monkeypatch):
    if not HAS_DIRECT:
        pytest.skip("no O_DIRECT on this platform: every write is buffered")
    events = direct_spy(monkeypatch)
    write_atomic_buffer(tmp_path / "small.bin", filled(100), 100)
    assert [event[0] for event in events] == ["pwrite"] and not events[0][2]
    events.clear()
    write_atomic_buffer(tmp_path / "large.bin", filled(DIRECT_MIN_BYTES), DIRECT_MIN_BYTES)
    if ("direct", events[0][1]) != events[0]:
        pytest.skip("the filesystem of tmp_path refused O_DIRECT")
    assert all(event[2] for event in events if event[0] == "pwrite")  # every write bypassed the cache


@pytest.mark.parametrize("where", ["fcntl", "write"])
def test_o_direct_refused_falls_back_to_identical_buffered_bytes(tmp_path, monkeypatch, where):
    if not HAS_DIRECT:
        pytest.skip("no O_DIRECT on this platform")
    events = direct_spy(monkeypatch, refuse=where)
    nbytes = DIRECT_MIN_BYTES + 77
    buffer = filled(nbytes, seed=1)
    write_atomic_buffer(tmp_path / "out.bin", buffer, nbytes)
    assert ("refused", events[0][1]) in events, "the O_DIRECT path was not tried"
    assert events[-1][0] == "pwrite" and not events[-1][2]  # the fallback wrote through the page cache
    assert (tmp_path / "out.bin").read_bytes() == buffer[:nbytes].numpy().tobytes()
    assert os.listdir(tmp_path) == ["out.bin"]


@pytest.mark.parametrize("fsync", [True, False])
def test_o_direct_path_fsyncs_its_file_before_the_rename(tmp_path, monkeypatch, fsync):
    # Catches the mutation "the O_DIRECT path skips os.fsync", which every other test passed: the
    # descriptor written with O_DIRECT must be flushed, then closed, before the rename publishes it.
    if not HAS_DIRECT:
        pytest.skip("no O_DIRECT on this platform: every write is buffered")
    events = direct_spy(monkeypatch)
    real_fsync, real_close, real_replace = os.fsync, os.close, os.replace

    def spy_fsync(fd):
        events.append(("fsync", fd))
        return real_fsync(fd)

    def spy_close(fd):
        events.append(("close", fd))
        return real_close(fd)

    def spy_replace(src, dst):
        events.append(("replace",))
        return real_replace(src, dst)

    nbytes = DIRECT_MIN_BYTES + 4096 + 123  # >= 1 MiB; the aligned buffer is a whole number of pages
    buffer = filled(nbytes, seed=2)
    monkeypatch.setattr(atomic.os, "fsync", spy_fsync)
    monkeypatch.setattr(atomic.os, "close", spy_close)
    monkeypatch.setattr(atomic.os, "replace", spy_replace)
    write_atomic_buffer(tmp_path / "out.bin", buffer, nbytes, fsync=fsync, direct=True)
    monkeypatch.undo()

    if events[0][0] != "direct":
        pytest.skip("the filesystem of tmp_path refused O_DIRECT: the buffered fallback was taken")
    assert (tmp_path / "out.bin").read_bytes() == buffer[:nbytes].numpy().tobytes()
    fd = events[0][1]
    written = max(i for i, event in enumerate(events) if event[0] == "pwrite")
    closed, renamed = events.index(("close", fd)), events.index(("replace",))
    if fsync:
        synced = events.index(("fsync", fd))
        assert written < synced < closed < renamed  # written with O_DIRECT, flushed, closed, then renamed
    else:
        assert not [event for event in events if event[0] == "fsync"]
        assert written < closed < renamed


def test_other_write_errors_propagate_and_leave_nothing(tmp_path, monkeypatch):
    real_pwrite = os.pwrite

    def full_disk(fd, data, offset):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "pwrite", full_disk)
    (tmp_path / "out.bin").write_bytes(b"old")
    with pytest.raises(OSError, match="No space left"):
        write_atomic_buffer(tmp_path / "out.bin", filled(DIRECT_MIN_BYTES), DIRECT_MIN_BYTES)
    monkeypatch.setattr(atomic.os, "pwrite", real_pwrite)
    assert (tmp_path / "out.bin").read_bytes() == b"old"  # the old file is untouched
    assert os.listdir(tmp_path) == ["out.bin"]  # and the temporary file is gone


def test_write_atomic_buffer_validates_its_arguments(tmp_path):
    with pytest.raises(TypeError, match="contiguous uint8 CPU tensor"):
        write_atomic_buffer(tmp_path / "a", torch.zeros(8), 8)
    with pytest.raises(TypeError, match="contiguous uint8 CPU tensor"):
        write_atomic_buffer(tmp_path / "a", b"bytes", 5)
    with pytest.raises(ValueError, match=r"nbytes must be in \[0, 4096\] \(the buffer's length\), got 4097"):
        write_atomic_buffer(tmp_path / "a", aligned_buffer(10), ALIGNMENT + 1)
    with pytest.raises(FileNotFoundError):
        write_atomic_buffer(tmp_path / "missing" / "a", aligned_buffer(10), 10)
    assert not list(tmp_path.iterdir())


def test_feature_files_are_identical_through_direct_and_buffered_paths(tmp_path, monkeypatch):
    tensors = {"relu1_1": torch.randn(64, 40, 40), "relu2_1": torch.randn(128, 20, 20)}  # ~0.6 MB
    metadata = {"arch": "vgg19"}
    save_features(tmp_path / "buffered.safetensors", tensors, metadata)  # below the O_DIRECT size
    monkeypatch.setattr(atomic, "DIRECT_MIN_BYTES", 1)
    save_features(tmp_path / "direct.safetensors", tensors, metadata)
    assert (tmp_path / "direct.safetensors").read_bytes() == (tmp_path / "buffered.safetensors").read_bytes()
    official = safetensors.torch.load_file(str(tmp_path / "direct.safetensors"))  # reference reader
    assert all(torch.equal(official[name], tensors[name]) for name in tensors)


def test_channels_last_maps_are_stored_in_chw_order(tmp_path):
    batch = torch.randn(2, 8, 5, 7).contiguous(memory_format=torch.channels_last)
    view = batch[1]  # C x H x W view with H x W x C strides, as the extraction engine hands it over
    assert not view.is_contiguous()
    save_features(tmp_path / "a.safetensors", {"x": view}, {})
    save_features(tmp_path / "b.safetensors", {"x": view.contiguous()}, {})
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    assert torch.equal(safetensors.torch.load_file(str(tmp_path / "a.safetensors"))["x"], view)


def test_serialize_features_matches_the_safetensors_layout():
    tensors = {"a": torch.arange(3, dtype=torch.float32), "b": torch.tensor([1, 2], dtype=torch.int16)}
    buffer, nbytes = serialize_features(tensors, {"k": "v"})
    data = buffer[:nbytes].numpy().tobytes()
    official = safetensors.torch.load(data)  # reference: the official parser of the same bytes
    assert all(torch.equal(official[name], tensors[name]) for name in tensors)
    header_len = int.from_bytes(data[:8], "little")
    assert (8 + header_len) % 8 == 0 and nbytes == 8 + header_len + 3 * 4 + 2 * 2


def test_write_atomic_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "out.safetensors"
    path.write_bytes(b"old")

    def chunks():
        yield b"new partial"
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError, match="killed mid-write"):
        write_atomic(path, chunks())
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.safetensors"]  # temp file removed
    write_atomic(path, [b"new"])
    assert path.read_bytes() == b"new"
