"""The tile geometry, proven over its whole domain rather than sampled: for any VGG arch (with or
without batch norm), pooling, tap set, tile size, image size and descriptor, tiled extraction
equals one untiled pass, or is refused before any compute with a clear reason.

The reference is the same extractor run once on the whole image (random weights, float64 so that
only the tiling could make a difference: relative error < 1e-10; fp32 comparisons allow 1e-5, the
rounding of convolutions picked per input size). Hypothesis explores the domain; the regression
case of issue 18 (a last tile row thinner than the deepest stride) is a regular test, through the
CLI.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from featx.backbones.vgg.features import VGGFeatures
from featx.backbones.vgg.layers import ARCHS, POOLINGS, layer_specs, min_input_size
from featx.errors import FeatxValueError
from featx.extract.descriptors import reduce_features
from featx.extract.streaming import stream_tiled
from featx.extract.tiling import TILE_DESCRIPTORS, tile_cores, tile_geometry, tiled_features
from featx.io.discovery import ImageSource
from featx.io.featfile import load_features
from featx_cli.main import cli


def build(arch: str, taps: list[str], pooling: str, dtype: torch.dtype = torch.float64) -> VGGFeatures:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random weights warn
        torch.manual_seed(0)
        vgg = VGGFeatures(arch, taps, weights=None, pooling=pooling, requires_grad=pooling == "conv")
    return vgg.to(dtype).eval()


def rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    scale = float(b.double().norm())
    return float((a.double() - b.double()).norm()) / max(scale, 1e-300)


THIN_LAST_TILE = ("vgg11", "max", ["relu1_1", "relu2_1"], 5, 9, 4, "gmp")
"""Tiles of 4 rows over 5: the last holds 1 image row, fewer than relu2_1's stride of 2."""


