"""VGGFeatures against torchvision's VGG (the reference), plus input checks, freezing and pickling."""

from __future__ import annotations

import copy
import math
import pickle
import warnings

import pytest
import torch
import torchvision
from torch import nn

from featx.backbones.base import IMAGENET_MEAN, IMAGENET_STD
from featx.backbones.vgg.features import VGGFeatures
from featx.backbones.vgg.layers import ARCHS, POOLINGS, layer_names, layer_specs

pytestmark = pytest.mark.filterwarnings("ignore::featx.errors.RandomWeightsWarning")


def torchvision_features(arch: str) -> tuple[nn.Sequential, dict]:
    """Reference: torchvision's own VGG with random weights, ReLUs made out-of-place, eval mode."""
    model = getattr(torchvision.models, arch)(weights=None).eval()
    for module in model.features:
        if isinstance(module, nn.ReLU):
            module.inplace = False
    return model.features, model.state_dict()


def imagenet_normalize(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def torchvision_taps(features: nn.Sequential, names: tuple[str, ...], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Reference: every layer output of torchvision's ``features`` on ImageNet-normalised ``x``."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float64).view(1, 3, 1, 1)
    h = ((x.double() - mean) / std).to(x.dtype)
    out = {}
    with torch.no_grad():
        for name, layer in zip(names, features, strict=True):
            h = layer(h)
            out[name] = h
    return out


# Exactness is checked in float64, where the summation order (threads, SIMD width, oneDNN/MKL
# kernels) moves results by ~1e-16 relative per operation, so a 1e-10 bound holds on any CPU.
FLOAT64_RTOL = 1e-10


@pytest.mark.parametrize("arch", ["vgg16", "vgg19", "vgg19_bn"])
def test_every_tap_matches_torchvision_in_float64(arch):
    features, state_dict = torchvision_features(arch)
    names = layer_names(arch)
    extractor = VGGFeatures(arch, names, weights=state_dict).double()
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    out = extractor(x)
    assert list(out) == list(names)
    ref = torchvision_taps(features.double(), names, x)
    for name in names:
        scale = ref[name].abs().max().item()
        torch.testing.assert_close(out[name], ref[name], rtol=FLOAT64_RTOL, atol=FLOAT64_RTOL * scale, msg=name)
    # Pre-activation conv taps really are pre-activation: they hold negative values.
    for name in names:
        if name.startswith("conv"):
            assert (out[name] < 0).any(), name


def fp32_tolerance(arch: str, name: str) -> float:
    """Bound on |fp32 - float64| relative to the tap's largest magnitude.

    Each 3x3 convolution sums ``K = 9 * C_in`` products; with round-to-nearest the accumulated
    error is about ``sqrt(K) * u`` relative (u = 2**-24, unit roundoff of float32) for sums of
    random-sign terms, and errors of successive layers add. So after ``n`` convolutions the
    error is below ``n * sqrt(K_max) * u`` times the magnitude; a factor 8 covers blocked or
    pairwise summation orders of other kernels and BN's extra affine.
    """
    specs = [s for s in layer_specs(arch) if s.kind == "conv"]
    index = next(s.index for s in layer_specs(arch) if s.name == name)
    convs = [s for s in specs if s.index <= index]
    if not convs:
        return 8 * 2**-24
    k_max = max(9 * s.in_channels for s in convs)
    return 8 * len(convs) * math.sqrt(k_max) * 2**-24


@pytest.mark.parametrize("arch", ["vgg16", "vgg19", "vgg19_bn"])
def test_every_tap_matches_torchvision_in_float32_within_rounding(arch):
    """The float32 extractor against torchvision's VGG run in float64 (same weights)."""
    features, state_dict = torchvision_features(arch)
    names = layer_names(arch)
    extractor = VGGFeatures(arch, names, weights=state_dict)
    x = torch.rand(2, 3, 32, 32)
    out = extractor(x)
    ref = torchvision_taps(features.double(), names, x.double())
    for name in names:
        scale = ref[name].abs().max().item()
        error = (out[name].double() - ref[name]).abs().max().item()
        assert error <= fp32_tolerance(arch, name) * scale, (name, error / scale, fp32_tolerance(arch, name))


def test_float64_input_affine_is_exact():
    """The fused range + ImageNet affine of a float64 module has no float32 rounding in it."""
    extractor = VGGFeatures("vgg11", ["conv1_1"], weights=None, input_range=(-1, 1)).double()
    x = torch.rand(1, 3, 8, 8, dtype=torch.float64) * 2 - 1
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float64).view(1, 3, 1, 1)
    expected = ((x + 1) / 2 - mean) / std  # the unfused formula in float64
    torch.testing.assert_close(extractor.normalize(x), expected, rtol=1e-14, atol=1e-14)


def test_conv_tap_not_corrupted_by_inplace_relu():
    """torchvision's in-place ReLU overwrites a kept conv output; featx's conv tap stays signed."""
    features, state_dict = torchvision_features("vgg19")
    extractor = VGGFeatures("vgg19", ["conv5_4", "relu5_4"], weights=state_dict)
    out = extractor(torch.rand(1, 3, 32, 32))
    assert (out["conv5_4"] < 0).any()
    torch.testing.assert_close(out["relu5_4"], torch.relu(out["conv5_4"]))
    # Only the ReLU right after a tapped layer is out-of-place.
    relus = {i: m.inplace for i, m in enumerate(extractor.features) if isinstance(m, nn.ReLU)}
    assert relus[35] is False and all(relus[i] for i in relus if i != 35)


def test_input_range_equivalences():
    state_dict = torchvision.models.vgg11(weights=None).state_dict()
    x = torch.rand(2, 3, 24, 24)
    taps = ["conv1_1", "relu2_1", "conv3_2"]
    ref = VGGFeatures("vgg11", taps, weights=state_dict)(x)
    variants = [
        (2 * x - 1, (-1, 1)),
        (255 * x, (0, 255)),
        (imagenet_normalize(x), "normalized"),
    ]
    for data, input_range in variants:
        out = VGGFeatures("vgg11", taps, weights=state_dict, input_range=input_range)(data)
        for name in taps:
            torch.testing.assert_close(out[name], ref[name], rtol=1e-4, atol=1e-4, msg=f"{input_range} {name}")


def test_normalized_input_skips_normalisation():
    extractor = VGGFeatures("vgg11", ["conv1_1"], weights=None, input_range="normalized")
    x = torch.randn(1, 3, 8, 8)
    assert extractor.normalize(x) is x


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("pooling", ["max", "avg", "none"])
def test_feature_info_matches_output_shapes(arch, pooling):
    names = layer_names(arch)
    deepest = names[-1] if pooling != "none" else names[len(names) // 2]
    taps = [n for n in names if n.startswith(("relu", "pool"))][::3] + [deepest]
    extractor = VGGFeatures(arch, taps, weights=None, pooling=pooling)
    # Nothing after the deepest tap is built.
    assert len(extractor.features) == extractor.feature_info[-1].index + 1
    size = 35 if pooling != "none" else 9
    out = extractor(torch.rand(1, 3, size, size + 6))
    assert list(out) == [info.name for info in extractor.feature_info]
    for info in extractor.feature_info:
        expected = (1, info.channels, size // info.stride, (size + 6) // info.stride)
        assert tuple(out[info.name].shape) == expected, info


def test_blur_and_conv_pooling_shapes_and_strides():
    blur = VGGFeatures("vgg11", ["relu2_1", "relu3_1"], weights=None, pooling="blur")
    out = blur(torch.rand(1, 3, 32, 32))
    assert [tuple(f.shape[-2:]) for f in out.values()] == [(16, 16), (8, 8)]
    conv = VGGFeatures("vgg11", ["relu2_1"], weights=None, pooling="conv", requires_grad=True)
    conv(torch.rand(1, 3, 32, 32))["relu2_1"].sum().backward()
    assert conv.features[2].weight.grad is not None  # the learnable pool trains


def test_avg_pooling_matches_torchvision_with_avgpool():
    features, state_dict = torchvision_features("vgg11")
    for i, module in enumerate(features):
        if isinstance(module, nn.MaxPool2d):
            features[i] = nn.AvgPool2d(2, 2)
    x = torch.rand(1, 3, 32, 32, dtype=torch.float64)
    out = VGGFeatures("vgg11", ["relu3_1"], weights=state_dict, pooling="avg").double()(x)
    ref = torchvision_taps(features[:8].double(), layer_names("vgg11")[:8], x)["relu3_1"]  # relu3_1 is index 7
    torch.testing.assert_close(out["relu3_1"], ref, rtol=FLOAT64_RTOL, atol=FLOAT64_RTOL * ref.abs().max().item())


def test_parameter_counts_match_torchvision():
    # The classical VGG19 features count is 20,024,384; torchvision is the independent reference.
    for arch in ARCHS:
        with torch.device("meta"):  # count only; no memory, no init cost
            ref = sum(p.numel() for p in getattr(torchvision.models, arch)(weights=None).features.parameters())
        assert sum(s.params for s in layer_specs(arch)) == ref, arch
    assert sum(s.params for s in layer_specs("vgg19")) == 20_024_384
    full = VGGFeatures("vgg19", "pool5", weights=None)
    assert sum(p.numel() for p in full.parameters()) == 20_024_384


def test_from_preset_uses_preset_arch_and_pooling():
    extractor = VGGFeatures.from_preset("gatys", weights=None)
    assert extractor.arch == "vgg19" and extractor.pooling == "avg"
    assert extractor.taps == ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu4_2", "relu5_1")
    # the taps given as a preset name come with the preset's pooling too (docs/api.md)
    by_name = VGGFeatures("vgg19", "gatys", weights=None)
    assert by_name.pooling == "avg" and by_name.taps == extractor.taps
    assert VGGFeatures("vgg19", "gatys", weights=None, pooling="max").pooling == "max"  # explicit wins
    with pytest.raises(ValueError, match="unknown preset 'esrgn'.*Did you mean 'esrgan'"):
        VGGFeatures.from_preset("esrgn", weights=None)
    with pytest.raises(ValueError, match="sets taps itself"):
        VGGFeatures.from_preset("esrgan", taps=["relu1_1"], weights=None)


# ---------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def small():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return VGGFeatures("vgg11", ["relu1_1", "relu3_1"], weights=None)


def test_wrong_ndim_message(small):
    with pytest.raises(ValueError, match=r"4-D tensor \(B, 3, H, W\), got shape \(3, 16, 16\).*unsqueeze\(0\)"):
        small(torch.rand(3, 16, 16))


def test_channel_messages(small):
    with pytest.raises(ValueError, match=r"got 1 channel.*gray='repeat'"):
        small(torch.rand(1, 1, 16, 16))
    with pytest.raises(ValueError, match=r"got 4 in shape \(1, 4, 16, 16\).*x\[:, :3\]"):
        small(torch.rand(1, 4, 16, 16))
    with pytest.raises(ValueError, match="got 2 in shape"):
        small(torch.rand(1, 2, 16, 16))


def test_gray_repeat_equals_rgb_input():
    state_dict = torchvision.models.vgg11(weights=None).state_dict()
    extractor = VGGFeatures("vgg11", ["relu2_1"], weights=state_dict, gray="repeat")
    y = torch.rand(2, 1, 16, 16)
    torch.testing.assert_close(extractor(y)["relu2_1"], extractor(y.repeat(1, 3, 1, 1))["relu2_1"])


def test_integer_and_mismatched_dtype(small):
    with pytest.raises(TypeError, match=r"floating point tensor, got dtype torch.uint8.*x.float\(\) / 255"):
        small(torch.zeros(1, 3, 16, 16, dtype=torch.uint8))
    with pytest.raises(TypeError, match="input dtype torch.float64 does not match the extractor's dtype torch.float32"):
        small(torch.rand(1, 3, 16, 16, dtype=torch.float64))
    with pytest.raises(TypeError, match="expected a torch.Tensor"):
        small([[0.0]])


def test_too_small_names_minimum(small):
    with pytest.raises(ValueError, match=r"3x16 is too small for tap 'relu3_1': it needs at least 4x4"):
        small(torch.rand(1, 3, 3, 16))
    deep = VGGFeatures("vgg11", ["relu5_1"], weights=None)
    with pytest.raises(ValueError, match="at least 16x16"):
        deep(torch.rand(1, 3, 15, 64))


def test_unknown_names_suggest_closest():
    with pytest.raises(ValueError, match=r"unknown tap 'relu3_5' for vgg19\. Did you mean 'relu3_4'\?"):
        VGGFeatures("vgg19", ["relu3_5"], weights=None)
    with pytest.raises(ValueError, match=r"unknown arch 'vgg20'\. Did you mean 'vgg19'\? Valid choices: 'vgg11', 'vgg11_bn'"):
        VGGFeatures("vgg20", ["relu1_1"], weights=None)
    with pytest.raises(ValueError, match=r"unknown pooling 'mean'. Valid choices: 'max', 'avg', 'blur', 'l2', 'conv', 'none'"):
        VGGFeatures("vgg19", ["relu1_1"], weights=None, pooling="mean")
    with pytest.raises(ValueError, match=r"unknown gray 'rgb'. Valid choices: 'error', 'repeat'"):
        VGGFeatures("vgg19", ["relu1_1"], weights=None, gray="rgb")
    with pytest.raises(ValueError, match="lo < hi"):
        VGGFeatures("vgg19", ["relu1_1"], weights=None, input_range=(1, 0))
    with pytest.raises(TypeError, match="input_range must be a"):
        VGGFeatures("vgg19", ["relu1_1"], weights=None, input_range=5)
    with pytest.raises(ValueError, match="at least one layer"):
        VGGFeatures("vgg19", [], weights=None)
    with pytest.raises(ValueError, match="requires_grad=True"):
        VGGFeatures("vgg19", ["relu2_1"], weights=None, pooling="conv")
    with pytest.raises(ValueError, match="preset 'lpips_vgg' is defined for 'vgg16'"):
        VGGFeatures("vgg19", "lpips_vgg", weights=None)


def test_empty_batch_and_meta_inputs_give_clear_errors(small):
    with pytest.raises(ValueError, match=r"at least one image, got an empty batch of shape \(0, 3, 16, 16\)"):
        small(torch.rand(0, 3, 16, 16))
    with pytest.raises(ValueError, match="meta device.*no data"):
        small(torch.empty(1, 3, 16, 16, device="meta"))


@pytest.mark.parametrize(
    ("data", "input_range", "problem"),
    [
        (lambda x: 2 * x - 1, (0, 1), "clearly outside"),  # tanh outputs fed to the (0, 1) default
        (lambda x: 255 * x, (0, 1), "clearly outside"),  # 8-bit values fed to (0, 1)
        (lambda x: x, (0, 255), "tiny part"),  # [0, 1] data declared (0, 255)
        (lambda x: 255 * x, (-1, 1), "clearly outside"),
    ],
)
def test_inputs_in_another_range_warn_once(data, input_range, problem):
    from featx.errors import InputRangeWarning

    extractor = VGGFeatures("vgg11", ["relu1_1"], weights=None, input_range=input_range)
    x = data(torch.linspace(0, 1, 3 * 16 * 16).view(1, 3, 16, 16))
    with pytest.warns(InputRangeWarning, match=rf"input values span .*{problem}.*input_range=.*filterwarnings"):
        extractor(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        extractor(x)  # once per module
        extractor(x)


def test_inputs_in_range_or_slightly_beyond_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        extractor = VGGFeatures("vgg11", ["relu1_1"], weights=None)
        ranged = VGGFeatures("vgg11", ["relu1_1"], weights=None, input_range=(-1, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        extractor(torch.rand(1, 3, 16, 16) * 1.6 - 0.3)  # an SR output overshooting [0, 1]
        ranged(torch.rand(1, 3, 16, 16) * 2 - 1)


def test_range_is_checked_on_the_first_calls_only():
    """A mismatch that first appears after the checked calls is not looked for (no host syncs)."""
    from featx.backbones.base import RANGE_CHECKED_CALLS
    from featx.errors import InputRangeWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        extractor = VGGFeatures("vgg11", ["relu1_1"], weights=None)
    good, bad = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16) * 2 - 1
    for _ in range(RANGE_CHECKED_CALLS - 1):
        extractor(good)
    with pytest.warns(InputRangeWarning):
        extractor(bad)  # the last checked call still sees it
    fresh = copy.deepcopy(VGGFeatures("vgg11", ["relu1_1"], weights=None))
    for _ in range(RANGE_CHECKED_CALLS):
        fresh(good)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fresh(bad)


def test_range_warning_reaches_loss_users():
    """The ttsr preset fed [-1, 1] images with the default (0, 1) range warns (its value is 3.3x off)."""
    from featx.errors import InputRangeWarning
    from featx.losses import PerceptualLoss

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loss = PerceptualLoss(preset="ttsr", arch="vgg19", weights=None)
    with pytest.warns(InputRangeWarning, match="input_range=\\(0, 1\\)"):
        loss(torch.rand(1, 3, 16, 16) * 2 - 1, torch.rand(1, 3, 16, 16) * 2 - 1)


# ---------------------------------------------------------------- frozen / learnable


class Parent(nn.Module):
    def __init__(self, extractor: VGGFeatures) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, 3, 1)
        self.extractor = extractor


def test_frozen_extractor_is_eval_locked_and_not_saved():
    extractor = VGGFeatures("vgg11", ["relu2_1"], weights=None)
    assert extractor.frozen and not any(p.requires_grad for p in extractor.parameters())
    parent = Parent(extractor).train()
    assert parent.training and not extractor.training
    keys = list(parent.state_dict())
    assert keys == ["head.weight", "head.bias"]
    # The extractor's own state_dict still holds its weights.
    assert "features.0.weight" in extractor.state_dict()
    # A parent checkpoint without the extractor loads strictly and keeps the extractor's weights.
    before = extractor.features[0].weight.clone()
    fresh = Parent(VGGFeatures("vgg11", ["relu2_1"], weights=extractor.state_dict()))
    fresh.load_state_dict(parent.state_dict(), strict=True)
    torch.testing.assert_close(fresh.extractor.features[0].weight, before)


def test_frozen_gets_no_gradient_but_input_does():
    extractor = VGGFeatures("vgg11", ["relu2_1"], weights=None)
    x = torch.rand(1, 3, 16, 16, requires_grad=True)
    extractor(x)["relu2_1"].square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in extractor.parameters())


def test_learnable_extractor_trains_and_is_saved():
    extractor = VGGFeatures("vgg11_bn", ["relu2_1"], weights=None, requires_grad=True)
    parent = Parent(extractor).train()
    assert extractor.training and not extractor.frozen
    extractor(torch.rand(2, 3, 16, 16))["relu2_1"].mean().backward()
    assert all(p.grad is not None for p in extractor.parameters())
    assert "extractor.features.0.weight" in parent.state_dict()
    assert "extractor.features.1.running_mean" in parent.state_dict()


def test_unfreezing_an_extractor_built_frozen_trains_but_is_not_saved_and_warns():
    extractor = VGGFeatures("vgg11", ["relu1_1"], weights=None)
    extractor.requires_grad_(True)
    assert not extractor.frozen and not extractor.learnable
    parent = Parent(extractor)
    with pytest.warns(UserWarning, match="built frozen and later unfrozen.*not saved"):
        keys = list(parent.state_dict())
    assert keys == ["head.weight", "head.bias"]


@pytest.mark.filterwarnings("ignore::featx.errors.InputRangeWarning")  # the random head's outputs
def test_learnable_extractor_frozen_later_is_still_saved_and_reloads_strictly():
    """Train -> freeze -> save -> strict reload (TTSR fine-tuning / export): nothing is lost."""
    trained = Parent(VGGFeatures("vgg11", ["relu2_1"], weights=None, requires_grad=True))
    optimizer = torch.optim.SGD(trained.parameters(), lr=0.1)
    trained.extractor(trained.head(torch.rand(2, 3, 16, 16)))["relu2_1"].mean().backward()
    optimizer.step()
    trained.requires_grad_(False)  # freeze for fine-tuning or export
    assert trained.extractor.frozen and trained.extractor.learnable
    checkpoint = trained.state_dict()
    assert "extractor.features.0.weight" in checkpoint
    reloaded = Parent(VGGFeatures("vgg11", ["relu2_1"], weights=None, requires_grad=True))
    reloaded.requires_grad_(False)
    reloaded.load_state_dict(checkpoint, strict=True)
    for key, value in trained.state_dict().items():
        torch.testing.assert_close(reloaded.state_dict()[key], value, rtol=0, atol=0, msg=key)
    # A checkpoint that lacks a learnable extractor's weights is refused, not silently accepted.
    with pytest.raises(RuntimeError, match="Missing key.*extractor.features.0.weight"):
        reloaded.load_state_dict({"head.weight": checkpoint["head.weight"], "head.bias": checkpoint["head.bias"]})


def test_deepcopy_pickle_and_to_dtype():
    extractor = VGGFeatures("vgg11_bn", ["conv2_1", "relu2_1"], weights=None)
    x = torch.rand(1, 3, 16, 16)
    ref = extractor(x)
    for clone in (copy.deepcopy(extractor), pickle.loads(pickle.dumps(extractor))):
        out = clone(x)
        for name in ref:
            torch.testing.assert_close(out[name], ref[name])
        assert list(Parent(clone).state_dict()) == ["head.weight", "head.bias"]
    double = copy.deepcopy(extractor).to(torch.float64)
    out = double(x.double())
    torch.testing.assert_close(out["relu2_1"].float(), ref["relu2_1"], rtol=1e-5, atol=1e-5)


def test_channels_last_input_gives_same_features():
    extractor = VGGFeatures("vgg11", ["relu3_1"], weights=None)
    x = torch.rand(2, 3, 16, 16)
    torch.testing.assert_close(
        extractor(x.contiguous(memory_format=torch.channels_last))["relu3_1"],
        extractor(x)["relu3_1"],
        rtol=1e-5,
        atol=1e-5,
    )


def test_bfloat16_autocast_runs_close_to_fp32():
    extractor = VGGFeatures("vgg11", ["relu2_1"], weights=None)
    x = torch.rand(1, 3, 16, 16)
    ref = extractor(x)["relu2_1"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = extractor(x)["relu2_1"]
    assert low.dtype == torch.bfloat16
    rel = (low.float() - ref).norm() / ref.norm()
    assert rel < 0.05


class LossParent(nn.Module):
    """An SR-like model whose forward runs a frozen extractor on its own output."""

    def __init__(self, extractor: VGGFeatures) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, 3, 1)
        self.extractor = extractor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.extractor(self.head(x))["relu2_1"].mean()


@pytest.mark.filterwarnings("ignore::featx.errors.InputRangeWarning")  # the random head's outputs
def test_ddp_wrapped_parent_single_process(tmp_path):
    """A frozen extractor inside a DDP-wrapped model (gloo, one rank): the step goes through
    ``DistributedDataParallel.forward`` and its gradient all-reduce, and equals the plain model's."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        parent = LossParent(VGGFeatures("vgg11", ["relu2_1"], weights=None))
        plain = copy.deepcopy(parent)
        model = nn.parallel.DistributedDataParallel(parent)
        x = torch.rand(2, 3, 16, 16)
        model(x).backward()
        plain(x).backward()
        torch.testing.assert_close(parent.head.weight.grad, plain.head.weight.grad)
        assert all(p.grad is None for p in parent.extractor.parameters())
        assert list(model.state_dict()) == ["module.head.weight", "module.head.bias"]
    finally:
        dist.destroy_process_group()


def max_blur_pool_formula(x: torch.Tensor) -> torch.Tensor:
    """Anti-aliased max pooling (Zhang 2019, "Making CNNs shift-invariant again"): 2x2 max with
    stride 1, then the binomial [1, 2, 1] x [1, 2, 1] / 16 blur with stride 2, zero padding 1."""
    x = torch.nn.functional.max_pool2d(x, kernel_size=2, stride=1)
    row = torch.tensor([1.0, 2.0, 1.0], dtype=x.dtype)
    kernel = (row[:, None] * row[None, :] / 16).expand(x.shape[1], 1, 3, 3)
    return torch.nn.functional.conv2d(x, kernel, stride=2, padding=1, groups=x.shape[1])


def test_blur_pooling_matches_kornia_and_the_formula():
    import kornia

    x = torch.rand(2, 4, 13, 16, dtype=torch.float64)
    torch.testing.assert_close(kornia.filters.MaxBlurPool2D(kernel_size=3)(x), max_blur_pool_formula(x))
    # The whole blur-pooled backbone: torchvision's VGG with each max pool replaced by kornia's.
    features, state_dict = torchvision_features("vgg11")
    for i, module in enumerate(features):
        if isinstance(module, nn.MaxPool2d):
            features[i] = kornia.filters.MaxBlurPool2D(kernel_size=3)
    names = layer_names("vgg11")
    extractor = VGGFeatures("vgg11", ["relu2_1", "relu3_1", "pool3"], weights=state_dict, pooling="blur").double()
    image = torch.rand(1, 3, 32, 32, dtype=torch.float64)
    out = extractor(image)
    ref = torchvision_taps(features.double(), names, image)
    for name in out:
        scale = ref[name].abs().max().item()
        torch.testing.assert_close(out[name], ref[name], rtol=FLOAT64_RTOL, atol=FLOAT64_RTOL * scale, msg=name)


@pytest.mark.parametrize("pooling", POOLINGS)
def test_every_pooling_builds(pooling):
    extractor = VGGFeatures("vgg11", ["relu2_1"], weights=None, pooling=pooling, requires_grad=pooling == "conv")
    assert extractor(torch.rand(1, 3, 8, 8))["relu2_1"].shape[1] == 128
