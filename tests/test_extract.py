"""Tests for the extraction engine featx.extract (no click): ExtractOptions, extract_features and its helpers.

References: features from calling ``VGGFeatures`` directly on ``featx.io.images.load_image`` output with
the same checkpoint file; reductions recomputed with torch/einsum in float64; sha256 with hashlib.
"""

from __future__ import annotations

import hashlib
import json
import os
import time

import numpy as np
import pytest
import torch
from PIL import Image

from featx.backbones.vgg.features import VGGFeatures
from featx.errors import OutputNotWritableError
from featx.extract import (
    FORMAT,
    ExtractOptions,
    extract_features,
    feature_path,
    make_batches,
    reduce_features,
    write_sample_images,
)
from featx.io.featfile import load_features
from featx.io.images import load_image

TAPS = "relu1_1,relu2_1"


def reference(ckpt, path, taps=TAPS, **load_kwargs):
    """Features of one image computed directly (batch of one)."""
    model = VGGFeatures("vgg19", taps, weights=str(ckpt))
    with torch.no_grad():
        feats = model(load_image(path, **load_kwargs)[None])
    return {name: value[0] for name, value in feats.items()}


def make_images(root, sizes, seed=0):
    """RGB PNGs ``img{i}.png`` of the given (h, w) sizes with random content."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (h, w) in enumerate(sizes):
        path = root / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def run(inputs, out, ckpt, **kwargs):
    options = dict(taps=TAPS, weights=str(ckpt), num_workers=0, batch_size=2)
    options.update(kwargs)
    return extract_features([str(p) for p in inputs], str(out), ExtractOptions(**options))


def manifest(out):
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def test_features_match_direct_extractor_and_metadata(tmp_path, ckpt):
    paths = make_images(tmp_path / "in", [(24, 32), (24, 32), (32, 24), (24, 32)])
    summary = run([tmp_path / "in"], tmp_path / "out", ckpt)
    assert (summary.files, summary.ok, summary.skipped, summary.errors) == (4, 4, 0, 0)
    for path in paths:
        tensors, meta = load_features(feature_path(tmp_path / "out", path.name))
        expected = reference(ckpt, path)
        assert list(tensors) == list(expected)
        for name in expected:
            # batched vs one-image forward may differ in the last bits; values must agree
            torch.testing.assert_close(tensors[name], expected[name], rtol=1e-4, atol=1e-5)
        stat = os.stat(path)
        assert meta == {
            "format": FORMAT,
            "featx_version": meta["featx_version"],
            "torch_version": torch.__version__,
            "arch": "vgg19",
            "taps": TAPS,
            "pooling": "max",
            "weights_id": f"file:{ckpt.resolve()}",
            "weights_sha256": hashlib.sha256(ckpt.read_bytes()).hexdigest(),  # independent hash
            "weights_verified": "none",
            "input_range": "0,1",
            "reduce": "none",
            "dtype": "float32",
            "source_path": str(path),
            "source_key": path.name,
            "source_bytes": str(stat.st_size),
            "source_mtime_ns": str(stat.st_mtime_ns),
            "source_height": str(Image.open(path).height),
            "source_width": str(Image.open(path).width),
        }
    import featx

    assert meta["featx_version"] == featx.__version__
    lines = manifest(tmp_path / "out")
    assert [line["path"] for line in lines] == sorted(p.name for p in paths)
    assert {line["status"] for line in lines} == {"ok"}
    assert lines[2]["shapes"] == {"relu1_1": [64, 32, 24], "relu2_1": [128, 16, 12]}
    assert lines[0]["output"] == "img0.png.safetensors"
    summary_json = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (summary_json["files"], summary_json["ok"], summary_json["error"], summary_json["skipped"]) == (4, 4, 0, 0)
    assert summary_json["config"]["taps"] == TAPS and summary_json["images_per_second"] > 0
    assert sorted(os.listdir(tmp_path / "out")) == sorted(
        [*(p.name + ".safetensors" for p in paths), "featx-owner.json", "featx.lock", "manifest.jsonl", "summary.json"]
    )


def test_resume_skips_up_to_date_and_recomputes_changed(tmp_path, ckpt):
    paths = make_images(tmp_path / "in", [(24, 32)] * 3)
    out = tmp_path / "out"
    run([tmp_path / "in"], out, ckpt)
    before = {
        p.name: (feature_path(out, p.name).read_bytes(), os.stat(feature_path(out, p.name)).st_mtime_ns) for p in paths
    }
    summary = run([tmp_path / "in"], out, ckpt)
    assert (summary.ok, summary.skipped) == (0, 3)
    assert [line["status"] for line in manifest(out)] == ["skipped"] * 3
    assert manifest(out)[0]["shapes"] == {"relu1_1": [64, 24, 32], "relu2_1": [128, 12, 16]}
    after = {
        p.name: (feature_path(out, p.name).read_bytes(), os.stat(feature_path(out, p.name)).st_mtime_ns) for p in paths
    }
    assert after == before  # not rewritten at all

    later = time.time() + 5
    os.utime(paths[1], (later, later))  # the source changed: its output is stale
    summary = run([tmp_path / "in"], out, ckpt)
    assert [line["status"] for line in manifest(out)] == ["skipped", "ok", "skipped"]
    assert load_features(feature_path(out, "img1.png"))[1]["source_mtime_ns"] == str(os.stat(paths[1]).st_mtime_ns)

    summary = run([tmp_path / "in"], out, ckpt, resume=False, fsync=False)
    assert (summary.ok, summary.skipped) == (3, 0)
    assert feature_path(out, "img0.png").read_bytes() == before["img0.png"][0]  # recomputed, identical

    summary = run([tmp_path / "in"], out, ckpt, taps="relu1_1")  # another config: everything is stale
    assert (summary.ok, summary.skipped) == (3, 0)
    assert list(load_features(feature_path(out, "img0.png"))[0]) == ["relu1_1"]


def test_corrupt_output_is_recomputed(tmp_path, ckpt):
    make_images(tmp_path / "in", [(24, 32)])
    out = tmp_path / "out"
    run([tmp_path / "in"], out, ckpt)
    good = feature_path(out, "img0.png").read_bytes()
    feature_path(out, "img0.png").write_bytes(good[: len(good) // 2])
    summary = run([tmp_path / "in"], out, ckpt)
    assert summary.ok == 1 and feature_path(out, "img0.png").read_bytes() == good


def test_outputs_byte_identical_across_runs_and_batch_plan_independent_of_resume(tmp_path, ckpt):
    make_images(tmp_path / "in", [(24, 32)] * 5 + [(32, 32)] * 2)
    run([tmp_path / "in"], tmp_path / "a", ckpt, batch_size=3)
    # second output: pre-seed two finished images, then resume; batches must be the same as in a
    # full run, so the recomputed images are byte-identical
    (tmp_path / "b").mkdir()
    for name in ("img1.png", "img5.png"):
        feature_path(tmp_path / "b", name).write_bytes(feature_path(tmp_path / "a", name).read_bytes())
    summary = run([tmp_path / "in"], tmp_path / "b", ckpt, batch_size=3, num_workers=2)
    assert (summary.ok, summary.skipped) == (5, 2)
    for i in range(7):
        assert (
            feature_path(tmp_path / "a", f"img{i}.png").read_bytes()
            == feature_path(tmp_path / "b", f"img{i}.png").read_bytes()
        )


def test_bad_files_reported_good_files_processed_with_workers(tmp_path, ckpt):
    make_images(tmp_path / "in", [(24, 32), (16, 16)])
    (tmp_path / "in" / "zero.png").write_bytes(b"")
    (tmp_path / "in" / "text.png").write_text("hello")
    Image.new("RGB", (1, 1)).save(tmp_path / "in" / "tiny.png")
    Image.new("RGBA", (8, 8)).save(tmp_path / "in" / "rgba.png")
    good = (tmp_path / "in" / "img0.png").read_bytes()
    (tmp_path / "in" / "trunc.png").write_bytes(good[: len(good) // 2])  # header fine, pixels missing
    seen = []
    summary = run([tmp_path / "in"], tmp_path / "out", ckpt, num_workers=2, on_record=seen.append)
    assert (summary.ok, summary.errors) == (2, 5)
    reasons = dict(summary.failures)
    assert reasons["zero.png"] == "empty file (0 bytes)"
    assert "cannot identify" in reasons["text.png"]
    assert "smaller than the 2x2 minimum for tap 'relu2_1'" in reasons["tiny.png"]
    assert "--alpha drop" in reasons["rgba.png"]
    assert "truncated" in reasons["trunc.png"]
    lines = {line["path"]: line for line in manifest(tmp_path / "out")}
    assert lines["trunc.png"]["status"] == "error" and lines["img1.png"]["status"] == "ok"
    assert sorted(r["path"] for r in seen) == sorted(lines)  # every record reached the callback once
    assert not feature_path(tmp_path / "out", "trunc.png").exists()


def test_reductions_match_independent_formulas(tmp_path, ckpt):
    (path,) = make_images(tmp_path / "in", [(24, 32)])
    maps = reference(ckpt, path)
    for reduce in ("gap", "gmp", "gram"):
        run([tmp_path / "in"], tmp_path / reduce, ckpt, reduce=reduce)
        tensors, meta = load_features(feature_path(tmp_path / reduce, "img0.png"))
        assert meta["reduce"] == reduce
        for name, feat in maps.items():
            f = feat.double()
            c, h, w = f.shape
            expected = {
                "gap": f.mean(dim=(1, 2)),
                "gmp": f.flatten(1).max(dim=1).values,
                "gram": torch.einsum("ik,jk->ij", f.flatten(1), f.flatten(1)) / (c * h * w),
            }[reduce]
            torch.testing.assert_close(tensors[name].double(), expected, rtol=1e-4, atol=1e-6)


def test_reduce_features_validates():
    with pytest.raises(ValueError, match=r"^unknown reduce 'mean'\. Valid choices: 'none', 'gap', 'gmp', 'gram'$"):
        reduce_features({}, "mean")


def test_bfloat16_stored_and_close(tmp_path, ckpt):
    (path,) = make_images(tmp_path / "in", [(24, 32)])
    run([tmp_path / "in"], tmp_path / "out", ckpt, dtype="bfloat16")
    tensors, meta = load_features(feature_path(tmp_path / "out", "img0.png"))
    assert meta["dtype"] == "bfloat16"
    expected = reference(ckpt, path)
    for name, value in tensors.items():
        assert value.dtype == torch.bfloat16
        # bf16 keeps 8 mantissa bits: compare relative to the map's scale
        error = (value.float() - expected[name]).abs().max() / expected[name].abs().max()
        assert error < 0.05


def test_dry_run_writes_nothing(tmp_path, ckpt):
    make_images(tmp_path / "in", [(24, 32)] * 2)
    (tmp_path / "in" / "bad.png").write_text("x")
    summary = run([tmp_path / "in"], tmp_path / "out", ckpt, dry_run=True)
    assert not (tmp_path / "out").exists()
    assert [(key, action.split(":")[0]) for key, action in summary.planned] == [
        ("bad.png", "error"),
        ("img0.png", "extract"),
        ("img1.png", "extract"),
    ]
    run([tmp_path / "in"], tmp_path / "out", ckpt)
    summary = run([tmp_path / "in"], tmp_path / "out", ckpt, dry_run=True)
    assert [action for _, action in summary.planned][1:] == ["skip (up to date)"] * 2


def test_files_from_and_several_inputs(tmp_path, ckpt, monkeypatch):
    make_images(tmp_path / "a", [(24, 32)] * 2)
    make_images(tmp_path / "b", [(24, 32)], seed=1)
    listing = tmp_path / "list.txt"
    listing.write_text("a/img1.png\nb/img0.png\nb/missing.png\n")
    monkeypatch.chdir(tmp_path)  # list entries are relative to the current directory
    summary = run([], tmp_path / "out", ckpt, files_from=listing)
    assert [(line["path"], line["status"]) for line in manifest(tmp_path / "out")] == [
        ("a/img1.png", "ok"),
        ("b/img0.png", "ok"),
        ("b/missing.png", "error"),
    ]
    assert dict(summary.failures)["b/missing.png"] == "file not found"
    summary = run([tmp_path / "a", tmp_path / "b"], tmp_path / "out2", ckpt)
    assert sorted(line["path"] for line in manifest(tmp_path / "out2")) == ["a/img0.png", "a/img1.png", "b/img0.png"]


def test_setup_errors(tmp_path, ckpt):
    make_images(tmp_path / "in", [(24, 32)])
    blocker = tmp_path / "file"
    blocker.write_text("a regular file")  # a folder cannot be created under it, even by root
    with pytest.raises(OutputNotWritableError, match=r"output folder .*file/out is not writable \(Not a directory\)"):
        run([tmp_path / "in"], blocker / "out", ckpt)
    with pytest.raises(FileNotFoundError, match="input not found: .*nope"):
        run([tmp_path / "nope"], tmp_path / "out", ckpt)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="no images found in .*empty: looked for bmp, jpeg, jpg, png, tif, tiff, webp"):
        run([tmp_path / "empty"], tmp_path / "out", ckpt)
    with pytest.raises(ValueError, match=r"^unknown dtype 'fp8'\. Valid choices: 'float32', 'bfloat16', 'float16'$"):
        run([tmp_path / "in"], tmp_path / "out", ckpt, dtype="fp8")
    with pytest.raises(ValueError, match="^batch_size must be an integer >= 1, got 0$"):
        run([tmp_path / "in"], tmp_path / "out", ckpt, batch_size=0)
    with pytest.raises(ValueError, match="unknown tap 'relu9_9'"):
        run([tmp_path / "in"], tmp_path / "out", ckpt, taps="relu9_9")
    from featx.errors import WeightsNotFoundError

    with pytest.raises(WeightsNotFoundError, match="featx weights download"):
        run([tmp_path / "in"], tmp_path / "out", ckpt, weights="DEFAULT")


def test_random_weights_are_seeded(tmp_path):
    make_images(tmp_path / "in", [(24, 32)])
    for out in ("a", "b"):
        with pytest.warns(UserWarning, match="random weights"):
            options = ExtractOptions(taps="relu1_1", weights=None, num_workers=0)
            extract_features([str(tmp_path / "in")], str(tmp_path / out), options)
    assert (
        feature_path(tmp_path / "a", "img0.png").read_bytes() == feature_path(tmp_path / "b", "img0.png").read_bytes()
    )
    assert load_features(feature_path(tmp_path / "a", "img0.png"))[1]["weights_id"] == "random"


@pytest.mark.filterwarnings("ignore::featx.errors.RandomWeightsWarning")
def test_default_taps_exist_in_every_arch_and_equal_ttsr_lte(tmp_path):
    # Fails on the code before the change: the default was the vgg19-only ttsr_lte preset.
    from featx import PRESETS
    from featx.extract import DEFAULT_TAPS

    make_images(tmp_path / "in", [(16, 16)])
    options = ExtractOptions(arch="vgg13", weights=None, num_workers=0)
    summary = extract_features([str(tmp_path / "in")], str(tmp_path / "out"), options)
    assert summary.ok == 1 and summary.shapes == {
        "relu1_1": [64, 16, 16],
        "relu2_1": [128, 8, 8],
        "relu3_1": [256, 4, 4],
    }
    # for vgg19 the default names the same layers as the preset, so files (and resumes) are unchanged
    assert VGGFeatures("vgg19", DEFAULT_TAPS, weights=None).taps == tuple(PRESETS["ttsr_lte"].taps)


def test_stale_temp_files_removed(tmp_path, ckpt):
    make_images(tmp_path / "in", [(24, 32)])
    (tmp_path / "out").mkdir()
    stale = tmp_path / "out" / ".img0.png.safetensors.featx-4242.tmp"  # featx's temporary name
    stale.write_bytes(b"partial")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    run([tmp_path / "in"], tmp_path / "out", ckpt)
    assert not stale.exists()
    assert not [name for name in os.listdir(tmp_path / "out") if name.endswith(".tmp") or name.startswith(".")]


def test_make_batches_groups_equal_sizes_in_order():
    sizes = [(2, 2), (3, 3), (2, 2), (2, 2), None, (3, 3), (2, 2)]
    # expected by hand: per size, chunks of 2 in index order, batches ordered by first index
    assert make_batches(sizes, 2) == [[0, 2], [1, 5], [3, 6]]
    assert make_batches(sizes, 1) == [[0], [1], [2], [3], [5], [6]]
    with pytest.raises(ValueError, match="^batch_size must be an integer >= 1, got 0$"):
        make_batches(sizes, 0)


def test_feature_path_keeps_extension():
    assert feature_path("/o", "a/b.PNG").as_posix() == "/o/a/b.PNG.safetensors"


def test_write_sample_images(tmp_path):
    paths = write_sample_images(tmp_path, max_side=32)
    assert [p.name for p in paths] == sorted(
        f"{n}.png" for n in ("astronaut", "coffee", "chelsea", "camera", "brick", "grass", "gravel")
    )
    with Image.open(tmp_path / "coffee.png") as image:  # 400x600 source: longer side scaled to 32
        assert image.size == (32, 21) and image.mode == "RGB"
    with Image.open(tmp_path / "camera.png") as image:
        assert image.mode == "L"
    mtime = os.stat(paths[0]).st_mtime_ns
    write_sample_images(tmp_path, max_side=32)
    assert os.stat(paths[0]).st_mtime_ns == mtime  # identical files are left alone


def test_direct_io_and_page_cache_writes_give_the_same_files(tmp_path, ckpt, monkeypatch):
    import fcntl

    paths = make_images(tmp_path / "in", [(72, 64)] * 2)  # relu1_1 alone is 64*72*64*4 bytes > 1 MiB
    direct_opens = []
    real_fcntl = fcntl.fcntl

    def spy(fd, command, *args):  # featx.io.atomic turns O_DIRECT on for the file it created
        if command == fcntl.F_SETFL and args[0] & getattr(os, "O_DIRECT", 0):
            direct_opens.append(fd)
        return real_fcntl(fd, command, *args)

    monkeypatch.setattr(fcntl, "fcntl", spy)
    run([tmp_path / "in"], tmp_path / "direct", ckpt)
    opened = len(direct_opens)
    run([tmp_path / "in"], tmp_path / "cached", ckpt, direct_io=False)
    assert len(direct_opens) == opened  # direct_io=False never asks for O_DIRECT
    if hasattr(os, "O_DIRECT"):
        assert opened == 2  # one per feature file; manifest and summary go through the page cache
    for path in paths:
        direct = feature_path(tmp_path / "direct", path.name).read_bytes()
        assert direct == feature_path(tmp_path / "cached", path.name).read_bytes()
        tensors, _ = load_features(feature_path(tmp_path / "direct", path.name))
        expected = reference(ckpt, path)
        for name in expected:  # reference: VGGFeatures called directly on the decoded image
            torch.testing.assert_close(tensors[name], expected[name], rtol=1e-4, atol=1e-5)


def test_options_are_frozen_typed_and_checked_when_built():
    import dataclasses

    options = ExtractOptions(taps=["relu1_1", "relu2_1"])
    assert options.taps == ("relu1_1", "relu2_1")  # a sequence is stored as a tuple
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.batch_size = 4  # type: ignore[misc]
    assert dataclasses.replace(options, batch_size=4).batch_size == 4
    # every field has a default, a type and a docstring line (rendered by the docs)
    fields = dataclasses.fields(ExtractOptions)
    assert len(fields) == 22 and all(f.default is not dataclasses.MISSING for f in fields)
    cases = [
        ({"reduce": "mean"}, ValueError, r"^unknown reduce 'mean'\. Valid choices: 'none', 'gap', 'gmp', 'gram'$"),
        ({"alpha": "keep"}, ValueError, r"^unknown alpha 'keep'\. Valid choices: 'error', 'drop'$"),
        ({"batch_size": 0}, ValueError, r"^batch_size must be an integer >= 1, got 0$"),
        ({"batch_size": 2.0}, TypeError, r"^batch_size must be an integer >= 1, got 2\.0 \(float\)$"),
        ({"num_workers": -1}, ValueError, r"^num_workers must be an integer >= 0, got -1$"),
        ({"max_pixels": 0}, ValueError, r"^max_pixels must be an integer >= 1, got 0$"),
        ({"resume": "yes"}, TypeError, r"^resume must be a bool \(True or False\), got 'yes' \(str\)$"),
        ({"add_inputs": 1}, TypeError, r"^add_inputs must be a bool \(True or False\), got 1 \(int\)$"),
        ({"fsync": 1}, TypeError, r"^fsync must be a bool \(True or False\), got 1 \(int\)$"),
        ({"taps": 3}, TypeError, r"^taps must be a string or a sequence of tap names, got 3$"),
        ({"device": 0}, TypeError, r"^device must be a string"),
        ({"files_from": 3}, TypeError, r"^files_from must be a path"),
        ({"on_record": "print"}, TypeError, r"^on_record must be callable or None, got str$"),
        ({"max_memory": "4 parsecs"}, ValueError, r"^a memory size such as '4GiB'.*got '4 parsecs'$"),
        ({"tile": "big"}, TypeError, r"^tile must be 'auto', 'off' or a number of pixels, got 'big'$"),
        ({"tile": 0}, ValueError, r"^tile must be an integer >= 1, got 0$"),
    ]
    for kwargs, error, message in cases:
        with pytest.raises(error, match=message):
            ExtractOptions(**kwargs)
    with pytest.raises(TypeError, match="options must be an ExtractOptions or None, got dict"):
        extract_features([], "out", {"batch_size": 2})  # type: ignore[arg-type]


def test_descriptors_are_not_the_loss_reductions():
    import featx
    from featx.extract import DESCRIPTORS

    assert DESCRIPTORS == ("none", "gap", "gmp", "gram")
    assert featx.REDUCTIONS == ("mean", "sum", "none")  # the loss reduction keeps its own name
    assert not hasattr(featx.extract, "REDUCTIONS")
