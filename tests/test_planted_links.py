"""Nothing in an output folder or in FEATX_HOME is opened through a symlink someone planted there.

Each test plants a symlink at a name featx writes (the lock, a manifest part, a feature file's
temporary, the sha256 index's temporary, the writability probe) pointing at a "victim" file outside
the folder, runs featx, and checks the victim's bytes are unchanged. References: the victim's own
bytes; expected file lists and modes are written by hand (``0o666`` less the umask is POSIX's rule
for ``open(O_CREAT)``).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import secrets
import warnings

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from featx.errors import UnsafeFileError
from featx.extract import ExtractOptions, extract_features, feature_path
from featx.io.atomic import create_new, create_temp, is_temp_name, read_no_follow, temp_name, write_atomic
from featx.io.featfile import load_features, save_features
from featx_cli.main import cli

TAPS = "relu1_1,relu2_1"
VICTIM = b"precious data that belongs to someone else\n"


def make_images(root, names, size=(24, 32)):
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(root / name)


def victim(tmp_path):
    path = tmp_path / "victim.txt"
    path.write_bytes(VICTIM)
    return path


def run(inputs, out, ckpt, **kwargs):
    options = dict(taps=TAPS, weights=str(ckpt), num_workers=0, batch_size=2, **kwargs)
    return extract_features([str(inputs)], str(out), ExtractOptions(**options))


def invoke(*args):
    return CliRunner().invoke(cli, ["extract", *map(str, args)], catch_exceptions=False)


def old_temp_name(name):
    """The temporary name featx used before: predictable from the process id."""
    return f".{name}.featx-{os.getpid()}.tmp"


def test_a_planted_lock_symlink_is_refused_and_its_target_untouched(tmp_path, ckpt):
    # Fails on the code before the change: featx.lock was opened with O_CREAT and truncated through
    # the link, leaving the victim empty.
    make_images(tmp_path / "in", ["a.png"])
    out = tmp_path / "out"
    out.mkdir()
    target = victim(tmp_path)
    (out / "featx.lock").symlink_to(target)
    result = invoke(tmp_path / "in", out, "--weights", ckpt, "--taps", TAPS, "--workers", "0", "--quiet")
    assert result.exit_code == 2, result.output
    assert f"Error: {out / 'featx.lock'} is a symbolic link; featx does not follow links in an output folder" in result.output
    assert target.read_bytes() == VICTIM
    assert sorted(os.listdir(out)) == ["featx.lock"]  # nothing else written: the setup was refused


def test_a_planted_manifest_part_symlink_is_replaced_not_followed(tmp_path, ckpt):
    # Fails on the code before the change: manifest.rank0.jsonl was opened with open(..., "w") and
    # the run's manifest lines overwrote the victim.
    make_images(tmp_path / "in", ["a.png", "b.png"])
    out = tmp_path / "out"
    out.mkdir()
    target = victim(tmp_path)
    (out / "manifest.rank0.jsonl").symlink_to(target)
    summary = run(tmp_path / "in", out, ckpt)
    assert summary.ok == 2
    assert target.read_bytes() == VICTIM
    assert not (out / "manifest.rank0.jsonl").exists()  # merged into manifest.jsonl and removed
    assert [json.loads(line)["status"] for line in (out / "manifest.jsonl").read_text().splitlines()] == ["ok", "ok"]


def test_a_planted_feature_temporary_symlink_is_never_written_through(tmp_path, ckpt, monkeypatch):
    # Fails on the code before the change: the temporary ".a.png.safetensors.featx-PID.tmp" was
    # opened with O_CREAT | O_TRUNC, the features went into the victim, and os.replace then
    # published the symlink itself as the output.
    make_images(tmp_path / "in", ["a.png"])
    out = tmp_path / "out"
    out.mkdir()
    target = victim(tmp_path)
    (out / old_temp_name("a.png.safetensors")).symlink_to(target)
    # someone who guessed the first random name too: create_temp must draw another one
    tokens = iter(["0123456789abcdef"])
    real_token_hex = secrets.token_hex
    monkeypatch.setattr(secrets, "token_hex", lambda n: next(tokens, None) or real_token_hex(n))
    (out / temp_name("a.png.safetensors", "0123456789abcdef")).symlink_to(target)
    summary = run(tmp_path / "in", out, ckpt)
    assert summary.ok == 1
    assert target.read_bytes() == VICTIM
    published = feature_path(out, "a.png")
    assert not published.is_symlink() and load_features(published)[1]["source_key"] == "a.png"


def test_a_planted_index_temporary_symlink_in_featx_home_is_never_written_through(tmp_path, monkeypatch):
    # Fails on the code before the change: ".index.json.featx-PID.tmp" in the (shared) cache was
    # opened with O_CREAT | O_TRUNC and the index was written into the victim.
    from featx.weights.index import read_index, remember_sha256
    from featx.weights.locations import cache_dir

    cache_dir().mkdir(parents=True)
    target = victim(tmp_path)
    (cache_dir() / old_temp_name("index.json")).symlink_to(target)
    checkpoint = tmp_path / "w.pth"
    checkpoint.write_bytes(b"weights")
    sha256 = hashlib.sha256(b"weights").hexdigest()
    remember_sha256(checkpoint, checkpoint.stat(), sha256)
    assert target.read_bytes() == VICTIM
    assert read_index()[str(checkpoint)]["sha256"] == sha256
    assert not (cache_dir() / "index.json").is_symlink()


def test_the_writability_probe_never_follows_a_symlink_and_is_never_left(tmp_path, ckpt):
    # Fails on the code before the change: ".featx-probe-PID" was opened with open(..., "wb"),
    # which truncated the victim and wrote "probe" into it.
    make_images(tmp_path / "in", ["a.png"])
    out = tmp_path / "out"
    out.mkdir()
    target = victim(tmp_path)
    (out / f".featx-probe-{os.getpid()}").symlink_to(target)
    run(tmp_path / "in", out, ckpt)
    assert target.read_bytes() == VICTIM
    assert not [name for name in os.listdir(out) if "probe" in name and name != f".featx-probe-{os.getpid()}"]


@pytest.mark.parametrize("tile", ["off", "16"], ids=["whole-file", "streamed"])
def test_a_planted_folder_symlink_in_the_output_is_never_written_through(tmp_path, ckpt, tile):
    # Fails on the code before the change: the writer made OUT/sub/deeper with os.makedirs, which
    # followed OUT/sub -> elsewhere and created "deeper" there before noticing the link; the
    # streamed path (tiled images) made its folder with Path.mkdir(parents=True) and wrote the
    # feature file into the link's target. Reference: the victim folder's listing before the run.
    make_images(tmp_path / "in", ["a.png"])
    make_images(tmp_path / "in" / "sub", ["c.png"])
    make_images(tmp_path / "in" / "sub" / "deeper", ["b.png"])
    out = tmp_path / "out"
    out.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_bytes(VICTIM)
    (out / "sub").symlink_to(elsewhere, target_is_directory=True)
    summary = run(tmp_path / "in", out, ckpt, tile=tile, max_memory="8GiB")
    assert sorted(os.listdir(elsewhere)) == ["keep.txt"] and (elsewhere / "keep.txt").read_bytes() == VICTIM
    assert (out / "sub").is_symlink()
    lines = {line["path"]: line for line in map(json.loads, (out / "manifest.jsonl").read_text().splitlines())}
    assert lines["a.png"]["status"] == "ok" and summary.ok == 1
    for key in ("sub/deeper/b.png", "sub/c.png"):
        assert lines[key]["status"] == "error"
        assert "is a symbolic link, which featx does not follow here" in lines[key]["error"], lines[key]


def test_make_folders_refuses_a_link_anywhere_on_the_way_and_makes_nothing_through_it(tmp_path):
    # Reference: directory listings taken by hand; ELOOP is POSIX's answer to O_NOFOLLOW on a link.
    from featx.io.atomic import make_folders

    root, elsewhere = tmp_path / "root", tmp_path / "elsewhere"
    (root / "a").mkdir(parents=True)
    elsewhere.mkdir()
    (root / "a" / "link").symlink_to(elsewhere, target_is_directory=True)
    (root / "file").write_bytes(b"x")
    make_folders(root, root / "b" / "c")
    assert (root / "b" / "c").is_dir()
    with pytest.raises(UnsafeFileError) as caught:
        make_folders(root, root / "a" / "link" / "x" / "y")
    assert caught.value.errno == errno.ELOOP and caught.value.filename == str(root / "a" / "link")
    with pytest.raises(UnsafeFileError, match="is not a folder"):
        make_folders(root, root / "file" / "x")
    with pytest.raises(ValueError, match="is not inside"):
        make_folders(root, tmp_path / "outside")
    assert os.listdir(elsewhere) == [] and not (tmp_path / "outside").exists()


def test_create_new_and_read_no_follow_refuse_links_and_special_files(tmp_path):
    target = victim(tmp_path)
    (tmp_path / "link").symlink_to(target)
    with pytest.raises(UnsafeFileError, match="is a symbolic link, which featx does not follow here") as info:
        read_no_follow(tmp_path / "link")
    assert info.value.errno == errno.ELOOP
    os.mkfifo(tmp_path / "fifo")  # opening it for reading would block forever without O_NONBLOCK
    with pytest.raises(UnsafeFileError, match="is not a regular file"):
        read_no_follow(tmp_path / "fifo")
    fd = create_new(tmp_path / "link")  # replaces the link itself
    os.write(fd, b"mine")
    os.close(fd)
    assert (tmp_path / "link").read_bytes() == b"mine" and not (tmp_path / "link").is_symlink()
    assert target.read_bytes() == VICTIM


def test_create_temp_gives_up_after_100_taken_names(tmp_path, monkeypatch):
    monkeypatch.setattr(secrets, "token_hex", lambda n: "0" * (2 * n))
    (tmp_path / temp_name("a", "0" * 16)).write_bytes(b"someone else's")
    with pytest.raises(UnsafeFileError, match=r"no free temporary name for 'a' after 100 tries"):
        create_temp(tmp_path, "a")
    assert (tmp_path / temp_name("a", "0" * 16)).read_bytes() == b"someone else's"


@pytest.mark.parametrize("length", [227, 235, 242, 251])
def test_long_names_have_temporaries_within_255_bytes(tmp_path, ckpt, length):
    # Fails on the code before the change for 227-242 characters: the temporary name was 17
    # characters longer than the output name and passed the 255-byte limit (File name too long).
    name = "x" * (length - len(".png")) + ".png"  # output name: length + 12 <= 255 up to 243
    make_images(tmp_path / "in", [name])
    out = tmp_path / "out"
    if length + len(".safetensors") > 255:
        summary = run(tmp_path / "in", out, ckpt)  # the output name itself cannot exist: one image's error
        assert summary.errors == 1 and "File name too long" in summary.failures[0][1]
        return
    summary = run(tmp_path / "in", out, ckpt)
    assert summary.ok == 1, summary.failures
    assert load_features(feature_path(out, name))[1]["source_key"] == name


def test_temp_names_fit_255_bytes_and_are_recognised_with_multibyte_names():
    name = "é" * 127 + ".png.safetensors"  # 270 bytes of UTF-8
    temp = temp_name(name, "f" * 16)
    assert len(os.fsencode(temp)) <= 255 and is_temp_name(temp) and temp.startswith(".éé")
    assert is_temp_name(old_temp_name("a.png.safetensors"))  # leftovers of older versions are cleaned too


def test_files_follow_the_umask(tmp_path, ckpt):
    # create_temp makes files with mode 0o666 and lets the umask decide, as open(O_CREAT) does
    make_images(tmp_path / "in", ["a.png"])
    old = os.umask(0o027)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run(tmp_path / "in", tmp_path / "out", ckpt)
        write_atomic(tmp_path / "plain.txt", [b"x"])
        import torch

        save_features(tmp_path / "f.safetensors", {"a": torch.zeros(2)}, {})
    finally:
        os.umask(old)
    out = tmp_path / "out"
    for path in [feature_path(out, "a.png"), out / "manifest.jsonl", out / "summary.json", out / "featx-owner.json",
                 tmp_path / "plain.txt", tmp_path / "f.safetensors"]:  # fmt: skip
        assert oct(path.stat().st_mode & 0o777) == oct(0o640), path
