"""An image replaced between planning and decoding (issue 18, item 5): the run planned its memory
and its file's metadata from the old file's header, so the new file is that image's error (never
computed outside the plan), the other images are extracted, and a rerun extracts the new file
with metadata that describes the tensor in it."""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
from PIL import Image

import featx.extract.engine as engine
from featx.extract import ExtractOptions, extract_features
from featx.extract.decoding import DecodeDataset
from featx.io.featfile import load_features


def save(path, height, width, seed=0):
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)


def run(folder, out, workers=0):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        options = ExtractOptions(weights=None, num_workers=workers, taps="relu1_1", resume=True)
        return extract_features([folder], out, options)


def test_an_image_replaced_after_planning_is_its_error_and_a_rerun_extracts_it(tmp_path, monkeypatch):
    folder = tmp_path / "in"
    folder.mkdir()
    save(folder / "a.png", 64, 64)
    save(folder / "b.png", 40, 48)
    real_plan_all = engine.plan_all

    def plan_then_replace(*args, **kwargs):
        plans = real_plan_all(*args, **kwargs)
        save(folder / "a.png", 150, 120, seed=1)  # swapped for a larger picture after planning
        return plans

    monkeypatch.setattr(engine, "plan_all", plan_then_replace)
    out = tmp_path / "out"
    summary = run(folder, out)
    assert summary.ok == 1 and summary.errors == 1
    records = {r["path"]: r for r in map(json.loads, (out / "manifest.jsonl").read_text().splitlines())}
    assert records["b.png"]["status"] == "ok"
    assert records["a.png"]["status"] == "error"
    size = os.path.getsize(folder / "a.png")
    assert records["a.png"]["error"].startswith("changed after planning (planned as 64x64, ")
    assert records["a.png"]["error"].endswith(f"now {size} bytes): not extracted; rerun to extract it")
    assert not (out / "a.png.safetensors").exists()

    monkeypatch.setattr(engine, "plan_all", real_plan_all)
    again = run(folder, out)
    assert again.ok == 1 and again.skipped == 1
    tensors, meta = load_features(out / "a.png.safetensors")
    assert (meta["source_height"], meta["source_width"]) == ("150", "120")
    assert tuple(tensors["relu1_1"].shape) == (64, 150, 120)
    assert meta["source_bytes"] == str(size)


def test_the_same_bytes_decoding_to_another_size_are_refused(tmp_path):
    """Replaced between the check of its file status and its decoding: the decoded size is checked too."""
    save(tmp_path / "a.png", 30, 20)
    info = os.stat(tmp_path / "a.png")
    stat = (info.st_size, info.st_mtime_ns)
    dataset = DecodeDataset([str(tmp_path / "a.png")], "error", None, [(stat, (64, 64))])
    index, image, error = dataset[0]
    assert index == 0 and image is None
    assert error == f"changed after planning (planned as 64x64, {stat[0]} bytes; now 30x20): not extracted; rerun to extract it"
    # the planned size either way round (an EXIF rotation) decodes
    for size in ((30, 20), (20, 30)):
        _, image, error = DecodeDataset([str(tmp_path / "a.png")], "error", None, [(stat, size)])[0]
        assert error is None and tuple(image.shape) == (3, 30, 20)


def test_replaced_with_decoding_workers(tmp_path, monkeypatch):
    """The check runs in the decoding worker processes too."""
    folder = tmp_path / "in"
    folder.mkdir()
    save(folder / "a.png", 64, 64)
    real_plan_all = engine.plan_all

    def plan_then_replace(*args, **kwargs):
        plans = real_plan_all(*args, **kwargs)
        save(folder / "a.png", 80, 64, seed=2)
        return plans

    monkeypatch.setattr(engine, "plan_all", plan_then_replace)
    summary = run(folder, tmp_path / "out", workers=1)
    assert summary.ok == 0 and summary.errors == 1
    record = json.loads((tmp_path / "out" / "manifest.jsonl").read_text())
    assert record["error"].startswith("changed after planning (planned as 64x64, ")
