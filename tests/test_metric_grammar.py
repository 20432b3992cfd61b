"""One grammar for the metrics (docs/api.md, "Metrics"), checked on LPIPS and DISTS alike.

Each point is checked on both modules with random backbones and stand-in learned layers (the
numbers against the reference packages are in tests/test_lpips.py and tests/test_dists.py).
References: the ``"none"`` output itself for the reductions, the terms and the value ranges; the
same module on RGB-repeated or ``(0, 1)`` inputs for ``gray`` and ``input_range="normalized"``;
``VGGFeatures``/``AlexNetFeatures`` on the same weights for the weights specs.
"""

from __future__ import annotations

import copy
import functools
import inspect
import typing
import warnings

import pytest
import safetensors.torch
import torch
import torchvision

import featx
from featx.backbones.base import IMAGENET_MEAN, IMAGENET_STD
from featx.errors import InputRangeWarning, RandomWeightsWarning, UnverifiedWeightsWarning
from featx.metrics.dists import DISTS, DISTS_CHANNELS
from featx.metrics.lpips import LPIPS, LPIPS_NETS

LIN = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1) for k, c in enumerate(LPIPS_NETS["alex"][2])}
ALPHA_BETA = {"alpha": torch.rand(1, sum(DISTS_CHANNELS), 1, 1), "beta": torch.rand(1, sum(DISTS_CHANNELS), 1, 1)}
LEARNED = {"LPIPS": "lin_weights", "DISTS": "dists_weights"}


@functools.cache
def _built(name: str, options: tuple) -> torch.nn.Module:
    return _construct(name, **dict(options))


def build(name: str, **options):
    """The metric with random weights (seed 0); built once per option set (VGG16's init is slow), copied per call."""
    if all(isinstance(value, (str, tuple, type(None))) for value in options.values()):
        return copy.deepcopy(_built(name, tuple(sorted(options.items()))))
    return _construct(name, **options)


def _construct(name: str, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        torch.manual_seed(0)
        options.setdefault("weights", None)
        if name == "LPIPS":
            return LPIPS("alex", lin_weights=LIN, **options)
        return DISTS(dists_weights=ALPHA_BETA, **options)


def pair(batch=2, size=32, seed=0, channels=3):
    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.rand(batch, channels, size, size, generator=gen) for _ in range(2))


METRICS = ["LPIPS", "DISTS"]


@pytest.mark.parametrize("name", METRICS)
def test_the_same_keyword_only_options(name):
    cls = {"LPIPS": LPIPS, "DISTS": DISTS}[name]
    parameters = inspect.signature(cls.__init__).parameters
    shared = {"weights", "input_range", "reduction", "gray", "verify_weights", LEARNED[name]}
    assert shared <= set(parameters), shared - set(parameters)
    assert all(parameters[option].kind is inspect.Parameter.KEYWORD_ONLY for option in shared)
    forward = inspect.signature(cls.forward).parameters
    assert list(forward)[:3] == ["self", "pred", "target"]
    assert forward["return_terms"].kind is inspect.Parameter.KEYWORD_ONLY
    overloads = typing.get_overloads(cls.forward)
    assert {inspect.signature(o).parameters["return_terms"].annotation for o in overloads} == {
        "Literal[False]",
        "Literal[True]",
    }


@pytest.mark.parametrize("name", METRICS)
def test_provenance_attributes_for_backbone_and_learned_layers(name):
    metric = build(name)
    learned = LEARNED[name]
    assert (metric.weights_id, metric.weights_sha256, metric.weights_verified) == ("random", None, None)
    assert getattr(metric, f"{learned}_id") == "state_dict"
    assert getattr(metric, f"{learned}_sha256") is None and getattr(metric, f"{learned}_verified") is None


@pytest.mark.parametrize("name", METRICS)
def test_reduction_and_return_terms_have_one_meaning(name):
    x, y = pair()
    per_sample, terms = build(name, reduction="none")(x, y, return_terms=True)
    assert per_sample.shape == (2,) and all(term.shape == (2,) for term in terms.values())
    torch.testing.assert_close(sum(terms.values()), per_sample, rtol=1e-5, atol=1e-7)
    for reduction, reduce in (("sum", torch.sum), ("mean", torch.mean)):
        value, reduced_terms = build(name, reduction=reduction)(x, y, return_terms=True)
        torch.testing.assert_close(value, reduce(per_sample))
        for tap, term in reduced_terms.items():
            torch.testing.assert_close(term, reduce(terms[tap]))


@pytest.mark.parametrize("name", METRICS)
def test_gradients_reach_both_inputs(name):
    metric = build(name)
    x, y = pair()
    x.requires_grad_(True)
    y.requires_grad_(True)
    metric(x, y).backward()
    for grad in (x.grad, y.grad):
        assert grad is not None and torch.isfinite(grad).all() and float(grad.abs().max()) > 0
    assert all(p.grad is None for p in metric.parameters())


@pytest.mark.parametrize("name", METRICS)
def test_normalized_input_range_is_the_same_metric_on_imagenet_normalised_images(name):
    x, y = pair()
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    expected = build(name, reduction="none")(x, y)
    got = build(name, reduction="none", input_range="normalized")((x - mean) / std, (y - mean) / std)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", METRICS)
