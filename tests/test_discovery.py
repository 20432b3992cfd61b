"""Tests for featx.io.discovery: which files a run takes, their keys, and --files-from lists.

Expected keys are written by hand from the documented rules.
"""

from __future__ import annotations

import os

import pytest

from featx.io.discovery import find_images, read_file_list


def touch(path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def test_find_images_recursive_sorted_case_insensitive_hidden_skipped(tmp_path):
    for name in (
        "b.PNG",
        "a/c.JpEg",
        "a/deep/d.tiff",
        "e.webp",
        "f.bmp",
        ".hidden.png",
        ".git/x.png",
        "n.txt",
        "g.gif",
    ):
        touch(tmp_path / name)
    keys = [s.key for s in find_images([tmp_path])]
    # expected set written by hand from the rules: image extensions only, no hidden entries
    assert keys == ["a/c.JpEg", "a/deep/d.tiff", "b.PNG", "e.webp", "f.bmp"]
    flat = [s.key for s in find_images([tmp_path], recursive=False)]
    assert flat == ["b.PNG", "e.webp", "f.bmp"]
    assert all(os.path.isabs(s.path) and os.path.exists(s.path) for s in find_images([tmp_path]))


def test_find_images_symlink_loop_terminates(tmp_path):
    touch(tmp_path / "a" / "x.png")
    os.symlink(tmp_path / "a", tmp_path / "a" / "loop")  # a/loop -> a
    os.symlink(tmp_path, tmp_path / "a" / "up")  # a/up -> root
    keys = [s.key for s in find_images([tmp_path])]
    assert keys == ["a/x.png"]


def test_find_images_several_inputs_keyed_from_common_root(tmp_path):
    for name in ("train/1.png", "val/1.png", "val/sub/2.png", "single.jpg"):
        touch(tmp_path / name)
    sources = find_images([tmp_path / "val", tmp_path / "train", tmp_path / "single.jpg", tmp_path / "val" / "sub"])
    # the common root is tmp_path, so equal file names in train/ and val/ cannot collide; val/sub is not doubled
    assert [s.key for s in sources] == ["single.jpg", "train/1.png", "val/1.png", "val/sub/2.png"]
    assert [s.key for s in find_images([tmp_path / "val" / "1.png"])] == ["1.png"]


def test_find_images_missing_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="input not found: .*nope"):
        find_images([tmp_path / "nope"])
    assert [s.key for s in find_images([tmp_path / "nope.png"], must_exist=False)] == ["nope.png"]
    with pytest.raises(ValueError, match="no inputs given"):
        find_images([])


def test_read_file_list(tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("# images\nimgs/a.png\n\n  /abs/b.jpg \n")
    assert read_file_list(listing) == ["imgs/a.png", "/abs/b.jpg"]
