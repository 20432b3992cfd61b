"""Tests for featx.show and `featx show`: channel choice and Gram against direct formulas, PNG output."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import skimage.data
import torch
from click.testing import CliRunner
from PIL import Image

from featx.backbones.vgg.features import VGGFeatures
from featx.show import figure_size, show_features, summarize_features
from featx_cli.main import cli

pytestmark = pytest.mark.filterwarnings("ignore::featx.errors.RandomWeightsWarning")


@pytest.fixture
def sample_png(tmp_path):
    """A 40x56 crop of scikit-image's chelsea (RGB) saved as PNG."""
    path = tmp_path / "chelsea.png"
    Image.fromarray(skimage.data.chelsea()[100:140, 150:206]).save(path)
    return path


def test_summary_picks_top_mean_channels_and_gram_formula():
    feat = torch.rand(2, 10, 6, 5)
    summary = summarize_features({"relu2_1": feat}, channels=4)["relu2_1"]
    # reference: numpy argsort of the per-channel means of the first image, descending
    means = feat[0].double().mean(dim=(1, 2)).numpy()
    expected = tuple(int(i) for i in np.argsort(-means, kind="stable")[:4])
    assert summary.channels == expected
    assert summary.means == pytest.approx(tuple(means[list(expected)]), rel=1e-5)
    torch.testing.assert_close(summary.maps, feat[0, list(expected)])
    # reference: G = F F^T / (C H W) with einsum in float64 (TTSR/BasicSR convention)
    flat = feat[0].double().reshape(10, -1)
    gram = torch.einsum("ik,jk->ij", flat, flat) / (10 * 6 * 5)
    torch.testing.assert_close(summary.gram.double(), gram, rtol=1e-5, atol=1e-7)
    assert summary.shape == (10, 6, 5)


def test_summary_keeps_all_channels_when_fewer_than_asked():
    summary = summarize_features({"x": torch.rand(1, 3, 4, 4)}, channels=8)["x"]
    assert len(summary.channels) == 3 and sorted(summary.channels) == [0, 1, 2]


@pytest.mark.parametrize("channels, error", [(0, ValueError), (-1, ValueError), (2.5, TypeError), (True, TypeError)])
def test_summary_rejects_bad_channel_count(channels, error):
    with pytest.raises(error, match=f"channels must be an integer >= 1, got {channels!r}"):
        summarize_features({"x": torch.rand(1, 3, 4, 4)}, channels=channels)


def test_summary_rejects_non_4d():
    with pytest.raises(ValueError, match=r"must be 4-D \(B, C, H, W\), got shape \(3, 4, 4\)"):
        summarize_features({"x": torch.rand(3, 4, 4)})


def test_show_features_writes_rgb_png_of_expected_size(sample_png, tmp_path):
    out = tmp_path / "sub" / "fig.png"
    fig, summaries = show_features(sample_png, "relu1_1,relu2_1", out, weights=None, channels=3)
    picture = Image.open(out)
    # expected size: (channels + 1) columns and (taps + 1) rows of 1.6-inch panels at 100 dpi
    assert picture.size == (round(4 * 1.6 * 100), round(3 * 1.6 * 100))
    assert picture.mode == "RGB" and len(picture.getbands()) == 3
    assert np.asarray(picture).std() > 10  # not a blank canvas
    assert list(summaries) == ["relu1_1", "relu2_1"]
    assert summaries["relu2_1"].shape == (128, 20, 28)


def test_show_features_uses_the_extractor_channels(sample_png):
    torch.manual_seed(1)
    vgg = VGGFeatures("vgg19", "relu1_1", weights=None)
    _, summaries = show_features(sample_png, extractor=vgg, channels=5)
    # reference: the extractor run directly on the decoded pixels, channels ranked by mean
    pixels = torch.from_numpy(np.asarray(Image.open(sample_png), dtype=np.float32) / 255).permute(2, 0, 1)
    with torch.no_grad():
        feat = vgg(pixels[None])["relu1_1"][0]
    expected = torch.argsort(feat.mean(dim=(1, 2)), descending=True, stable=True)[:5].tolist()
    assert list(summaries["relu1_1"].channels) == expected


def test_show_features_downscales_to_max_size():
    _, summaries = show_features(torch.rand(3, 40, 80), "relu1_1", weights=None, max_size=20, channels=1)
    assert summaries["relu1_1"].shape == (64, 10, 20)


def test_figure_size_matches_drawn_figure():
    fig, _ = show_features(torch.rand(3, 16, 16), "relu1_1,relu2_1,relu3_1", weights=None, channels=2, dpi=50)
    fig.canvas.draw()
    width, height = fig.canvas.get_width_height()
    assert (width, height) == figure_size(3, 2, dpi=50) == (round(3 * 1.6 * 50), round(4 * 1.6 * 50))


