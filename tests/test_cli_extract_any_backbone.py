"""`featx extract --arch ARCH` for backbone families other than VGG, through the command line.

Reference features come from the family's extractor, built with the catalog
(``featx.backbones.catalog.build_backbone``) and loaded from the same checkpoint file the command
loads (random weights saved with ``torch.save`` of its state dict), run on
``featx.io.images.load_image`` output: the saved tensors must equal them, and the metadata must
name the family's arch, taps and weights.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from featx.backbones.catalog import build_backbone
from featx.extract import feature_path
from featx.extract.budget import current_rss
from featx.io.featfile import load_features
from featx.io.images import load_image
from featx_cli.main import cli

pytestmark = pytest.mark.filterwarnings("ignore::featx.errors.RandomWeightsWarning")


def invoke(*args):
    return CliRunner().invoke(cli, ["extract", *map(str, args)], catch_exceptions=False)


def images(root, sizes) -> list[str]:
    """Random RGB PNGs of the given (H, W) sizes; returns their names."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    names = []
    for i, (height, width) in enumerate(sizes):
        name = f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(root / name)
        names.append(name)
    return names


def checkpoint(tmp_path, arch, taps):
    """A random checkpoint of ``arch`` up to ``taps`` in the real format (a torch.save'd state dict)."""
    torch.manual_seed(11)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_backbone(arch, taps, weights=None)
    path = tmp_path / f"random_{arch}.pth"
    torch.save(model.state_dict(), path)
    return path


def manifest(out):
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(
    ("arch", "taps", "sizes"),
    [
        ("alexnet", "relu1,relu2", [(67, 80), (67, 80), (70, 64)]),
        ("squeezenet1_1", "relu1,fire3", [(35, 40), (48, 36)]),
        ("dinov2_vits14", "blocks.0,blocks.1.cls,blocks.1.tokens", [(28, 42), (30, 28)]),
    ],
)
def test_extract_any_family_equals_its_extractor(tmp_path, arch, taps, sizes):
    names = images(tmp_path / "in", sizes)
    ckpt = checkpoint(tmp_path, arch, taps)
    out = tmp_path / "out"
    result = invoke(tmp_path / "in", out, "--arch", arch, "--taps", taps, "--weights", ckpt, "--workers", "0")
    assert result.exit_code == 0, result.output
    assert f"{len(names)} images: {len(names)} extracted" in result.stdout
    model = build_backbone(arch, taps, weights=str(ckpt))
    assert model.weights_id.startswith("file:")
    for name in names:
        with torch.no_grad():
            expected = model(load_image(tmp_path / "in" / name)[None])
        tensors, meta = load_features(feature_path(out, name))
        assert (meta["arch"], meta["taps"], meta["pooling"]) == (arch, taps, "n/a")
        assert meta["weights_id"] == model.weights_id and meta["weights_sha256"] == model.weights_sha256
        assert sorted(tensors) == sorted(expected)  # safetensors keeps its keys sorted
        for tap, feat in expected.items():
            # same weights file; a batched channels-last forward may differ in the last bits only
            torch.testing.assert_close(tensors[tap], feat[0], rtol=1e-4, atol=1e-5)
    rerun = invoke(tmp_path / "in", out, "--arch", arch, "--taps", taps, "--weights", ckpt, "--workers", "0")
    assert rerun.exit_code == 0 and f"0 extracted, {len(names)} skipped" in rerun.stdout


def test_preset_of_another_family(tmp_path):
    images(tmp_path / "in", [(40, 40)])
    result = invoke(tmp_path / "in", tmp_path / "out", "--preset", "lpips_squeeze", "--weights", "random",
                    "--reduce", "gap", "--workers", "0")  # fmt: skip
    assert result.exit_code == 0, result.output
    tensors, meta = load_features(feature_path(tmp_path / "out", "img0.png"))
    assert meta["arch"] == "squeezenet1_1" and meta["taps"] == "relu1,fire3,fire5,fire6,fire7,fire8,fire9"
    assert meta["weights_id"] == "random" and tensors["fire9"].shape == (512,)


