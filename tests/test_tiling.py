"""featx.extract.tiling: tiled features equal one untiled pass of the same extractor.

The reference is the extractor itself run on the whole image (random weights; the same module,
so only the tiling can differ). fp32 comparisons allow 1e-5 relative error (different input sizes
may pick different convolution kernels); the float64 comparison is tight.
"""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch

from featx.backbones.vgg.features import VGGFeatures
from featx.backbones.vgg.layers import POOLINGS
from featx.extract.descriptors import reduce_features
from featx.extract.tiling import TileGeometry, tap_sizes, tile_geometry, tile_spans, tiled_features

# one tap in every VGG block
TAPS = ["relu1_1", "relu2_1", "relu3_2", "relu4_2", "relu5_1"]


def extractor(arch: str, taps, pooling: str = "max", dtype=torch.float32) -> VGGFeatures:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        vgg = VGGFeatures(arch, taps, weights=None, pooling=pooling, requires_grad=pooling == "conv")
    return vgg.to(dtype).eval()


def rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def image(height: int, width: int, dtype=torch.float32) -> torch.Tensor:
    return torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(1), dtype=dtype)


@pytest.mark.parametrize("pooling", POOLINGS)
def test_tiled_equals_untiled_for_every_pooling_and_block(pooling):
    vgg = extractor("vgg11", TAPS, pooling)
    geometry = tile_geometry("vgg11", "relu5_1", pooling=pooling)
    # two tiles per axis whose shared edge has a full halo of image on both sides, and sizes
    # that are not multiples of the stride
    tile = geometry.halo + geometry.stride
    x = image(tile + geometry.halo + 13, tile + geometry.halo + 7)
    assert len(list(tile_spans(x.shape[2], tile, geometry))) >= 2
    with torch.no_grad():
        expected = vgg(x)
    tiled = tiled_features(vgg, x, tile=tile)
    assert list(tiled) == TAPS
    for name in TAPS:
        assert tiled[name].shape == expected[name].shape, name
        assert rel_error(tiled[name], expected[name]) < 1e-5, (pooling, name)


def test_float64_tiling_is_exact_with_batch_norm_in_eval_mode():
    vgg = extractor("vgg13_bn", ["conv1_2", "relu2_2", "pool2", "relu3_1"], dtype=torch.float64)
    geometry = tile_geometry("vgg13_bn", "relu3_1")
    tile = geometry.halo + geometry.stride
    x = image(tile + geometry.halo + 5, tile + geometry.halo + 3, torch.float64)
    with torch.no_grad():
        expected = vgg(x)
    tiled = tiled_features(vgg, x, tile=tile)
    for name, value in expected.items():
        torch.testing.assert_close(tiled[name], value, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("reduce", ["gap", "gmp", "gram"])
def test_descriptors_accumulated_over_tiles_equal_untiled(reduce):
    vgg = extractor("vgg11", ["relu1_1", "relu3_1"])
    x = image(75, 58)
    with torch.no_grad():
        expected = reduce_features(vgg(x), reduce)  # what featx extract stores untiled
    tiled = tiled_features(vgg, x, tile=16, reduce=reduce)
    for name, value in expected.items():
        assert tiled[name].shape == value.shape and tiled[name].dtype == torch.float32
        assert rel_error(tiled[name], value) < 1e-5, name


def test_a_halo_below_the_receptive_field_is_not_exact(monkeypatch):
    """The checks above can fail: in float64, where the full halo agrees to rounding, a halo below
    the receptive field changes the stitched features."""
    import featx.extract.tiling

    vgg = extractor("vgg11", ["relu3_1"], dtype=torch.float64)
    x = image(80, 80, torch.float64)
    with torch.no_grad():
        expected = vgg(x)["relu3_1"]
    assert rel_error(tiled_features(vgg, x, tile=16)["relu3_1"], expected) < 1e-13
    geometry = tile_geometry("vgg11", "relu3_1")
    # the halo that reaches the context of the core's last outputs is 7 here (the radius bound, 10,
    # counts the 2x2 pools' one-sided reach on both sides); one stride is too little
    short = dataclasses.replace(geometry, halo=geometry.stride)
    monkeypatch.setattr(featx.extract.tiling, "tile_geometry", lambda *args, **kwargs: short)
    assert rel_error(tiled_features(vgg, x, tile=16)["relu3_1"], expected) > 1e-9


@pytest.mark.parametrize("pooling", POOLINGS)
def test_tap_sizes_match_real_outputs(pooling):
    vgg = extractor("vgg11", ["relu2_1", "relu3_1"], pooling)
    for height, width in [(17, 23), (16, 9), (33, 32)]:
        with torch.no_grad():
            real = {name: tuple(f.shape[2:]) for name, f in vgg(image(height, width)).items()}
        assert tap_sizes(vgg, height, width) == real


def test_spans_cover_the_axis_with_aligned_clipped_halos():
    geometry = TileGeometry(stride=8, radius=20, halo=24)
    spans = list(tile_spans(100, 32, geometry))
    cores = [(a, b) for a, b, _, _ in spans]
    assert cores == [(0, 32), (32, 64), (64, 96), (96, 100)]
    for start, end, ext_start, ext_end in spans:
        assert ext_start % 8 == 0 and ext_start == max(0, start - 24) and ext_end == min(100, end + 24)


def test_bad_arguments_are_reported():
    vgg = extractor("vgg11", ["relu2_1"])
    with pytest.raises(ValueError, match=r"tile must be a multiple of the deepest tap's stride 2, got 7"):
        tiled_features(vgg, image(20, 20), tile=7)
    with pytest.raises(ValueError, match=r"one image of shape \(1, 3, H, W\), got \(2, 3, 8, 8\)"):
        tiled_features(vgg, torch.rand(2, 3, 8, 8), tile=8)
    with pytest.raises(ValueError, match="unknown reduce 'mean'"):
        tiled_features(vgg, image(20, 20), tile=8, reduce="mean")
    with pytest.raises(TypeError, match="tile must be an integer >= 1"):
        tiled_features(vgg, image(20, 20), tile=8.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bn = VGGFeatures("vgg11_bn", ["relu2_1"], weights=None, requires_grad=True).train()  # learnable: trains
    with pytest.raises(ValueError, match=r"needs eval mode for batch norm"):
        tiled_features(bn, image(20, 20), tile=8)
