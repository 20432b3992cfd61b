"""Shared test fixtures: isolate weight caches and keep tests offline and single-threaded-friendly."""

from __future__ import annotations

import warnings

import pytest
import torch
from PIL import Image, ImageFile

import featx.weights.locations

_PACKAGE_DIR = featx.weights.locations.package_dir


_PILLOW_GLOBALS = pytest.StashKey[tuple]()


def _pillow_globals() -> tuple:
    return Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    item.stash[_PILLOW_GLOBALS] = _pillow_globals()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    """Fail the test that leaves Pillow's process-wide settings changed once every fixture
    (monkeypatch included) has been torn down. A pixel limit left lifted once let a later test decode
    a 100000x100000 decompression bomb, and the machine ran out of memory."""
    result = yield
    before, after = item.stash[_PILLOW_GLOBALS], _pillow_globals()
    if after != before:
        raise AssertionError(f"Pillow's (MAX_IMAGE_PIXELS, LOAD_TRUNCATED_IMAGES) changed from {before} to {after}")
    return result


@pytest.fixture(autouse=True)
def _isolated_homes(tmp_path_factory, monkeypatch):
    """Point FEATX_HOME and TORCH_HOME at empty temporary directories for every test."""
    home = tmp_path_factory.mktemp("homes")
    monkeypatch.setenv("FEATX_HOME", str(home / "featx"))
    monkeypatch.setenv("TORCH_HOME", str(home / "torch"))
    yield


@pytest.fixture(autouse=True)
def _no_installed_package_weights(monkeypatch):
    """featx also finds the learned layers that installed packages ship (lpips, dists-pytorch, both in
    the test extra); every test sees a machine without them unless it asks for ``package_weights``."""
    monkeypatch.setattr(featx.weights.locations, "package_dir", lambda module: None)
    yield


@pytest.fixture()
def package_weights(monkeypatch):
    """Let featx find the files installed packages ship, as it does outside the tests."""
    monkeypatch.setattr(featx.weights.locations, "package_dir", _PACKAGE_DIR)
    yield


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture()
def ckpt(tmp_path_factory):
    """Random VGG19 weights up to relu2_1 (the extract tests' taps) saved as a ``.pth`` state dict,
    so the command under test and the reference extractor load the same weights."""
    from featx.backbones.vgg.features import VGGFeatures

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = VGGFeatures("vgg19", "relu1_1,relu2_1", weights=None)
    path = tmp_path_factory.mktemp("ckpt") / "random_vgg19.pth"
    torch.save(model.state_dict(), path)
    return path
