"""The ownership record featx-owner.json (featx.extract.owner): prefixes, the empty prefix of the first
root, and records that cannot be read. Each test kills a mutant of owner.py that the rest of the
suite let through (named in the test).

References: expected prefixes, kept and stale lines are written by hand from the rules in
docs/cli.md ("An output folder remembers its inputs").
"""

from __future__ import annotations

import json
import os

import pytest

from featx.errors import OutputNotWritableError, OutputOwnedError
from featx.extract.owner import OWNER, claim_output, earlier_records, read_owner


def test_a_new_prefix_never_names_an_existing_entry_of_the_folder(tmp_path):
    # Kills the mutant "_new_prefix ignores existing folders": keys "val/..." would then mix the
    # new root's images with the first root's own subfolder val/.
    assert claim_output(tmp_path, "/data/train", {}) == ""
    (tmp_path / "val").mkdir()  # train/val/... extracted by the first root
    assert claim_output(tmp_path, "/data/val", {}, add_inputs=True) == "val-2"
    (tmp_path / "test.safetensors").write_bytes(b"")  # the output of an image called "test"
    assert claim_output(tmp_path, "/elsewhere/test", {}, add_inputs=True) == "test-2"
    assert claim_output(tmp_path, "/more/val", {}, add_inputs=True) == "val-3"  # val and val-2 taken
    assert read_owner(tmp_path)["roots"] == {
        "": "/data/train", "val-2": "/data/val", "test-2": "/elsewhere/test", "val-3": "/more/val"
    }  # fmt: skip


def test_the_first_root_has_the_empty_prefix_and_owns_the_unprefixed_keys(tmp_path):
    # Kills the mutants "the first root gets a prefix" and "with the empty prefix every earlier
    # line belongs to this root" (here() always true): lines of the other root's images must be
    # kept, and only this root's missing images reported stale.
    assert claim_output(tmp_path, "/data/train", {}) == ""
    assert claim_output(tmp_path, "/data/val", {}, add_inputs=True) == "val"
    for name in ("gone.png.safetensors", "kept.png.safetensors"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "val").mkdir()
    (tmp_path / "val" / "b.png.safetensors").write_bytes(b"x")
    lines = [
        {"path": "gone.png", "source": "/data/train/gone.png", "status": "ok", "output": "gone.png.safetensors"},
        {"path": "kept.png", "source": "/data/train/kept.png", "status": "ok", "output": "kept.png.safetensors"},
        {"path": "val/b.png", "source": "/data/val/b.png", "status": "ok", "output": "val/b.png.safetensors"},
    ]
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    kept, stale = earlier_records(tmp_path, "manifest.jsonl", {("kept.png", None)}, "")
    assert [line["path"] for line in kept] == ["val/b.png"]  # the other root's image
    assert stale == [("gone.png", "image not found")]
    kept, stale = earlier_records(tmp_path, "manifest.jsonl", set(), "val")  # seen from the other root
    assert [line["path"] for line in kept] == ["gone.png", "kept.png"] and stale == [("val/b.png", "image not found")]
    # an interrupted run keeps the previous lines of the images it did not reach
    kept, stale = earlier_records(tmp_path, "manifest.jsonl", set(), "", frozenset({("gone.png", None)}))
    assert [line["path"] for line in kept] == ["gone.png", "val/b.png"] and stale == [("kept.png", "image not found")]


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b'{"roots": {"": 3}}', b"\xff\xfe"])
def test_a_corrupt_record_is_refused_never_taken_for_no_record(tmp_path, content):
    # Kills the mutant "a corrupt featx-owner.json is treated as no record": the folder would then
    # be claimed anew and another root's files replaced.
    (tmp_path / OWNER).write_bytes(content)
    with pytest.raises(OutputOwnedError, match=f"{OWNER} is not a featx ownership record; move it away"):
        read_owner(tmp_path)
    with pytest.raises(OutputOwnedError, match="is not a featx ownership record"):
        claim_output(tmp_path, "/data/train", {})
    assert (tmp_path / OWNER).read_bytes() == content  # never overwritten


def test_a_record_that_is_a_symlink_is_refused_and_not_read(tmp_path):
    target = tmp_path / "elsewhere.json"
    target.write_text(json.dumps({"format": "featx-owner/1", "roots": {"": "/data/train"}, "config": {}}))
    out = tmp_path / "out"
    out.mkdir()
    (out / OWNER).symlink_to(target)
    with pytest.raises(OutputOwnedError, match="is a symbolic link, which featx does not follow here"):
        claim_output(out, "/data/train", {})


def test_an_unchanged_record_is_not_rewritten_and_a_failed_write_keeps_the_old_one(tmp_path, monkeypatch):
    claim_output(tmp_path, "/data/train", {"taps": "relu1_1"})
    before = (tmp_path / OWNER).stat()
    time_ns = before.st_mtime_ns - 10**9
    os.utime(tmp_path / OWNER, ns=(time_ns, time_ns))
    claim_output(tmp_path, "/data/train", {"taps": "relu1_1"})
    assert (tmp_path / OWNER).stat().st_mtime_ns == time_ns  # nothing to write on a full disk

    from featx.extract import owner

    def full_disk(path, chunks, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(owner, "write_atomic", full_disk)
    old = (tmp_path / OWNER).read_bytes()
    message = r"cannot write .*featx-owner.json \(No space left on device\); the previous record is kept"
    with pytest.raises(OutputNotWritableError, match=message):
        claim_output(tmp_path, "/data/train", {"taps": "relu2_1"})
    assert (tmp_path / OWNER).read_bytes() == old
