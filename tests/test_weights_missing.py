"""Weights found where they already are, and every missing file of a run named at once.

- The learned layers the installed ``lpips`` and ``dists-pytorch`` packages ship are found by
  sha256 (after featx's own folders), without copying or importing those packages; a changed copy,
  or the package not installed, is as if there were none.
- LPIPS, DISTS and ``featx score`` raise one ``WeightsNotFoundError`` listing every missing file,
  each with its download command, in Python's words (``lin_weights=PATH``) and, on the command line,
  in the command's (``--weights PATH``, ``FEATX_HOME=DIR``).

References: hashlib and ``torch.load`` on the packages' files; the registry's names and file names.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import featx.weights.locations
from featx.errors import RandomWeightsWarning, WeightsNotFoundError
from featx.metrics.dists import DISTS
from featx.metrics.lpips import LPIPS
from featx.metrics.score import score_folders
from featx.weights import MetricWeights, Verification, find, load_learned, missing_message, search_dirs, shipped_copy
from featx_cli.main import cli

# lpips/pretrained_networks.py: the channels of the squeezenet slices LPIPS("squeeze") weighs
SQUEEZE_CHANNELS = (64, 128, 256, 384, 384, 512, 512)


def package_folder(module: str) -> Path:
    return Path(importlib.util.find_spec(module).submodule_search_locations[0])


def quietly(build):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)  # random backbones: only the learned layers matter
        return build()


# ---------------------------------------------------------------------------------------------
# The packages' copies
# ---------------------------------------------------------------------------------------------


def test_lpips_and_dists_use_the_files_the_packages_ship(package_weights):
    lpips_alex = package_folder("lpips") / "weights" / "v0.1" / "alex.pth"
    assert find(MetricWeights.LPIPS_ALEX_V0_1) == shipped_copy(MetricWeights.LPIPS_ALEX_V0_1) == lpips_alex
    metric = quietly(lambda: LPIPS("alex", weights=None))  # lin_weights="DEFAULT", nowhere in featx's folders
    assert (metric.lin_weights_id, metric.lin_weights_verified) == ("LPIPS_ALEX_V0_1", True)
    assert metric.lin_weights_verification is Verification.SHA256
    reference = torch.load(lpips_alex, map_location="cpu", weights_only=True)  # the package's own tensors
    for k, weight in enumerate(metric.lin):
        assert torch.equal(weight, reference[f"lin{k}.model.1.weight"])
    dists = quietly(lambda: DISTS(weights=None))
    assert (dists.dists_weights_id, dists.dists_weights_verified) == ("DISTS_VGG16", True)
    dists_file = package_folder("DISTS_pytorch") / "weights.pt"
    assert torch.equal(dists.alpha.flatten(), torch.load(dists_file, weights_only=True)["alpha"].flatten())
    squeeze = {f"lin{k}.model.1.weight": (1, c, 1, 1) for k, c in enumerate(SQUEEZE_CHANNELS)}
    loaded = load_learned("DEFAULT", default=MetricWeights.LPIPS_SQUEEZE_V0_1, expected=squeeze)
    assert loaded.source == str(package_folder("lpips") / "weights" / "v0.1" / "squeeze.pth")
    assert loaded.weights_id == "LPIPS_SQUEEZE_V0_1" and loaded.verified is True


def test_featx_folders_come_first(package_weights):
    own = featx.weights.featx_home() / MetricWeights.LPIPS_VGG_V0_1.file_name
    own.parent.mkdir(parents=True)
    shutil.copyfile(package_folder("lpips") / "weights" / "v0.1" / "vgg.pth", own)
    assert find(MetricWeights.LPIPS_VGG_V0_1) == own == search_dirs()[0] / own.name


def test_a_changed_copy_is_not_used(package_weights, monkeypatch, tmp_path):
    fake = tmp_path / "lpips"
    shutil.copytree(package_folder("lpips") / "weights", fake / "weights")
    alex = fake / "weights" / "v0.1" / "alex.pth"
    data = bytearray(alex.read_bytes())
    data[-1] ^= 1  # the same size, another sha256
    alex.write_bytes(bytes(data))
    monkeypatch.setattr(featx.weights.locations, "package_dir", lambda module: fake if module == "lpips" else None)
    assert shipped_copy(MetricWeights.LPIPS_ALEX_V0_1) is None
    assert shipped_copy(MetricWeights.LPIPS_VGG_V0_1) == fake / "weights" / "v0.1" / "vgg.pth"  # intact: used


def test_packages_not_installed(package_weights, monkeypatch):
    real = importlib.util.find_spec
    absent = ("lpips", "DISTS_pytorch")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in absent else real(name, *a))
    assert featx.weights.locations.package_dir("lpips") is None and find(MetricWeights.DISTS_VGG16) is None
    with pytest.raises(WeightsNotFoundError) as info:
        quietly(lambda: LPIPS("vgg", weights=None))
    assert "no file lpips_vgg_v0.1.pth" in str(info.value) and "pip install lpips:" in str(info.value)


def test_finding_a_package_copy_does_not_import_the_package(package_weights, monkeypatch):
    for name in [m for m in sys.modules if m.split(".")[0] in ("lpips", "DISTS_pytorch")]:
        monkeypatch.delitem(sys.modules, name)  # as if never imported (restored after the test)
    assert shipped_copy(MetricWeights.LPIPS_ALEX_V0_1) is not None and shipped_copy(MetricWeights.DISTS_VGG16) is not None
    assert not [m for m in sys.modules if m.split(".")[0] in ("lpips", "DISTS_pytorch")]


# ---------------------------------------------------------------------------------------------
# Every missing file at once, in two wordings
# ---------------------------------------------------------------------------------------------


def test_lpips_names_its_backbone_and_its_linear_layers_at_once():
    with pytest.raises(WeightsNotFoundError) as info:
        LPIPS("alex")  # neither torchvision's AlexNet nor lpips' v0.1 layers are on disk
    error = info.value
    assert [(entry.name, entry.argument) for entry in error.missing] == [
        ("ALEXNET_IMAGENET1K_V1", "weights"), ("LPIPS_ALEX_V0_1", "lin_weights")
    ]  # fmt: skip
    message = str(error)
    assert message.startswith("2 weights files are missing (featx never downloads while building a model):")
    for part in ("ALEXNET_IMAGENET1K_V1: no file alexnet-owt-7be5be79.pth (sha256 7be5be791159472b..., 233.1 MiB)",
                 "LPIPS_ALEX_V0_1: no file lpips_alex_v0.1.pth (sha256 df73285e35b22355..., 5.9 KiB)",
                 "featx weights download ALEXNET_IMAGENET1K_V1", "featx weights download LPIPS_ALEX_V0_1",
                 "pip install lpips", "weights=PATH (alexnet-owt-7be5be79.pth)",
                 "lin_weights=PATH (lpips_alex_v0.1.pth)", str(search_dirs()[0]), str(search_dirs()[1])):  # fmt: skip
        assert part in message, part
    assert error.searched == search_dirs() and error.path == "alexnet-owt-7be5be79.pth"
    # the same error in a command line's words: its flags, FEATX_HOME, no Python argument
    cli_text = missing_message(error.missing, cli_flags={"weights": "--weights PATH"}, command="featx x")
    assert "--weights PATH (alexnet-owt-7be5be79.pth)" in cli_text and "FEATX_HOME=DIR featx x ..." in cli_text
    assert "=PATH" not in cli_text and "lin_weights" not in cli_text
    assert "featx weights download LPIPS_ALEX_V0_1" in cli_text


def test_dists_names_both_files_and_one_missing_file_keeps_its_own_message():
    with pytest.raises(WeightsNotFoundError) as info:
        DISTS()
    assert [entry.name for entry in info.value.missing] == ["VGG16_IMAGENET1K_V1", "DISTS_VGG16"]
    assert "dists_weights=PATH (dists_vgg16.pt)" in str(info.value) and "pip install dists-pytorch" in str(info.value)
    with pytest.raises(WeightsNotFoundError) as info:
        quietly(lambda: DISTS(weights=None))  # only the learned layers are missing
    assert str(info.value).startswith("DISTS_VGG16 weights not found: no file dists_vgg16.pt")
    assert "\n  - dists_weights=PATH to a local copy" in str(info.value) and len(info.value.missing) == 1


def test_a_missing_path_and_a_missing_checkpoint_together(tmp_path):
    with pytest.raises(WeightsNotFoundError) as info:
        LPIPS("vgg", lin_weights=tmp_path / "nope.pth")
    message = str(info.value)
    assert "VGG16_IMAGENET1K_V1: no file vgg16-397923af.pth" in message
    assert f"lin_weights={tmp_path / 'nope.pth'}: file not found" in message
    assert [entry.name for entry in info.value.missing] == ["VGG16_IMAGENET1K_V1", None]


@pytest.fixture()
def folders(tmp_path):
    pred, ref = tmp_path / "sr", tmp_path / "hr"
    for folder in (pred, ref):
        folder.mkdir()
        Image.fromarray(np.zeros((40, 40, 3), dtype=np.uint8)).save(folder / "a.png")
    return pred, ref


def test_score_names_every_missing_file_of_every_metric(folders):
    pred, ref = folders
    with pytest.raises(WeightsNotFoundError) as info:
        score_folders(pred, ref, metrics=["psnr", "lpips", "dists"])
    names = [entry.name for entry in info.value.missing]
    assert names == ["ALEXNET_IMAGENET1K_V1", "LPIPS_ALEX_V0_1", "VGG16_IMAGENET1K_V1", "DISTS_VGG16"]
    assert str(info.value).startswith("4 weights files are missing")
    for name in names:
        assert f"featx weights download {name}" in str(info.value)


def test_score_and_extract_commands_word_the_fixes_with_their_flags(folders, tmp_path):
    pred, ref = folders
    result = CliRunner().invoke(cli, ["score", str(pred), str(ref), "--metrics", "lpips,dists"])
    assert result.exit_code == 2, result.output
    for part in ("4 weights files are missing", "featx weights download ALEXNET_IMAGENET1K_V1",
                 "featx weights download DISTS_VGG16", "FEATX_HOME=DIR featx score ...", "--weights random",
                 os.environ["FEATX_HOME"]):  # fmt: skip
        assert part in result.output, part
    assert "=PATH" not in result.output  # featx score has no flag for a weights file
    result = CliRunner().invoke(cli, ["extract", str(pred), str(tmp_path / "out"), "-q"])
    assert result.exit_code == 2, result.output
    for part in ("VGG19_IMAGENET1K_V1 weights not found", "--weights PATH to a local copy",
                 "FEATX_HOME=DIR featx extract ...", "--weights random"):  # fmt: skip
        assert part in result.output, part
    assert "weights=PATH" not in result.output
