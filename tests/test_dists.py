"""featx.metrics.dists.DISTS and featx.backbones.pooling.L2Pool2d against the real DISTS_pytorch 0.1 package.

The reference is ``DISTS_pytorch.DISTS(load_weights=False)`` with its shipped ``weights.pt``
alpha/beta set by hand, and torchvision's ``vgg16(weights=None)`` (seeded) as the backbone of both:
DISTS_pytorch's constructor calls ``models.vgg16(pretrained=True)``, which would download, so the
tests hand it the random VGG16 instead. No test opens a network connection.

DISTS_pytorch is in the test extra, so it is imported plainly: a broken install fails this module
instead of skipping every test in it.
"""

from __future__ import annotations

import copy
import shutil
import warnings
from pathlib import Path

import DISTS_pytorch.DISTS_pt as dists_pt
import pytest
import torch
import torchvision

import featx.errors
from featx.backbones.pooling import L2Pool2d
from featx.metrics.dists import DISTS, DISTS_CHANNELS, DISTS_LEVELS, load_dists_weights
from featx.weights import MetricWeights, sha256_file

DISTS_FILE = MetricWeights.DISTS_VGG16.file_name

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
        load_dists_weights("DEFAULT", verify_weights="error")


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


# ---------------------------------------------------------------------------------------------
# The metrics' grammar (docs/api.md, "Metrics"), each point against DISTS_pytorch
# ---------------------------------------------------------------------------------------------


def exact_float64(reference):
    """A float64 copy of DISTS_pytorch whose float32 constants (ImageNet mean/std, L2 filters) are exact."""
    from featx.backbones.base import IMAGENET_MEAN, IMAGENET_STD

    exact = copy.deepcopy(reference).double()
    exact.mean.copy_(torch.tensor(IMAGENET_MEAN, dtype=torch.float64).view(1, 3, 1, 1))
    exact.std.copy_(torch.tensor(IMAGENET_STD, dtype=torch.float64).view(1, 3, 1, 1))
    window = torch.tensor([0.5, 1.0, 0.5], dtype=torch.float64)
    kernel = torch.outer(window, window) / 4.0  # hanning(5)[1:-1], normalised to sum 1
    for module in exact.modules():
        if isinstance(module, dists_pt.L2pooling):
            module.filter.copy_(kernel.expand_as(module.filter))
    return exact


def test_both_input_gradients_match_dists_pytorch_with_require_grad_in_float64(pair):
    """DISTS_pytorch's ``require_grad=True`` differentiates both inputs, and so does featx. With the
    reference's float32 constants made exact, values and gradients agree to float64 rounding
    (with its float32 constants: 1e-9 on values, 4e-7 on gradients)."""
    reference, ours = pair
    reference, ours = exact_float64(reference), copy.deepcopy(ours).double()
    x, y = images(batch=1, dtype=torch.float64, size=24)
    x_ref, y_ref = x.clone().requires_grad_(), y.clone().requires_grad_()
    x_ours, y_ours = x.clone().requires_grad_(), y.clone().requires_grad_()
    expected = reference(x_ref, y_ref, require_grad=True)
    value = ours(x_ours, y_ours)
    expected.sum().backward()
    value.sum().backward()
    assert rel(value, expected) < 1e-12
    assert y_ours.grad is not None, "the target got no gradient"
    assert rel(y_ours.grad, y_ref.grad) < 1e-10 and rel(x_ours.grad, x_ref.grad) < 1e-10


@pytest.mark.parametrize(("height", "width"), [(1, 1), (2, 7), (15, 15)])
def test_inputs_under_16x16_are_scored_as_dists_pytorch_scores_them(pair, height, width):
    # L2 pooling gives ceil(n / 2) positions, never 0: DISTS_pytorch scores even 1x1 images
    reference, ours = pair
    assert ours.min_input_size == 1
    gen = torch.Generator().manual_seed(3)
    x, y = (torch.rand(2, 3, height, width, generator=gen) for _ in range(2))
    with torch.no_grad():
        assert rel(ours(x, y), reference(x, y)) < 1e-5


def test_gray_repeat_is_dists_of_the_repeated_image(pair):
    reference, ours = pair
    gray = DISTS(weights=ours.extractor.state_dict(), dists_weights=PACKAGE_WEIGHTS, reduction="none", gray="repeat")
    x, y = images(size=24)
    x1, y1 = x[:, :1], y[:, :1]
    with torch.no_grad():
        expected = reference(x1.expand(-1, 3, -1, -1), y1.expand(-1, 3, -1, -1))
        assert rel(gray(x1, y1), expected) < 1e-5
    with pytest.raises(ValueError, match=r"DISTS pred must have shape \(B, 3, H, W\).*Pass gray='repeat'"):
        ours(x1, y1)  # the option the message names exists


def test_return_terms_are_each_levels_share_of_the_distance(pair):
    """Reference: DISTS_pytorch with alpha and beta zero outside level k gives ``D_k``; featx's term of
    level k is ``D_k`` times the level's share of ``sum(alpha + beta)``."""
    reference, ours = pair
    x, y = images(size=24)
    with torch.no_grad():
        value, terms = ours(x, y, return_terms=True)
    assert list(terms) == list(DISTS_LEVELS) == ["input", "relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3"]
    torch.testing.assert_close(sum(terms.values()), value, rtol=1e-5, atol=1e-7)
    alpha, beta = reference.alpha.data.clone(), reference.beta.data.clone()
    total = alpha.sum() + beta.sum()
    offsets = [0, *torch.cumsum(torch.tensor(DISTS_CHANNELS), 0).tolist()]
    try:
        for level, name in enumerate(DISTS_LEVELS):
            mask = torch.zeros_like(alpha)
            mask[:, offsets[level] : offsets[level + 1]] = 1
            reference.alpha.data, reference.beta.data = alpha * mask, beta * mask
            with torch.no_grad():
                level_distance = reference(x, y)
            share = ((alpha + beta) * mask).sum() / total
            assert rel(terms[name], level_distance * share) < 1e-4, name
    finally:
        reference.alpha.data, reference.beta.data = alpha, beta


def test_provenance_of_backbone_and_learned_layers_is_on_the_module(pair):
    _, ours = pair
    assert (ours.weights_id, ours.weights_sha256, ours.weights_verified) == ("state_dict", None, None)
    assert ours.weights_id == ours.extractor.weights_id
    assert ours.dists_weights_id == f"file:{PACKAGE_WEIGHTS}"
    assert ours.dists_weights_sha256 == MetricWeights.DISTS_VGG16.value.sha256
    assert "weights='state_dict'" in repr(ours) and "gray='error'" in repr(ours)


def test_pred_batch_of_one_is_never_broadcast_over_the_target(pair):
    _, ours = pair
    x, y = images(batch=3)
    with pytest.raises(ValueError, match=r"pred of shape \(1, 3, 48, 48\) and target of shape \(3, 3, 48, 48\)"):
        ours(x[:1], y)
    with pytest.raises(ValueError, match=r"pred of shape \(3, 3, 48, 48\) and target of shape \(2, 3, 48, 48\)"):
        ours(x, y[:2])
