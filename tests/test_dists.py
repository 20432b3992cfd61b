"""featx.metrics.dists.DISTS and featx.backbones.pooling.L2Pool2d against the real DISTS_pytorch 0.1 package.

The reference is ``DISTS_pytorch.DISTS(load_weights=False)`` with its shipped ``weights.pt``
alpha/beta set by hand, and torchvision's ``vgg16(weights=None)`` (seeded) as the backbone of both:
DISTS_pytorch's constructor calls ``models.vgg16(pretrained=True)``, which would download, so the
tests hand it the random VGG16 instead. No test opens a network connection.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pytest
import torch
import torchvision

import featx.errors
from featx.backbones.pooling import L2Pool2d
from featx.metrics.dists import DISTS, load_dists_weights
from featx.weights import MetricWeights, sha256_file

DISTS_FILE = MetricWeights.DISTS_VGG16.file_name

dists_pt = pytest.importorskip("DISTS_pytorch.DISTS_pt")
PACKAGE_WEIGHTS = Path(dists_pt.__file__).with_name("weights.pt")


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().double() - b.detach().double()).norm() / b.detach().double().norm())


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(reference DISTS, featx DISTS) on the same random VGG16 and the shipped alpha/beta."""
    torch.manual_seed(0)
    vgg16 = torchvision.models.vgg16(weights=None)
    original = dists_pt.models.vgg16
    dists_pt.models.vgg16 = lambda *args, **kwargs: vgg16  # no download: the same random network
    try:
        reference = dists_pt.DISTS(load_weights=False)
    finally:
        dists_pt.models.vgg16 = original
    shipped = torch.load(PACKAGE_WEIGHTS, map_location="cpu", weights_only=True)
    reference.alpha.data, reference.beta.data = shipped["alpha"], shipped["beta"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", featx.errors.RandomWeightsWarning)
        ours = DISTS(weights=vgg16.state_dict(), dists_weights=PACKAGE_WEIGHTS, reduction="none")
    return reference.eval(), ours


def images(batch=2, size=48, dtype=torch.float32, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, 3, size, size, generator=gen, dtype=dtype) for _ in range(2))


def test_the_shipped_weights_have_the_documented_hash():
    assert sha256_file(PACKAGE_WEIGHTS) == MetricWeights.DISTS_VGG16.value.sha256 == (
        "f5e65c96230b7f6ca995691647d482237e4cab8a50c5c4a5784f219ef0748218"  # the issue, from sha256sum
    )


def test_values_match_dists_pytorch_in_fp32(pair):
    reference, ours = pair
    x, y = images()
    with torch.no_grad():
        expected = reference(x, y)
        value = ours(x, y)
    assert value.shape == (2,) and rel(value, expected) < 1e-5


def test_input_gradients_match_dists_pytorch_in_float64(pair):
    reference, ours = pair
    reference, ours = reference.double(), ours.double()
    try:
        x, y = images(dtype=torch.float64, size=40)
        x_ref = x.clone().requires_grad_()
        reference(x_ref, y, require_grad=True).sum().backward()
        x_ours = x.clone().requires_grad_()
        value = ours(x_ours, y)
        value.sum().backward()
        # the reference's ImageNet mean/std and L2 filter are float32 numbers, ours are exact
        assert rel(value, reference(x, y)) < 1e-6
        assert rel(x_ours.grad, x_ref.grad) < 1e-6
    finally:
        reference.float(), ours.float()