@st.composite
def cases(draw):
    """An extractor's configuration, an image that it accepts or not, and a tile side that is a
    multiple of the deepest tap's stride (4 in 5 draws) or any side (refused unless a multiple)."""
    arch = draw(st.sampled_from(ARCHS))
    pooling = draw(st.sampled_from(POOLINGS))
    names = [spec.name for spec in layer_specs(arch, pooling=pooling)]
    # shallow layers are drawn more often: deep ones at full resolution ("none") are slow in float64
    depth = draw(st.integers(min_value=1, max_value=len(names)))
    taps = sorted(set(draw(st.lists(st.sampled_from(names[:depth]), min_size=1, max_size=3))), key=names.index)
    geometry = tile_geometry(arch, taps[-1], pooling=pooling)
    smallest = min_input_size(arch, taps[-1], pooling=pooling)
    top = 40 if pooling == "none" else 72
    height = draw(st.integers(min_value=max(1, smallest - 2), max_value=max(top, smallest + 8)))
    width = draw(st.integers(min_value=max(1, smallest - 2), max_value=max(top, smallest + 8)))
    if draw(st.integers(0, 4)):
        tile = geometry.stride * draw(st.integers(min_value=1, max_value=max(1, 48 // geometry.stride)))
    else:
        tile = draw(st.integers(min_value=1, max_value=64))
    reduce = draw(st.sampled_from(TILE_DESCRIPTORS))
    return arch, pooling, taps, height, width, tile, reduce


def untiled(vgg: VGGFeatures, x: torch.Tensor, reduce: str) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return reduce_features(vgg(x), reduce)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
@example(THIN_LAST_TILE)
def test_tiled_equals_untiled_or_is_refused_up_front(case):
    arch, pooling, taps, height, width, tile, reduce = case
    vgg = build(arch, taps, pooling)
    x = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(height * 1000 + width), dtype=torch.float64)
    geometry = tile_geometry(arch, taps[-1], pooling=pooling)
    if tile % geometry.stride:
        with pytest.raises(FeatxValueError, match=r"tile must be a multiple of the deepest tap's stride"):
            tiled_features(vgg, x, tile=tile, reduce=reduce)
        return
    if min(height, width) < vgg.min_input_size:  # the extractor refuses it, tiled or not
        with pytest.raises(ValueError, match=r"smaller than|at least|minimum"):
            tiled_features(vgg, x, tile=tile, reduce=reduce)
        return
    expected = untiled(vgg, x, reduce)
    got = tiled_features(vgg, x, tile=tile, reduce=reduce)
    assert list(got) == list(expected)
    # maps and maxima are float64 both ways; averages and Gram matrices are float32 descriptors
    # (reduce_features computes them in float32), summed in another order over tiles
    tolerance = 1e-10 if reduce in ("none", "gmp") else 1e-5
    for name, value in expected.items():
        assert got[name].shape == value.shape, (name, got[name].shape, value.shape)
        assert rel_error(got[name], value) < tolerance, (name, rel_error(got[name], value))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
@example(THIN_LAST_TILE)
def test_tile_cores_cover_every_map_exactly_once_with_non_empty_pieces(case):
    """What the streamed path writes: every core is non-empty and the cores of a tap tile its map."""
    arch, pooling, taps, height, width, tile, _ = case
    geometry = tile_geometry(arch, taps[-1], pooling=pooling)
    smallest = min_input_size(arch, taps[-1], pooling=pooling)
    if tile % geometry.stride or min(height, width) < smallest:
        return  # refused, as the test above checks
    vgg = build(arch, taps, pooling)
    x = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    expected = untiled(vgg, x, "none")
    covered = {name: torch.zeros(value.shape[2:], dtype=torch.int64) for name, value in expected.items()}
    for name, core, (top, bottom, left, right) in tile_cores(vgg, x, tile=tile):
        assert bottom > top and right > left and core.numel() > 0, (name, (top, bottom, left, right))
        assert core.shape[2:] == (bottom - top, right - left)
        covered[name][top:bottom, left:right] += 1
        assert rel_error(core, expected[name][:, :, top:bottom, left:right]) < 1e-10
    for name, count in covered.items():
        assert bool((count == 1).all()), name


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(case=cases(), bands=st.booleans())
def test_streamed_file_equals_the_untiled_maps(tmp_path, case, bands):
    """``reduce="none"`` as ``featx extract`` runs it: the tiles streamed into a feature file."""
    arch, pooling, taps, height, width, tile, _ = case
    geometry = tile_geometry(arch, taps[-1], pooling=pooling)
    if tile % geometry.stride or min(height, width) < min_input_size(arch, taps[-1], pooling=pooling):
        return
    vgg = build(arch, taps, pooling, dtype=torch.float32)
    x = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(3))
    path = tmp_path / f"{arch}-{pooling}-{height}x{width}-{tile}-{bands}.safetensors"
    source = ImageSource("/in/a.png", "a.png")
    record = stream_tiled(
        vgg, x, tile=tile, bands=bands, path=path, metadata={"k": "v"}, store=torch.float32, fsync=False, source=source
    )
    assert record["status"] == "ok", record
    expected = untiled(vgg, x, "none")
    got, _ = load_features(path)
    for name, value in expected.items():
        assert got[name].shape == value.shape[1:]
        assert rel_error(got[name], value[0]) < 1e-5, name


def _cli(folder, out, *extra):
    args = ["extract", str(folder), str(out), "--weights", "random", "--workers", "0", "--quiet"]
    return CliRunner().invoke(cli, [*args, "--taps", "relu3_1,relu4_1", *extra])


@pytest.mark.parametrize("reduce", ["none", "gmp"])
def test_a_last_tile_row_thinner_than_the_deepest_stride(tmp_path, reduce):
    """Issue 18, case 3, shrunk: 342 rows in tiles of 336 leave a last row of 6 image rows, fewer
    than relu4_1's stride of 8, so relu4_1 has no rows in it. It used to get a 0-row piece that
    the feature stream refused, ending the run with nothing written for any image."""
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (342, 400, 3), dtype=np.uint8)).save(folder / "a.png")
    Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(folder / "b.png")
    tiled = _cli(folder, tmp_path / "tiled", "--reduce", reduce, "--tile", "336")
    assert tiled.exit_code == 0, tiled.output
    reference = _cli(folder, tmp_path / "untiled", "--reduce", reduce, "--tile", "off")
    assert reference.exit_code == 0, reference.output
    records = [json.loads(line) for line in (tmp_path / "tiled" / "manifest.jsonl").read_text().splitlines()]
    assert [r["status"] for r in records] == ["ok", "ok"]
    for name in ("a.png", "b.png"):
        expected, _ = load_features(tmp_path / "untiled" / f"{name}.safetensors")
        got, _ = load_features(tmp_path / "tiled" / f"{name}.safetensors")
        for tap, value in expected.items():
            assert got[tap].shape == value.shape
            assert rel_error(got[tap], value) < 1e-5, (name, tap)


def test_any_failure_of_one_streamed_image_is_its_error_record(tmp_path, monkeypatch):
    """Not only OSError: a failure while computing one image's tiles is that image's error and
    the run goes on with the other images."""
    import featx.extract.streaming

    def broken(*args, **kwargs):
        raise RuntimeError("a tile that cannot be computed")
        yield  # pragma: no cover

    monkeypatch.setattr(featx.extract.streaming, "tile_cores", broken)
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (120, 100, 3), dtype=np.uint8)).save(folder / "big.png")
    Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(folder / "small.png")
    result = _cli(folder, tmp_path / "out", "--tile", "64")
    assert result.exit_code == 1, result.output
    records = {r["path"]: r for r in map(json.loads, (tmp_path / "out" / "manifest.jsonl").read_text().splitlines())}
    assert records["small.png"]["status"] == "ok"
    assert records["big.png"]["status"] == "error"
    assert records["big.png"]["error"] == "cannot extract features (RuntimeError: a tile that cannot be computed)"
    assert not (tmp_path / "out" / "big.png.safetensors").exists()