def test_family_without_default_taps_asks_for_them(tmp_path):
    images(tmp_path / "in", [(40, 40)])
    result = invoke(tmp_path / "in", tmp_path / "out", "--arch", "alexnet", "--weights", "random")
    assert result.exit_code == 2
    assert "arch 'alexnet' has no default taps: name them with taps= (--taps)" in result.output
    assert "conv1, relu1, pool1" in result.output and not (tmp_path / "out").exists()


def test_vgg_keeps_its_default_taps(tmp_path):
    images(tmp_path / "in", [(16, 16)])
    result = invoke(tmp_path / "in", tmp_path / "out", "--arch", "vgg11", "--weights", "random", "--workers", "0")
    assert result.exit_code == 0, result.output
    assert load_features(feature_path(tmp_path / "out", "img0.png"))[1]["taps"] == "relu1_1,relu2_1,relu3_1"


def test_explicit_tile_refused_before_compute_without_tile_geometry(tmp_path):
    images(tmp_path / "in", [(67, 67)])
    result = invoke(tmp_path / "in", tmp_path / "out", "--arch", "alexnet", "--taps", "relu2", "--tile", "64",
                    "--weights", "random")  # fmt: skip
    assert result.exit_code == 2
    assert "arch 'alexnet' has no tile geometry" in result.output and not (tmp_path / "out").exists()


def test_descriptor_of_a_class_token_refused_before_compute(tmp_path):
    images(tmp_path / "in", [(28, 28)])
    result = invoke(tmp_path / "in", tmp_path / "out", "--arch", "dinov2_vits14", "--taps", "blocks.0,blocks.0.cls",
                    "--reduce", "gap", "--weights", "random")  # fmt: skip
    assert result.exit_code == 2
    assert "reduce='gap' needs (B, C, H, W) maps, but tap 'blocks.0.cls'" in result.output


def test_image_that_would_need_tiles_is_its_own_error(tmp_path):
    """Without tile geometry, an image over the budget fails alone; the others are extracted."""
    images(tmp_path / "in", [(67, 67), (2000, 1500)])
    budget = current_rss() + 160 * 2**20  # the big image's single pass needs far more, the small one far less
    result = invoke(tmp_path / "in", tmp_path / "out", "--arch", "alexnet", "--taps", "relu2", "--weights", "random",
                    "--workers", "0", "--max-memory", budget)  # fmt: skip
    assert result.exit_code == 1, result.output
    records = {record["path"]: record for record in manifest(tmp_path / "out")}
    assert records["img0.png"]["status"] == "ok"
    assert records["img1.png"]["status"] == "error"
    assert "image of 2000x1500 needs about" in records["img1.png"]["error"]
    assert "arch 'alexnet' has no tile geometry" in records["img1.png"]["error"]
    assert not feature_path(tmp_path / "out", "img1.png").exists()

    # the dry run plans memory as the real run does, so it names the same refusal and leaves the
    # image out of its counts
    dry = invoke(tmp_path / "in", tmp_path / "dry", "--arch", "alexnet", "--taps", "relu2", "--weights", "random",
                 "--workers", "0", "--max-memory", budget, "--dry-run")  # fmt: skip
    assert dry.exit_code == 1, dry.output
    assert "error    img1.png: image of 2000x1500 needs about" in dry.output
    assert "arch 'alexnet' has no tile geometry" in dry.output
    assert "1 to extract, 0 up to date, 1 failing" in dry.output
    assert not (tmp_path / "dry").exists()


@pytest.mark.parametrize(("arch", "taps", "side"), [("alexnet", "relu1,relu5", 131), ("squeezenet1_1", "fire3,fire9", 97)])
def test_stored_estimate_bounds_the_real_maps(arch, taps, side):
    """The untiled families' memory model from the tap table: never below the maps a pass returns."""
    from featx.extract.family_budget import estimate_image_bytes, estimate_stored_bytes

    model = build_backbone(arch, taps, weights=None)
    with torch.no_grad():
        feats = model(torch.rand(1, 3, side, side))
    real = sum(feat.numel() for feat in feats.values()) * 4
    estimate = estimate_stored_bytes(model, side, side, reduce="none")
    assert real <= estimate <= 2 * real
    assert estimate_image_bytes(model, side, side, reduce="none") > 2 * estimate + 2 * 3 * side * side * 4