def test_input_range_and_reductions(pair):
    _, ours = pair
    x, y = images(batch=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", featx.errors.RandomWeightsWarning)
        tanh_range = DISTS(weights=ours.extractor.state_dict(), dists_weights=PACKAGE_WEIGHTS, input_range=(-1, 1))
        summed = DISTS(weights=ours.extractor.state_dict(), dists_weights=PACKAGE_WEIGHTS, reduction="sum")
    with torch.no_grad():
        per_sample = ours(x, y)
        assert rel(tanh_range(2 * x - 1, 2 * y - 1), per_sample.mean()) < 1e-5
        torch.testing.assert_close(summed(x, y), per_sample.sum())
        assert float(ours(x, x).abs().max()) < 1e-6  # identical images: 0
        assert rel(ours(x, y[:1]), ours(x, y[:1].expand(3, -1, -1, -1))) < 1e-5  # a target batch of 1 broadcasts


def test_frozen_metric_and_loss_under_autocast(pair):
    _, ours = pair
    assert not any(p.requires_grad for p in ours.parameters())
    parent = torch.nn.Sequential(ours).train()
    assert not ours.extractor.training and list(parent.state_dict()) == []
    x, y = images()
    x.requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = ours(x, y)
    assert value.dtype == torch.float32 and torch.isfinite(value).all()
    value.sum().backward()
    assert torch.isfinite(x.grad).all() and float(x.grad.abs().max()) > 0


def test_l2_pooling_matches_dists_pytorch_and_the_formula():
    x = torch.rand(2, 4, 9, 8, dtype=torch.float64)
    reference = dists_pt.L2pooling(channels=4).double()
    ours = L2Pool2d(4).double()
    torch.testing.assert_close(ours(x), reference(x), rtol=1e-7, atol=1e-9)  # its filter is float32
    # direct formula: sqrt(sum_ij g_ij x^2[2r + i - 1, 2c + j - 1] + 1e-12), zero outside
    g = torch.tensor([0.5, 1.0, 0.5], dtype=torch.float64)
    g = torch.outer(g, g) / 4.0
    padded = torch.nn.functional.pad(x * x, (1, 1, 1, 1))
    rows, cols = (9 + 1) // 2, (8 + 1) // 2
    expected = torch.empty(2, 4, rows, cols, dtype=torch.float64)
    for r in range(rows):
        for c in range(cols):
            window = padded[:, :, 2 * r : 2 * r + 3, 2 * c : 2 * c + 3]
            expected[:, :, r, c] = torch.sqrt((window * g).sum(dim=(2, 3)) + 1e-12)
    torch.testing.assert_close(ours(x), expected, rtol=1e-12, atol=1e-12)
    assert list(ours.state_dict()) == []  # the filter is not saved: torchvision's keys stay as they are


def test_default_weights_are_found_offline_and_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("FEATX_HOME", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(featx.errors.WeightsNotFoundError, match=rf"no file {DISTS_FILE} .*directories searched") as info:
        load_dists_weights("DEFAULT")
    assert str(tmp_path) in str(info.value) and "featx weights download DISTS_VGG16" in str(info.value)
    shutil.copy(PACKAGE_WEIGHTS, tmp_path / DISTS_FILE)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the real file: no warning
        alpha, beta, loaded = load_dists_weights("DEFAULT")
    assert alpha.shape == beta.shape == (1475,)
    assert loaded.weights_id == "DISTS_VGG16" and loaded.verified is True
    tampered = {"alpha": alpha.view(1, -1, 1, 1) + 1, "beta": beta.view(1, -1, 1, 1)}
    torch.save(tampered, tmp_path / DISTS_FILE)
    with pytest.warns(featx.errors.UnverifiedWeightsWarning):
        _, _, loaded = load_dists_weights("DEFAULT")
    assert loaded.weights_id == "unverified:DISTS_VGG16" and loaded.verified is False
    with pytest.raises(featx.errors.HashMismatchError):
        load_dists_weights("DEFAULT", verify="error")


def test_bad_weights_are_refused(tmp_path):
    good = {"alpha": torch.ones(1, 1475, 1, 1), "beta": torch.ones(1, 1475, 1, 1)}
    with pytest.raises(featx.errors.WeightsLoadError, match=r"missing keys \(1\): \['beta'\]"):
        load_dists_weights({"alpha": good["alpha"]})
    with pytest.raises(featx.errors.WeightsLoadError, match=r"alpha: expected \(1, 1475, 1, 1\), got \(1, 10\)"):
        load_dists_weights({**good, "alpha": torch.ones(1, 10)})
    with pytest.raises(featx.errors.WeightsLoadError, match="beta.*NaN"):
        load_dists_weights({**good, "beta": torch.full((1, 1475, 1, 1), float("nan"))})
    with pytest.raises(TypeError, match="dists_weights must be 'DEFAULT', a MetricWeights member or name, a path"):
        load_dists_weights(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dists_weights=LPIPS_ALEX_V0_1 holds lpips weights for alexnet"):
        load_dists_weights("LPIPS_ALEX_V0_1")
    with pytest.raises(ValueError, match="unknown reduction 'avg'"):
        DISTS(weights=None, dists_weights=good, reduction="avg")


def test_missing_default_dists_weights_name_the_dists_weights_argument(tmp_path, monkeypatch):
    monkeypatch.setenv("FEATX_HOME", str(tmp_path))
    good = {"alpha": torch.ones(1, 1475, 1, 1), "beta": torch.ones(1, 1475, 1, 1)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        state = DISTS(weights=None, dists_weights=good).extractor.state_dict()
    with pytest.raises(featx.errors.WeightsNotFoundError) as info:
        DISTS(weights=state)  # dists_weights="DEFAULT", not on disk
    message = str(info.value)
    assert f"no file {DISTS_FILE}" in message and str(tmp_path) in message
    assert "featx weights download DISTS_VGG16" in message
    assert "\n  - dists_weights=PATH to a local copy" in message and "\n  - weights=PATH" not in message
    assert info.value.path == DISTS_FILE and tmp_path in info.value.searched
    # the backbone's own message keeps weights=PATH: there it is the right argument
    with pytest.raises(featx.errors.WeightsNotFoundError, match=r"\n  - weights=PATH to a local copy"):
        DISTS(dists_weights=good)
