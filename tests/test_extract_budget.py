"""featx extract under a memory budget: batches formed by bytes, and images too large for the
budget extracted in exact tiles. The reference is the same run without tiling (``tile="off"``):
the tiled feature files must hold the same features (fp32, relative error < 1e-5)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from featx.extract import ExtractOptions, extract_features
from featx.extract.budget import current_rss
from featx.extract.plan import make_batches
from featx.io.featfile import load_features
from featx_cli.main import cli


@pytest.fixture()
def images(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, (h, w) in {"big.png": (300, 260), "small.png": (40, 36)}.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / name)
    return folder


def run(folder, out, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return extract_features([folder], out, ExtractOptions(weights=None, num_workers=0, taps="relu1_1,relu3_1", **options))


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.fixture()
def tiled_calls(monkeypatch):
    """The image sizes and tiles the engine extracts in tiles: spies around the real
    tiled_features (descriptors, stitched in memory) and stream_tiled (maps streamed into the file)."""
    import featx.extract.engine
    import featx.extract.memory_plan
    from featx.extract.streaming import stream_tiled
    from featx.extract.tiling import tiled_features

    class Calls(list):
        bands: list  # per streamed image: whether full-width bands were written

    calls = Calls()
    calls.bands = []

    def spy(extractor, image, **kwargs):
        calls.append((tuple(image.shape[2:]), kwargs["tile"]))
        return tiled_features(extractor, image, **kwargs)

    def stream_spy(extractor, image, **kwargs):
        calls.append((tuple(image.shape[2:]), kwargs["tile"]))
        calls.bands.append(kwargs["bands"])
        return stream_tiled(extractor, image, **kwargs)

    monkeypatch.setattr(featx.extract.engine, "tiled_features", spy)
    monkeypatch.setattr(featx.extract.engine, "stream_tiled", stream_spy)
    return calls


@pytest.mark.parametrize("reduce", ["none", "gap"])
def test_tiles_forced_by_a_small_budget_give_the_untiled_features(images, tmp_path, reduce, tiled_calls):
    untiled = run(images, tmp_path / "untiled", reduce=reduce, tile="off")
    assert tiled_calls == []
    # a budget just above what the process holds: the 300x260 image (about 110 MiB untiled with its
    # maps stored, 60 MiB with descriptors) must be tiled; the small one is not
    budget = current_rss() + (80 if reduce == "none" else 40) * 2**20
    tiled = run(images, tmp_path / "tiled", reduce=reduce, max_memory=budget)
    assert untiled.ok == tiled.ok == 2
    assert [size for size, _ in tiled_calls] == [(300, 260)]  # the big image only, in tiles
    for name in ("big.png", "small.png"):
        expected, _ = load_features(tmp_path / "untiled" / f"{name}.safetensors")
        got, meta = load_features(tmp_path / "tiled" / f"{name}.safetensors")
        assert meta["reduce"] == reduce
        for tap, value in expected.items():
            assert got[tap].shape == value.shape and rel(got[tap], value) < 1e-5, (name, tap)


def test_explicit_tile_size(images, tmp_path, tiled_calls):
    untiled = run(images, tmp_path / "untiled", tile="off")
    tiled = run(images, tmp_path / "tiled", tile=64, max_memory="64GiB")
    assert untiled.ok == tiled.ok == 2
    assert tiled_calls == [((300, 260), 64)]  # 40x36 is below the tile size: one pass
    assert tiled_calls.bands == [True]  # 64 GiB: the maps are written in full-width bands
    expected, _ = load_features(tmp_path / "untiled" / "big.png.safetensors")
    got, _ = load_features(tmp_path / "tiled" / "big.png.safetensors")
    assert all(rel(got[tap], value) < 1e-5 for tap, value in expected.items())


def test_batches_hold_what_the_budget_allows():
    sizes = [(8, 8)] * 5 + [(4, 4)] * 3
    assert make_batches(sizes, 8) == [[0, 1, 2, 3, 4], [5, 6, 7]]
    assert make_batches(sizes, 8, limits={(8, 8): 2, (4, 4): 8}) == [[0, 1], [2, 3], [4], [5, 6, 7]]


def test_a_budget_below_the_process_is_refused(images, tmp_path):
    with pytest.raises(ValueError, match=r"max_memory 1 MiB is below what the process already uses"):
        run(images, tmp_path / "out", max_memory="1MiB")


def test_cli_flags(images, tmp_path):
    out = tmp_path / "cli"
    result = CliRunner().invoke(
        cli, ["extract", str(images), str(out), "--weights", "random", "--taps", "relu1_1", "--tile", "64", "--workers", "0"]
    )
    assert result.exit_code == 0, result.output
    bad = CliRunner().invoke(cli, ["extract", str(images), str(tmp_path / "x"), "--weights", "random", "--max-memory", "lots"])
    assert bad.exit_code == 2 and "a memory size such as '4GiB'" in bad.output


def test_workers_that_do_not_fit_the_budget_are_not_started(images, tmp_path):
    from featx.errors import FeatxWarning

    budget = current_rss() + 300 * 2**20  # room for the work, not for two 200 MiB workers
    with pytest.warns(FeatxWarning, match=r"leaves room for 0 of the 2 decoding workers"):
        summary = extract_features(
            [images], tmp_path / "out", ExtractOptions(weights=None, taps="relu1_1", num_workers=2, max_memory=budget)
        )
    assert summary.ok == 2


def test_maps_larger_than_the_budget_are_streamed_into_the_file(images, tmp_path, tiled_calls, monkeypatch):
    import featx.extract.engine
    import featx.extract.memory_plan
    from featx.backbones.vgg.features import VGGFeatures
    from featx.extract.budget import stored_bytes

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vgg = VGGFeatures("vgg19", "relu1_1,relu3_1", weights=None)
    maps = stored_bytes(vgg, 300, 260, reduce="none")  # 20.8 MB of fp32 maps for the big image
    untiled = run(images, tmp_path / "untiled", tile="off")
    monkeypatch.setattr(featx.extract.memory_plan, "current_rss", lambda: 0)  # the budget is all work
    budget = maps * 9 // 10  # the maps cannot be held, let alone stitched and serialised
    streamed = run(images, tmp_path / "streamed", max_memory=budget)
    assert untiled.ok == streamed.ok == 2 and streamed.errors == 0
    assert [size for size, _ in tiled_calls] == [(300, 260)]
    assert tiled_calls.bands == [False]  # no room for a band of full-width rows: written tile by tile
    for name in ("big.png", "small.png"):
        expected, expected_meta = load_features(tmp_path / "untiled" / f"{name}.safetensors")
        got, meta = load_features(tmp_path / "streamed" / f"{name}.safetensors")
        assert meta == expected_meta  # the same header, metadata and shapes
        assert all(got[tap].shape == value.shape and rel(got[tap], value) < 1e-5 for tap, value in expected.items())
    # a rerun finds the streamed file up to date
    again = run(images, tmp_path / "streamed", max_memory=budget, resume=True)
    assert again.skipped == 2 and again.ok == 0


def test_a_full_disk_while_streaming_is_an_error_record_and_nothing_is_left(images, tmp_path, monkeypatch):
    import errno
    import json
    import os

    def no_space(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_space, raising=False)  # only streamed files reserve space
    summary = run(images, tmp_path / "out", tile=64)
    assert summary.ok == 1 and summary.errors == 1
    records = {r["path"]: r for r in map(json.loads, (tmp_path / "out" / "manifest.jsonl").read_text().splitlines())}
    assert records["big.png"]["status"] == "error"
    assert "cannot write" in records["big.png"]["error"] and "No space left on device" in records["big.png"]["error"]
    assert sorted(os.listdir(tmp_path / "out")) == [
        "featx-owner.json", "featx.lock", "manifest.jsonl", "small.png.safetensors", "summary.json"
    ]  # fmt: skip


# The peak is VmHWM, the high-water mark of this process's own memory map: getrusage's ru_maxrss
# would also count the RSS of the (forked) test runner before exec.
_PEAK_SCRIPT = """
import json, sys, warnings
from featx.extract import ExtractOptions, extract_features
from featx.extract.budget import current_rss
def vm_hwm():
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) * 1024 for line in handle if line.startswith("VmHWM:"))
warnings.simplefilter("ignore")
options = dict(weights=None, num_workers=0, taps="relu1_1", tile=sys.argv[3], max_memory=current_rss() + 200 * 2**20)
before = vm_hwm()
summary = extract_features([sys.argv[1]], sys.argv[2], ExtractOptions(**options))
print(json.dumps({"ok": summary.ok, "before": before, "peak": vm_hwm()}))
"""


def test_streaming_keeps_the_peak_far_below_the_maps(tmp_path):
    """One 1600x1600 image: its relu1_1 maps are 625 MiB in fp32. Streamed, the high-water mark of
    the process grows by the 200 MiB budget at most (one band of rows and one tile's pass);
    stitched in memory it would grow by the maps at least. The limit, 400 MiB, is below the maps
    alone, so it holds on any machine whose allocator does not keep freed tiles."""
    import json
    import subprocess
    import sys

    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (1600, 1600, 3), dtype=np.uint8)).save(folder / "x.png")
    done = subprocess.run(
        [sys.executable, "-c", _PEAK_SCRIPT, str(folder), str(tmp_path / "out"), "auto"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.splitlines()[-1])
    maps = 64 * 1600 * 1600 * 4
    assert result["ok"] == 1
    assert (tmp_path / "out" / "x.png.safetensors").stat().st_size > maps
    assert result["peak"] - result["before"] < 400 * 2**20 < maps