def test_cli_show_writes_png(sample_png, tmp_path):
    out = tmp_path / "fig.png"
    result = CliRunner().invoke(
        cli,
        ["show", str(sample_png), "--taps", "relu1_1,relu2_1", "--out", str(out)]
        + ["--weights", "random", "--channels", "2"],
    )
    assert result.exit_code == 0, result.output
    assert "untrained VGG" in result.stderr
    assert "relu2_1: 128x20x28" in result.stdout
    picture = Image.open(out)
    assert picture.size == (round(3 * 1.6 * 100), round(3 * 1.6 * 100)) and picture.mode == "RGB"


def test_cli_missing_image_exits_2(tmp_path):
    result = CliRunner().invoke(cli, ["show", str(tmp_path / "nope.png"), "--weights", "random"])
    assert result.exit_code == 2
    assert "nope.png" in result.stderr and "IMAGE" in result.stderr


def test_cli_unknown_tap_suggests_closest(sample_png, tmp_path):
    result = CliRunner().invoke(cli, ["show", str(sample_png), "--taps", "rleu2_1", "--weights", "random"])
    assert result.exit_code == 2
    assert "unknown tap 'rleu2_1'" in result.stderr and "Did you mean 'relu2_1'?" in result.stderr
    assert not (tmp_path / "features.png").exists()


def test_cli_missing_default_weights_exits_1_with_fix(sample_png, tmp_path):
    # FEATX_HOME and TORCH_HOME point at empty folders (tests/conftest.py)
    result = CliRunner().invoke(cli, ["show", str(sample_png), "--out", str(tmp_path / "f.png")])
    assert result.exit_code == 1
    assert "featx weights download" in result.stderr
    assert not (tmp_path / "f.png").exists()


def test_command_module_does_not_import_torch():
    code = "import sys, featx_cli.show_cmd; print('torch' in sys.modules or 'matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# ------------------------------------------------------------------------ alpha and matplotlib


@pytest.fixture
def rgba_png(tmp_path):
    """The chelsea crop with a varying alpha channel; returns (rgba path, rgb path of the same pixels)."""
    rgb = skimage.data.chelsea()[100:132, 150:182]
    alpha = np.linspace(0, 255, 32 * 32).astype(np.uint8).reshape(32, 32)
    Image.fromarray(np.dstack([rgb, alpha])).save(tmp_path / "rgba.png")
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    return tmp_path / "rgba.png", tmp_path / "rgb.png"


def test_cli_rgba_refused_with_hint_and_accepted_with_alpha_drop(rgba_png, tmp_path):
    # Fails before `featx show --alpha` existed: the refusal told users to pass --alpha drop,
    # which show rejected as "No such option".
    rgba, _ = rgba_png
    args = ["show", str(rgba), "--taps", "relu1_1", "--weights", "random", "--channels", "2"]
    refused = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "refused.png")])
    assert refused.exit_code == 2
    assert "has an alpha channel (RGBA)" in refused.stderr and "--alpha drop" in refused.stderr
    assert not (tmp_path / "refused.png").exists()
    accepted = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "ok.png"), "--alpha", "drop"])
    assert accepted.exit_code == 0, accepted.output
    assert "relu1_1: 64x32x32" in accepted.stdout
    assert Image.open(tmp_path / "ok.png").mode == "RGB"


def test_show_features_alpha_drop_equals_the_rgb_image(rgba_png):
    rgba, rgb = rgba_png
    torch.manual_seed(3)
    vgg = VGGFeatures("vgg19", "relu1_1", weights=None)
    # reference: the same pixels saved without alpha
    _, expected = show_features(rgb, extractor=vgg, channels=3)
    _, dropped = show_features(rgba, extractor=vgg, channels=3, alpha="drop")
    assert dropped["relu1_1"].channels == expected["relu1_1"].channels
    torch.testing.assert_close(dropped["relu1_1"].maps, expected["relu1_1"].maps, rtol=0, atol=0)
    from featx.errors import ImageDecodeError

    with pytest.raises(ImageDecodeError, match="alpha channel"):
        show_features(rgba, extractor=vgg)
    with pytest.raises(ValueError, match=r"^unknown alpha 'keep'\. Valid choices: 'error', 'drop'$"):
        show_features(rgba, extractor=vgg, alpha="keep")


def test_cli_alpha_choices_are_the_library_constant():
    from featx.io.images import ALPHA_MODES
    from featx_cli.main import cli

    (option,) = [param for param in cli.commands["show"].params if param.name == "alpha"]
    assert option.type.choices == ALPHA_MODES


