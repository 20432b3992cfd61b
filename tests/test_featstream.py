"""Feature files written tile by tile (featx.io.featstream.FeatureFileStream). The reference is
featx.io.featfile.save_features on the whole tensors: a streamed file must be byte-identical, and
any safetensors reader must read the same values."""

from __future__ import annotations

import errno
import os
import random

import pytest
import torch
from safetensors.torch import load_file

from featx.io.atomic import is_temp_name
from featx.io.featfile import save_features
from featx.io.featstream import FeatureFileStream

META = {"arch": "vgg19", "source_key": "a.png"}


def regions(height: int, width: int, tile_h: int, tile_w: int) -> list[tuple[int, int, int, int]]:
    return [
        (top, min(top + tile_h, height), left, min(left + tile_w, width))
        for top in range(0, height, tile_h)
        for left in range(0, width, tile_w)
    ]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.uint8])
@pytest.mark.parametrize("tile", [(4, 5), (3, 13)])  # partial rows, and full-width strips
def test_streamed_file_is_byte_identical_to_save_features(tmp_path, dtype, tile):
    generator = torch.Generator().manual_seed(0)
    maps = {
        "relu1_1": (torch.rand(3, 11, 13, generator=generator) * 100).to(dtype),
        "relu2_1": (torch.rand(5, 6, 7, generator=generator) * 100).to(dtype),
    }
    save_features(tmp_path / "whole.safetensors", maps, META)
    specs = {name: (value.dtype, tuple(value.shape)) for name, value in maps.items()}
    pieces = [(name, box) for name, value in maps.items() for box in regions(*value.shape[1:], *tile)]
    random.Random(0).shuffle(pieces)  # any order: every piece goes to its own place
    with FeatureFileStream(tmp_path / "streamed.safetensors", specs, META) as stream:
        for name, (top, bottom, left, right) in pieces:
            stream.write_region(name, maps[name][:, top:bottom, left:right], top=top, left=left)
        stream.commit()
    assert (tmp_path / "streamed.safetensors").read_bytes() == (tmp_path / "whole.safetensors").read_bytes()
    loaded = load_file(tmp_path / "streamed.safetensors")  # the safetensors package reads it
    assert all(torch.equal(loaded[name], value) for name, value in maps.items())
    assert sorted(os.listdir(tmp_path)) == ["streamed.safetensors", "whole.safetensors"]


def test_channels_last_and_non_contiguous_pieces(tmp_path):
    value = torch.rand(1, 4, 8, 6).contiguous(memory_format=torch.channels_last)[0]
    with FeatureFileStream(tmp_path / "x.safetensors", {"a": (torch.float32, (4, 8, 6))}, {}) as stream:
        stream.write_region("a", value[:, :5, 1:], top=0, left=1)
        stream.write_region("a", value[:, :5, :1], top=0, left=0)
        stream.write_region("a", value[:, 5:], top=5, left=0)
        stream.commit()
    assert torch.equal(load_file(tmp_path / "x.safetensors")["a"], value)


def test_incomplete_or_doubly_written_maps_are_never_published(tmp_path):
    specs = {"a": (torch.float32, (2, 4, 4))}
    stream = FeatureFileStream(tmp_path / "x.safetensors", specs, {})
    stream.write_region("a", torch.ones(2, 2, 4), top=0, left=0)
    with pytest.raises(ValueError, match=r"do not cover the maps of \['a'\] \(a: 8 of 16 positions never written\)"):
        stream.commit()
    assert os.listdir(tmp_path) == []  # neither the file nor its temporary
    stream = FeatureFileStream(tmp_path / "x.safetensors", specs, {})
    stream.write_region("a", torch.ones(2, 2, 4), top=2, left=0)
    with pytest.raises(ValueError, match=r"'a' rows 2:4, columns 0:4 overlap a region written before"):
        stream.write_region("a", torch.ones(2, 2, 4), top=2, left=0)  # the lower half twice
    assert os.listdir(tmp_path) == []  # aborted at once
    with pytest.raises(ValueError, match="already committed or aborted"):
        stream.commit()


def test_rows_written_twice_and_others_never_are_not_published(tmp_path):
    # Fails on the code before the change, which counted values: rows 0-1 twice and rows 2-3 never
    # balanced out, and the file was published with rows 2-3 left as zeros.
    specs = {"a": (torch.float32, (1, 4, 3))}
    stream = FeatureFileStream(tmp_path / "x.safetensors", specs, {})
    stream.write_region("a", torch.ones(1, 2, 3), top=0, left=0)
    with pytest.raises(ValueError, match=r"rows 0:2, columns 0:3 overlap a region written before"):
        stream.write_region("a", torch.ones(1, 2, 3), top=0, left=0)
    with pytest.raises(ValueError, match="already committed or aborted"):
        stream.commit()
    assert os.listdir(tmp_path) == []
    # partial overlaps are caught too: columns 1:3 of rows 1:3 against the first 2x2 block
    stream = FeatureFileStream(tmp_path / "x.safetensors", specs, {})
    stream.write_region("a", torch.ones(1, 2, 2), top=0, left=0)
    with pytest.raises(ValueError, match=r"rows 1:3, columns 1:3 overlap"):
        stream.write_region("a", torch.ones(1, 2, 2), top=1, left=1)
    assert os.listdir(tmp_path) == []


