"""featx.extract.budget: sizes, the activation model, batch limits and tile choice.

The byte counts are derived by hand from the layer list (each tensor is C x H x W x 4 bytes in
float32); the model's agreement with a measured peak is a benchmark, not a test.
"""

from __future__ import annotations

import warnings

import pytest

from featx.backbones.vgg.features import VGGFeatures
from featx.extract.budget import (
    CONV_WORKSPACE,
    choose_tile,
    forward_bytes,
    image_bytes,
    images_per_batch,
    parse_size,
    stored_bytes,
    streamed_bytes,
)
from featx.extract.tiling import tile_geometry


def extractor(taps, arch="vgg11"):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return VGGFeatures(arch, taps, weights=None)


def test_parse_size_units_and_errors():
    assert parse_size("4GiB") == 4 * 2**30 and parse_size("512 MiB") == 512 * 2**20
    assert parse_size("3GB") == 3 * 10**9 and parse_size("1.5g") == 1_500_000_000 and parse_size(2**21) == 2**21
    with pytest.raises(ValueError, match=r"a memory size such as '4GiB'.*got '4 parsecs'"):
        parse_size("4 parsecs")
    with pytest.raises(ValueError, match="at least 1 MiB"):
        parse_size("12KB")


def test_forward_bytes_by_hand():
    # vgg11 on 8x8: input 3*64*4 = 768 B, conv1_1 64*64*4 = 16384 B, counted twice while it runs
    conv = CONV_WORKSPACE * 16384
    assert forward_bytes(extractor(["relu1_1"]), 8, 8) == 768 + conv  # the ReLU is in place over conv1_1
    assert forward_bytes(extractor(["conv1_1"]), 8, 8) == 768 + conv
    # a tapped conv keeps its output, so the ReLU after it allocates its own
    assert forward_bytes(extractor(["conv1_1", "relu1_1"]), 8, 8) == max(768 + conv, 2 * 16384)
    # to relu2_1: relu1_1 (kept, 16384 B) + pool1's 64 x 4 x 4 map (4096 B) + conv2_1's 128 x 4 x 4 (8192 B)
    assert forward_bytes(extractor(["relu1_1", "relu2_1"]), 8, 8) == max(768 + conv, 16384 + 4096 + CONV_WORKSPACE * 8192)


def test_image_bytes_counts_what_is_stored():
    vgg = extractor(["relu1_1", "relu2_1"])
    maps = (64 * 8 * 8 + 128 * 4 * 4) * 4
    decoded = 2 * 3 * 8 * 8 * 4
    assert image_bytes(vgg, 8, 8, reduce="none") == decoded + forward_bytes(vgg, 8, 8) + 2 * maps
    assert image_bytes(vgg, 8, 8, reduce="gap") == decoded + forward_bytes(vgg, 8, 8) + 2 * (64 + 128) * 4
    assert image_bytes(vgg, 8, 8, reduce="gram") == decoded + forward_bytes(vgg, 8, 8) + 2 * (64**2 + 128**2) * 4


def test_batches_and_tiles_fit_the_budget():
    assert images_per_batch(300, 1000, batch_size=8) == 3 and images_per_batch(5000, 1000, batch_size=8) == 1
    vgg = extractor(["relu1_1", "relu3_1"], arch="vgg19")
    budget = 64 * 2**20
    assert choose_tile(vgg, 64, 64, budget, reduce="gap") is None  # fits untiled
    tile = choose_tile(vgg, 1200, 1000, budget, reduce="gap")
    geometry = tile_geometry("vgg19", "relu3_1")
    assert tile is not None and tile % geometry.stride == 0 and tile >= geometry.stride
    assert image_bytes(vgg, 1200, 1000, reduce="gap") > budget
    # reduce="none" streams the maps into the file: only the decoded pixels and one tile must fit
    assert stored_bytes(vgg, 1200, 1000, reduce="none") > budget
    tile = choose_tile(vgg, 1200, 1000, budget, reduce="none")
    assert tile is not None and streamed_bytes(vgg, 1200, 1000, tile, bands=False) <= budget
    with pytest.raises(ValueError, match=r"an image of 4000x4000 needs at least \d+ MiB with the smallest tile "
                       r"\(its decoded pixels alone take 367 MiB\); the budget is 64 MiB: raise max_memory$"):
        choose_tile(vgg, 4000, 4000, budget, reduce="none")  # 2 x 3 x 4000 x 4000 float32 alone exceed 64 MiB