MATPLOTLIB_MODULES = (
    "matplotlib",
    "matplotlib.backends",
    "matplotlib.backends.backend_agg",
    "matplotlib.colors",
    "matplotlib.figure",
    "matplotlib.pyplot",
)


def hide_matplotlib(monkeypatch):
    """Make every ``import matplotlib...`` fail, as in an environment without it."""
    for name in MATPLOTLIB_MODULES:
        monkeypatch.setitem(sys.modules, name, None)


def test_cli_without_matplotlib_is_a_one_line_error(sample_png, tmp_path, monkeypatch):
    # Fails on the code before the check: a ModuleNotFoundError traceback after the model ran.
    hide_matplotlib(monkeypatch)
    out = tmp_path / "fig.png"
    result = CliRunner().invoke(cli, ["show", str(sample_png), "--weights", "random", "--out", str(out)])
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)  # a click error, not an uncaught exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: featx show needs matplotlib")
    assert "pip install matplotlib" in lines[0]
    assert "Traceback" not in result.output and not out.exists()


def test_show_features_without_matplotlib_fails_first_with_the_fix(monkeypatch):
    hide_matplotlib(monkeypatch)
    # weights="DEFAULT" is not on disk (tests/conftest.py): the matplotlib check comes before the model
    with pytest.raises(ImportError, match="pip install matplotlib"):
        show_features(torch.rand(3, 16, 16), "relu1_1")


# ---------------------------------------------------------------- any backbone family


def test_show_features_any_family_equals_its_extractor(sample_png, tmp_path):
    """The summaries come from the family's extractor (built by the catalog, same weights file)."""
    from featx.backbones.catalog import build_backbone

    torch.manual_seed(5)
    reference = build_backbone("squeezenet1_1", "relu1,fire3", weights=None)
    ckpt = tmp_path / "squeeze.pth"
    torch.save(reference.state_dict(), ckpt)
    fig, summaries = show_features(sample_png, "relu1,fire3", arch="squeezenet1_1", weights=str(ckpt), channels=3)
    pixels = torch.from_numpy(np.asarray(Image.open(sample_png), dtype=np.float32) / 255).permute(2, 0, 1)
    with torch.no_grad():
        feats = reference(pixels[None])
    for tap, feat in feats.items():
        expected = torch.argsort(feat[0].mean(dim=(1, 2)), descending=True, stable=True)[:3].tolist()
        assert list(summaries[tap].channels) == expected
        assert summaries[tap].shape == tuple(feat.shape[1:])
    title = " ".join(text.get_text() for ax in fig.axes for text in ax.texts)
    assert "squeezenet1_1, weights=file:" in title and "pooling" not in title


def test_show_features_dinov2_patch_maps_and_clear_error_for_class_token():
    _, summaries = show_features(torch.rand(3, 28, 42), "blocks.0", arch="dinov2_vits14", weights=None, channels=2)
    assert summaries["blocks.0"].shape == (384, 2, 3)
    with pytest.raises(ValueError, match=r"'blocks.0.cls' must be 4-D \(B, C, H, W\), got shape \(1, 384\)"):
        show_features(torch.rand(3, 28, 28), "blocks.0.cls", arch="dinov2_vits14", weights=None)


def test_cli_show_other_family_writes_png(sample_png, tmp_path):
    out = tmp_path / "fig.png"
    result = CliRunner().invoke(
        cli,
        ["show", str(sample_png), "--arch", "alexnet", "--taps", "relu1,relu2", "--out", str(out)]
        + ["--weights", "random", "--channels", "2"],
    )
    assert result.exit_code == 0, result.output
    assert "untrained ALEXNET" in result.stderr
    # AlexNet: conv1 11x11 stride 4 padding 2 on 40x56 -> 9x13; pool1 3x3 stride 2 -> 4x6 (conv2 keeps it)
    assert "relu1: 64x9x13" in result.stdout and "relu2: 192x4x6" in result.stdout
    assert Image.open(out).mode == "RGB"


def test_cli_show_other_family_needs_taps_and_refuses_pooling(sample_png, tmp_path):
    result = CliRunner().invoke(cli, ["show", str(sample_png), "--arch", "squeezenet1_1", "--weights", "random"])
    assert result.exit_code == 2
    assert "arch 'squeezenet1_1' has no default taps" in result.stderr and "relu1" in result.stderr
    result = CliRunner().invoke(
        cli, ["show", str(sample_png), "--arch", "alexnet", "--taps", "relu2", "--pooling", "avg", "--weights", "random"]
    )
    assert result.exit_code == 2
    assert "pooling='avg' is not an option of arch 'alexnet'" in result.stderr
    assert not (tmp_path / "features.png").exists()