def test_empty_pieces_are_accepted_and_change_nothing(tmp_path):
    value = torch.arange(12.0).view(1, 3, 4)
    with FeatureFileStream(tmp_path / "x.safetensors", {"a": (torch.float32, (1, 3, 4))}, {}) as stream:
        stream.write_region("a", value[:, :0], top=3, left=0)  # a tile's empty share of a deep map
        stream.write_region("a", value[:, :, :0], top=0, left=4)
        stream.write_region("a", value, top=0, left=0)
        stream.write_region("a", value[:, :0], top=1, left=0)  # inside written rows: still nothing
        stream.commit()
    assert torch.equal(load_file(tmp_path / "x.safetensors")["a"], value)


def test_bad_regions_are_refused_with_what_was_expected(tmp_path):
    with FeatureFileStream(tmp_path / "x.safetensors", {"a": (torch.float32, (2, 4, 4))}, {}) as stream:
        with pytest.raises(ValueError, match=r"unknown tensor 'b'; this file holds \['a'\]"):
            stream.write_region("b", torch.ones(2, 1, 1), top=0, left=0)
        with pytest.raises(ValueError, match=r"expected \(2, h, w\) values of torch.float32, got \(3, 1, 1\) of torch.float32"):
            stream.write_region("a", torch.ones(3, 1, 1), top=0, left=0)
        with pytest.raises(ValueError, match=r"got \(2, 1, 1\) of torch.float16"):
            stream.write_region("a", torch.ones(2, 1, 1, dtype=torch.float16), top=0, left=0)
        with pytest.raises(ValueError, match=r"rows 3:5, columns 0:1 is outside its 4x4 map"):
            stream.write_region("a", torch.ones(2, 2, 1), top=3, left=0)
    with pytest.raises(TypeError, match=r"streamed tensors are \(C, H, W\) maps, got shape \(4, 4\)"):
        FeatureFileStream(tmp_path / "y.safetensors", {"a": (torch.float32, (4, 4))}, {})
    assert os.listdir(tmp_path) == []


def test_an_error_while_streaming_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError, match="tile failed"):
        with FeatureFileStream(tmp_path / "x.safetensors", {"a": (torch.float32, (1, 2, 2))}, {}) as stream:
            stream.write_region("a", torch.ones(1, 1, 2), top=0, left=0)
            raise RuntimeError("tile failed")
    assert os.listdir(tmp_path) == []


def test_a_full_disk_fails_before_any_tile_and_leaves_nothing(tmp_path, monkeypatch):
    def no_space(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_space, raising=False)
    with pytest.raises(OSError, match="No space left on device"):
        FeatureFileStream(tmp_path / "x.safetensors", {"a": (torch.float32, (1, 2, 2))}, {})
    assert os.listdir(tmp_path) == []


def test_the_file_is_built_under_a_featx_temporary_name(tmp_path):
    # a killed run leaves only this name, which the next run removes (featx.io.atomic.is_temp_name)
    stream = FeatureFileStream(tmp_path / "x.safetensors", {"a": (torch.float32, (1, 2, 2))}, {})
    (name,) = os.listdir(tmp_path)
    assert is_temp_name(name) and not name.endswith(".safetensors")
    stream.abort()
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("fsync", [True, False])
def test_commit_fsyncs_the_data_before_the_rename(tmp_path, monkeypatch, fsync):
    # Kills the mutant "no os.fsync in FeatureFileStream.commit": a power loss after the rename
    # could leave a published name over a header and zero-filled maps, which resume would skip.
    # The spy records fsync calls by inode and the rename's source inode, in order.
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", os.fstat(fd).st_ino)), real_fsync(fd))[1])
    monkeypatch.setattr(
        os, "replace", lambda src, dst: (events.append(("replace", os.stat(src).st_ino)), real_replace(src, dst))[1]
    )
    maps = torch.arange(12, dtype=torch.float32).reshape(1, 3, 4)
    with FeatureFileStream(tmp_path / "x.safetensors", {"a": (torch.float32, (1, 3, 4))}, META, fsync=fsync) as stream:
        stream.write_region("a", maps, top=0, left=0)
        stream.commit()
    (renamed,) = [event for event in events if event[0] == "replace"]
    synced = [event for event in events[: events.index(renamed)] if event == ("fsync", renamed[1])]
    assert len(synced) == (1 if fsync else 0), events
    assert torch.equal(load_file(tmp_path / "x.safetensors")["a"], maps)
