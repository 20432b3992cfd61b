"""The memory budget's model, one test per gap that mutation testing found (issue 18, item 12):
the tile halo counted on both sides, decoding workers' memory subtracted from the budget, the
budget divided among the ranks of a node under torchrun, and an EXIF-rotated image that needs
tiles tiled at its upright size. Each test fails on the mutant named in its docstring.

The references are by hand: a tile of side ``t`` is computed with ``t + 2 * halo`` pixels of
input per axis (:func:`featx.extract.tiling.tile_spans`), and tiled features equal an untiled run
of the same extractor (``tile="off"``, fp32: relative error < 1e-5).
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import featx.extract.budget as budget_module
import featx.extract.engine as engine
import featx.extract.memory_plan as memory_plan_module
from featx.backbones.vgg.features import VGGFeatures
from featx.extract import ExtractOptions, extract_features
from featx.extract.budget import WORKER_BYTES, choose_tile, streamed_bytes
from featx.extract.plan import ImagePlan
from featx.extract.tiling import tile_geometry
from featx.io.featfile import load_features

TAPS = ["relu1_1", "relu3_1"]


def vgg19() -> VGGFeatures:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return VGGFeatures("vgg19", TAPS, weights=None)


@pytest.fixture()
def forward_sides(monkeypatch):
    """The ``(height, width)`` of every forward pass the budget model prices."""
    calls: list[tuple[int, int]] = []
    real = budget_module.forward_bytes

    def spy(extractor, height, width, **kwargs):
        calls.append((height, width))
        return real(extractor, height, width, **kwargs)

    monkeypatch.setattr(budget_module, "forward_bytes", spy)
    return calls


def test_a_streamed_tile_is_priced_with_its_halo_on_both_sides(forward_sides):
    """Mutant: ``side = tile + halo`` in :func:`streamed_bytes` (tiles up to 10.7 % over budget)."""
    halo = tile_geometry("vgg19", "relu3_1").halo
    streamed_bytes(vgg19(), 1000, 900, 64, bands=False)
    assert forward_sides == [(64 + 2 * halo, 64 + 2 * halo)]


@pytest.mark.parametrize("budget_mib", [300, 400, 600])
def test_a_chosen_descriptor_tile_fits_with_its_halo_on_both_sides(forward_sides, budget_mib):
    """Mutant: ``side = tile + halo`` in :func:`choose_tile`: the tile chosen must fit the budget
    priced with the full extended side."""
    vgg, halo = vgg19(), tile_geometry("vgg19", "relu3_1").halo
    budget = budget_mib * 2**20
    tile = choose_tile(vgg, 1500, 1400, budget, reduce="gap")
    assert tile is not None
    side = tile + 2 * halo
    assert (side, side) in forward_sides
    whole = budget_module.image_bytes(vgg, 1500, 1400, reduce="gap")
    kept = whole - budget_module.forward_bytes(vgg, 1500, 1400)
    assert kept + int(budget_module.TILE_OVERHEAD * budget_module.forward_bytes(vgg, side, side)) <= budget


def _work_budget(monkeypatch, *, workers: int, local_world: str, max_memory: int = 2 * 2**30) -> int:
    """The budget ``memory_plan`` hands to :func:`choose_tile` (the process's own memory fixed at 300 MiB)."""
    seen = []

    def spy(extractor, height, width, budget, **kwargs):
        seen.append(budget)
        return choose_tile(extractor, height, width, budget, **kwargs)

    monkeypatch.setattr(budget_module, "choose_tile", spy)
    monkeypatch.setattr(memory_plan_module, "current_rss", lambda: 300 * 2**20)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", local_world)
    options = ExtractOptions(weights=None, taps=TAPS, num_workers=workers, max_memory=max_memory)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        memory_plan_module.memory_plan([ImagePlan("todo", size=(1356, 2040))], vgg19(), options, torch.device("cpu"))
    assert seen
    return seen[-1]  # the last pass: after what the workers hold ready is subtracted


def test_decoding_workers_are_subtracted_from_the_budget(monkeypatch):
    """Mutant: ``work = budget - own`` (the workers' interpreters and decoding not counted)."""
    alone = _work_budget(monkeypatch, workers=0, local_world="1")
    with_workers = _work_budget(monkeypatch, workers=2, local_world="1")
    assert alone - with_workers >= 2 * WORKER_BYTES


def test_the_budget_is_shared_by_the_ranks_of_a_node(monkeypatch):
    """Mutant: the budget not divided by ``LOCAL_WORLD_SIZE`` (each of 4 ranks would take the node's)."""
    own = 300 * 2**20
    one = _work_budget(monkeypatch, workers=0, local_world="1")
    four = _work_budget(monkeypatch, workers=0, local_world="4")
    assert one + own <= 2 * 2**30
    assert four + own <= 2 * 2**30 // 4
    assert four < one / 3


def test_an_exif_rotated_image_that_needs_tiles_is_tiled(tmp_path, monkeypatch):
    """Stored 90x200 with EXIF orientation 6, decoded upright as 200x90: the plan (made from the
    header) must tile it at its decoded size. Mutant: tiles only keyed by the stored size."""
    from featx.extract.streaming import stream_tiled

    folder = tmp_path / "in"
    folder.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    pixels = np.random.default_rng(0).integers(0, 256, (90, 200, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / "turned.png", exif=exif)
    calls = []

    def spy(extractor, image, **kwargs):
        calls.append((tuple(image.shape[2:]), kwargs["tile"]))
        return stream_tiled(extractor, image, **kwargs)

    monkeypatch.setattr(engine, "stream_tiled", spy)

    def run(out, tile):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            options = ExtractOptions(weights=None, num_workers=0, taps=TAPS, tile=tile)
            return extract_features([folder], tmp_path / out, options)

    assert run("tiled", "64").ok == 1
    assert calls == [((200, 90), 64)]  # tiled, at its upright size
    assert run("untiled", "off").ok == 1 and len(calls) == 1
    expected, _ = load_features(tmp_path / "untiled" / "turned.png.safetensors")
    got, meta = load_features(tmp_path / "tiled" / "turned.png.safetensors")
    assert (meta["source_height"], meta["source_width"]) == ("90", "200")  # as stored, before orientation
    for tap, value in expected.items():
        assert value.shape[1:] == got[tap].shape[1:] and value.shape[1] > value.shape[2]  # upright: taller than wide
        assert float((got[tap].double() - value.double()).norm() / value.double().norm()) < 1e-5
    records = [json.loads(line) for line in (tmp_path / "tiled" / "manifest.jsonl").read_text().splitlines()]
    assert records[0]["status"] == "ok"


def test_fewer_workers_when_the_largest_image_would_not_fit_beside_them(monkeypatch):
    """3x 2040x1356, 640x480 and 4000x3000 at 2 GiB with 650 MiB already used: two workers, each
    with the 4000x3000 image's decoding peak, would leave less than its smallest tile needs; the
    plan decodes in fewer workers instead of refusing the run."""
    from featx.errors import FeatxWarning

    monkeypatch.setattr(memory_plan_module, "current_rss", lambda: 650 * 2**20)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    plans = [ImagePlan("todo", size=size) for size in [(1356, 2040)] * 3 + [(480, 640), (3000, 4000)]]
    options = ExtractOptions(weights=None, num_workers=2, max_memory="2GiB")
    with pytest.warns(FeatxWarning, match=r"worker process"):
        memory = memory_plan_module.memory_plan(plans, vgg19(), options, torch.device("cpu"))
    assert memory.workers < 2 and (3000, 4000) in memory.tiles