def test_gray_repeat_is_the_metric_of_the_repeated_image(name):
    x, y = pair(channels=1)
    expected = build(name, reduction="none")(x.expand(-1, 3, -1, -1), y.expand(-1, 3, -1, -1))
    torch.testing.assert_close(build(name, reduction="none", gray="repeat")(x, y), expected)
    with pytest.raises(ValueError, match=rf"{name} pred must have shape \(B, 3, H, W\), got 1 channel.*gray='repeat'"):
        build(name)(x, y)
    with pytest.raises(ValueError, match=r"Drop the alpha channel"):
        build(name)(*pair(channels=4))
    with pytest.raises(ValueError, match=r"unknown gray 'rgb'\. Valid choices: 'error', 'repeat'"):
        build(name, gray="rgb")


@pytest.mark.parametrize(("name", "smallest"), [("LPIPS", 31), ("DISTS", 1)])
def test_min_input_size_is_exact(name, smallest):
    metric = build(name)
    assert metric.min_input_size == smallest
    x, y = pair(size=smallest)
    assert torch.isfinite(metric(x, y))
    if smallest > 1:
        with pytest.raises(ValueError, match=rf"{name} needs images of at least {smallest}x{smallest}, got"):
            metric(x[..., 1:, :], y[..., 1:, :])


@pytest.mark.parametrize("name", METRICS)
def test_the_batch_rule_and_bad_inputs(name):
    metric = build(name, reduction="none")
    x, y = pair(batch=3)
    torch.testing.assert_close(metric(x, y[:1]), metric(x, y[:1].expand(3, -1, -1, -1)))  # one reference
    with pytest.raises(ValueError, match=rf"{name}: pred of shape \(1, 3, 32, 32\) and target of shape \(3, 3, 32, 32\)"):
        metric(x[:1], y)
    with pytest.raises(TypeError, match=rf"{name} target must be a floating point tensor.*got dtype torch.uint8"):
        metric(x, (y * 255).to(torch.uint8))
    with pytest.raises(ValueError, match=rf"{name} pred must have shape \(B, 3, H, W\) with B >= 1, got \(3, 32, 32\)"):
        metric(x[0], y)


@pytest.mark.parametrize("name", METRICS)
def test_range_warning_judges_pred_and_target_apart(name):
    metric = build(name)
    x, y = pair()
    with warnings.catch_warnings():
        warnings.simplefilter("error", InputRangeWarning)
        metric(x * 0.85 - 0.52, y)  # a narrow, overshooting prediction next to a [0, 1] target
    with pytest.warns(InputRangeWarning, match=rf"{name} target values span .*input_range=\(-1, 1\)") as caught:
        metric(x, 2 * y - 1)
    assert caught[0].filename == __file__  # points at the caller


# ---------------------------------------------------------------------------------------------
# Every weights spec the backbones accept
# ---------------------------------------------------------------------------------------------


def backbone_files(tmp_path, name):
    """A metric with a random backbone, and that backbone saved as the canonical torchvision file (in
    FEATX_HOME) and as a .safetensors."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        metric = _construct(name)
        backbone = metric.backbone if name == "LPIPS" else metric.extractor
    state = {k: v.contiguous() for k, v in backbone.state_dict().items()}
    canonical = "alexnet-owt-7be5be79.pth" if name == "LPIPS" else "vgg16-397923af.pth"
    torch.save(state, tmp_path / canonical)
    safetensors.torch.save_file(state, tmp_path / "backbone.safetensors")
    return metric, tmp_path / canonical, tmp_path / "backbone.safetensors"


@pytest.mark.parametrize("name", METRICS)
def test_every_weights_spec_of_the_backbones(name, tmp_path, monkeypatch):
    monkeypatch.setenv("FEATX_HOME", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    reference, canonical, safetensors_file = backbone_files(tmp_path, name)
    x, y = pair()
    expected = reference(x, y)  # the same metric on the backbone the files hold
    registry = "ALEXNET_IMAGENET1K_V1" if name == "LPIPS" else "VGG16_IMAGENET1K_V1"
    enum = torchvision.models.AlexNet_Weights if name == "LPIPS" else torchvision.models.VGG16_Weights
    if name == "LPIPS":  # every form on the small AlexNet
        specs = ["DEFAULT", registry, enum.IMAGENET1K_V1, canonical, str(safetensors_file)]
    else:  # VGG16 files are 59 MB: a name and torchvision's name of the weights (VGGFeatures tests the rest)
        specs = [registry, f"{enum.__name__}.IMAGENET1K_V1"]
    for spec in specs:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UnverifiedWeightsWarning)  # the fabricated file at the real name
            metric = _construct(name, weights=spec)
        torch.testing.assert_close(metric(x, y), expected, rtol=0, atol=0, msg=f"weights={spec!r}")
        if isinstance(spec, (str, enum)) and not str(spec).endswith((".pth", ".safetensors")):
            assert (metric.weights_id, metric.weights_verified) == (f"unverified:{registry}", False)
        else:
            assert metric.weights_id == f"file:{spec}"
    with pytest.raises(featx.HashMismatchError):
        _construct(name, weights=registry, verify_weights="error")
