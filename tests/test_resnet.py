"""featx.ResNetFeatures against torchvision's ``resnet18/34/50/101`` (the reference) on identical random
weights: names, strides and parameter counts, every tap in float64 and float32, truncation, strict
loading of torchvision's checkpoint keys, the frozen/learnable state-dict rules, offline weights and the
features cache, and ``featx layers``.

The reference outputs are torchvision's own modules run by torchvision's own ``ResNet.forward``, each
module's output cloned by a forward hook the moment it is produced (before an in-place ReLU can change
it). BatchNorm weights, biases and running statistics are randomised so that a swapped or skipped
statistic would show."""

from __future__ import annotations

import copy
import math
import os
import pickle
from pathlib import Path

import pytest
import torch
import torchvision
from click.testing import CliRunner
from torch import nn

from featx import ResNetFeatures
from featx.backbones import RESNET_ARCHS, available_taps, build_backbone, family_of
from featx.backbones.base import IMAGENET_MEAN, IMAGENET_STD
from featx.backbones.resnet import resnet_layer_table, resnet_layers, resnet_min_input_size, resnet_output_size
from featx.errors import RandomWeightsWarning, UnverifiedWeightsWarning, WeightsLoadError, WeightsNotFoundError
from featx.weights import ResNetWeights, default_backbone, featx_home
from featx_cli.main import cli

pytestmark = pytest.mark.filterwarnings("ignore::featx.errors.RandomWeightsWarning")

# Exactness is checked in float64, where summation order (threads, SIMD width, oneDNN kernels) moves
# results by ~1e-16 relative per operation, so a 1e-10 bound holds on any CPU.
FLOAT64_RTOL = 1e-10
STAGE_TAPS = ("layer1", "layer2", "layer3", "layer4")


def torchvision_resnet(arch: str, seed: int = 0) -> torchvision.models.ResNet:
    """The reference: torchvision's own ResNet with random weights and random BatchNorm statistics, in eval mode."""
    torch.manual_seed(seed)
    model = getattr(torchvision.models, arch)(weights=None)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.2)
                module.running_mean.normal_(0, 0.2)
                module.running_var.uniform_(0.5, 2.0)
                module.num_batches_tracked.fill_(1000)
    return model.eval()


def imagenet_normalize(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float64).view(1, 3, 1, 1)
    return ((x.double() - mean) / std).to(x.dtype)


def torchvision_outputs(model: nn.Module, x: torch.Tensor, taps) -> dict[str, torch.Tensor]:
    """The output of each named module in torchvision's own forward, cloned as soon as it is produced."""
    kept: dict[str, torch.Tensor] = {}
    modules = dict(model.named_modules())
    handles = [
        modules[name].register_forward_hook(lambda _m, _i, output, name=name: kept.__setitem__(name, output.clone()))
        for name in taps
    ]
    try:
        with torch.no_grad():
            model(imagenet_normalize(x))
    finally:
        for handle in handles:
            handle.remove()
    return kept


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def all_taps(arch: str) -> tuple[str, ...]:
    return tuple(layer.name for layer in resnet_layers(arch))


class Parent(nn.Module):
    def __init__(self, extractor: nn.Module) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, 3, 1)
        self.extractor = extractor


# ---------------------------------------------------------------------------------------------
# Names, channels, strides and parameters follow torchvision
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", tuple(RESNET_ARCHS))
def test_tap_table_follows_torchvision(arch):
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        reference = getattr(torchvision.models, arch)()
    modules = dict(reference.named_modules())
    layers = resnet_layers(arch)
    assert [layer.position for layer in layers] == list(range(len(layers)))
    blocks = [name for name, module in modules.items() if isinstance(module, (torchvision.models.resnet.BasicBlock,
                                                                              torchvision.models.resnet.Bottleneck))]  # fmt: skip
    assert [layer.name for layer in layers if layer.kind == "block"] == blocks
    assert [layer.name for layer in layers if layer.kind != "block"] == ["conv1", "bn1", "relu", "maxpool", *STAGE_TAPS]
    for layer in layers:
        module = modules[layer.name]  # every tap is one of torchvision's module names
        if layer.kind != "stage":
            assert layer.params == count(module), layer.name
        last = module[-1] if layer.kind == "stage" else module
        if layer.kind in ("block", "stage"):
            out = last.conv3 if hasattr(last, "conv3") else last.conv2
            assert layer.channels == out.out_channels, layer.name
    assert sum(layer.params for layer in layers) + count(reference.fc) == count(reference)
    assert [info.name for info in available_taps(arch)] == list(all_taps(arch))
    assert family_of(arch) == "resnet"


def test_output_sizes_follow_torchvision_for_every_input_size():
    reference = torchvision_resnet("resnet18")
    for size in (1, 2, 3, 5, 31, 32, 33, 47, 64):
        expected = torchvision_outputs(reference, torch.rand(1, 3, size, size + 1), all_taps("resnet18"))
        for layer in resnet_layers("resnet18"):
            shape = (layer.channels, resnet_output_size(size, layer.stride), resnet_output_size(size + 1, layer.stride))
            assert tuple(expected[layer.name].shape[1:]) == shape, (size, layer.name)


def test_feature_info_matches_output_shapes():
    extractor = ResNetFeatures("resnet18", all_taps("resnet18"), weights=None)
    assert extractor.feature_info == available_taps("resnet18")
    for height, width in ((64, 48), (37, 45)):
        feats = extractor(torch.rand(1, 3, height, width))
        assert list(feats) == list(all_taps("resnet18"))
        for info in extractor.feature_info:
            shape = (info.channels, math.ceil(height / info.stride), math.ceil(width / info.stride))
            assert tuple(feats[info.name].shape[1:]) == shape, info.name


# ---------------------------------------------------------------------------------------------
# Equal to torchvision on identical weights
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arch", "taps"),
    [
        ("resnet18", None),  # every tap
        ("resnet34", ("bn1", "layer2.3", "layer3.5", "layer4")),
        ("resnet50", ("relu", "layer1.0", "layer2", "layer3.5", "layer4.2")),
        ("resnet101", ("maxpool", "layer3.22", "layer4")),
    ],
)
def test_taps_match_torchvision_in_float64(arch, taps):
    taps = taps or all_taps(arch)
    reference = torchvision_resnet(arch).double()
    extractor = ResNetFeatures(arch, taps, weights=reference.state_dict()).double()
    x = torch.rand(2 if arch == "resnet18" else 1, 3, 64, 48, dtype=torch.float64)
    out = extractor(x)
    expected = torchvision_outputs(reference, x, taps)
    assert list(out) == list(taps)
    for tap in taps:
        ref = expected[tap]
        torch.testing.assert_close(out[tap], ref, rtol=FLOAT64_RTOL, atol=FLOAT64_RTOL * ref.abs().max().item(), msg=tap)


def fp32_tolerance(reference: nn.Module, tap: str) -> float:
    """Bound on ``|fp32 - float64|`` relative to the tap's largest magnitude.

    A convolution sums ``K = in_channels x kernel area`` products; with round-to-nearest the
    accumulated error is about ``sqrt(K) u`` relative (``u = 2**-24``, float32's unit roundoff) for
    random-sign terms, and the errors of successive layers add (BatchNorm in eval mode and the
    residual sums add one rounding each), so after ``n`` convolutions it stays below
    ``n sqrt(K_max) u`` of the magnitude; a factor 8 covers other kernels' blocked or pairwise
    summation orders (the derivation of the VGG and SqueezeNet tests). ``n`` counts every convolution
    of torchvision's model up to the tap, downsample branches included (an over-count)."""
    names = [name for name, _ in reference.named_modules()]
    end = max(i for i, name in enumerate(names) if name == tap or name.startswith(tap + "."))
    convs = [m for _, m in list(reference.named_modules())[: end + 1] if isinstance(m, nn.Conv2d)]
    sizes = [m.in_channels * m.kernel_size[0] * m.kernel_size[1] for m in convs]
    return 8 * len(sizes) * math.sqrt(max(sizes)) * 2**-24


def test_every_tap_matches_torchvision_in_float32_within_rounding():
    """The float32 extractor against torchvision's ResNet-18 run in float64 (same weights)."""
    reference = torchvision_resnet("resnet18")
    taps = all_taps("resnet18")
    extractor = ResNetFeatures("resnet18", taps, weights=reference.state_dict())
    x = torch.rand(2, 3, 64, 48)
    out = extractor(x)
    expected = torchvision_outputs(reference.double(), x.double(), taps)
    for tap in taps:
        ref = expected[tap]
        error = (out[tap].double() - ref).abs().max().item() / ref.abs().max().item()
        assert error <= fp32_tolerance(reference, tap), (tap, error)


def test_bn1_is_the_pre_relu_value_although_torchvision_relus_in_place():
    reference = torchvision_resnet("resnet18")
    extractor = ResNetFeatures("resnet18", "conv1,bn1,relu,layer1", weights=reference.state_dict())
    assert extractor.relu.inplace is False  # made out-of-place because bn1 is tapped
    x = torch.rand(1, 3, 32, 32)
    feats = extractor(x)
    assert feats["bn1"].min() < 0
    assert torch.equal(feats["relu"], feats["bn1"].clamp(min=0))
    torch.testing.assert_close(feats["bn1"], torchvision_outputs(reference, x, ["bn1"])["bn1"], rtol=1e-5, atol=1e-5)
    # torchvision's own extractor returns bn1 after the in-place ReLU ran over it: the bug featx avoids
    from torchvision.models.feature_extraction import create_feature_extractor

    with torch.no_grad():
        corrupted = create_feature_extractor(reference, ["bn1", "relu"])(imagenet_normalize(x))
    assert corrupted["bn1"].min() >= 0
    # block and stage outputs are never changed by later layers, so untapped ReLUs stay in place
    assert ResNetFeatures("resnet18", "relu,layer1.0,layer1", weights=None).relu.inplace is True


@pytest.mark.filterwarnings("ignore::featx.errors.InputRangeWarning")
def test_learnable_extractor_trains_as_torchvision_does():
    """In train mode BatchNorm uses batch statistics and updates its running ones, as torchvision's."""
    reference = torchvision_resnet("resnet18").double().train()
    extractor = ResNetFeatures("resnet18", "layer2", weights=reference.state_dict(), requires_grad=True).double()
    assert extractor.training
    x = torch.rand(4, 3, 32, 32, dtype=torch.float64, requires_grad=True)
    out = extractor(x)["layer2"]
    expected = torchvision_outputs(reference, x.detach(), ["layer2"])["layer2"]
    torch.testing.assert_close(out.detach(), expected, rtol=FLOAT64_RTOL, atol=FLOAT64_RTOL * expected.abs().max().item())
    torch.testing.assert_close(extractor.layer2[1].bn2.running_var, reference.layer2[1].bn2.running_var, rtol=1e-12, atol=0)
    out.square().mean().backward()
    assert all(p.grad is not None for p in extractor.parameters())  # nothing unused (DDP needs that)


# ---------------------------------------------------------------------------------------------
# Tap names and errors
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arch", "tap", "suggestion"),
    [("resnet18", "layer3.2", "layer3.1"), ("resnet50", "layr4", "layer4"), ("resnet101", "bn_1", "bn1")],
)
def test_unknown_taps_suggest_the_closest(arch, tap, suggestion):
    with pytest.raises(ValueError) as info:
        ResNetFeatures(arch, tap, weights=None)
    message = str(info.value)
    assert message.startswith(f"unknown tap {tap!r} for {arch}. Did you mean {suggestion!r}? Valid choices: 'conv1', 'bn1'")
    last = RESNET_ARCHS[arch].depths[2] - 1
    assert f"'layer3.0' ... 'layer3.{last}'" in message


def test_argument_errors():
    with pytest.raises(
        ValueError, match=r"unknown arch 'resnet152'\. Did you mean 'resnet\d+'\? Valid choices: 'resnet18', 'resnet34'"
    ):
        ResNetFeatures("resnet152", "layer1", weights=None)
    with pytest.raises(ValueError, match="at least one layer of resnet18"):
        ResNetFeatures("resnet18", " , ", weights=None)
    with pytest.raises(TypeError, match="tap names must be strings"):
        ResNetFeatures("resnet18", ["layer1", 3], weights=None)
    module = build_backbone("resnet34", "layer2,conv1,layer2", weights=None)
    assert type(module) is ResNetFeatures and module.taps == ("conv1", "layer2")


def test_too_small_inputs_name_the_minimum():
    assert resnet_min_input_size("resnet18", "conv1") == 2 and resnet_min_input_size("resnet101", "layer4") == 32
    reference = torchvision_resnet("resnet18")
    extractor = ResNetFeatures("resnet18", "layer3.1,layer4", weights=reference.state_dict())
    assert extractor.min_input_size == 32
    assert extractor(torch.rand(1, 3, 32, 32))["layer4"].shape == (1, 512, 1, 1)
    with pytest.raises(ValueError, match=r"input of size 31x64 is too small for tap 'layer4': it needs at least 32x32"):
        extractor(torch.rand(1, 3, 31, 64))
    assert ResNetFeatures("resnet18", "maxpool", weights=None)(torch.rand(1, 3, 4, 4))["maxpool"].shape == (1, 64, 1, 1)


def test_input_range_and_gray():
    state = torchvision_resnet("resnet18").state_dict()
    x = torch.rand(2, 3, 33, 33)
    base = ResNetFeatures("resnet18", "bn1,layer2", weights=state)(x)
    minus_one = ResNetFeatures("resnet18", "bn1,layer2", weights=state, input_range=(-1, 1))(2 * x - 1)
    for tap in base:
        torch.testing.assert_close(minus_one[tap], base[tap], rtol=1e-5, atol=1e-5)
    normalized = ResNetFeatures("resnet18", "bn1,layer2", weights=state, input_range="normalized")(imagenet_normalize(x))
    torch.testing.assert_close(normalized["layer2"], base["layer2"], rtol=1e-5, atol=1e-5)
    gray = ResNetFeatures("resnet18", "layer1", weights=state, gray="repeat")
    torch.testing.assert_close(gray(x[:, :1])["layer1"], gray(x[:, :1].expand(-1, 3, -1, -1))["layer1"], rtol=0, atol=0)
    with pytest.raises(ValueError, match="gray='repeat'"):
        ResNetFeatures("resnet18", "layer1", weights=state)(x[:, :1])


# ---------------------------------------------------------------------------------------------
# Truncation and strict loading
# ---------------------------------------------------------------------------------------------


def test_only_the_modules_up_to_the_deepest_tap_are_built(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the whole torchvision model was built")

    monkeypatch.setattr(torchvision.models.resnet.ResNet, "__init__", refuse)
    stem = ResNetFeatures("resnet50", "bn1", weights=None)
    assert [name for name, _ in stem.named_children()] == ["conv1", "bn1"]  # not even the ReLU after it
    cut = ResNetFeatures("resnet50", "layer3.1", weights=None)
    assert [name for name, _ in cut.named_children()] == ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3"]
    assert len(cut.layer3) == 2 and not hasattr(cut, "fc") and not hasattr(cut, "avgpool")


def test_a_checkpoint_is_copied_into_uninitialised_modules(monkeypatch):
    """With weights given, the modules are created on the meta device and allocated: no random initialisation
    runs (construction cost), and every tensor, BatchNorm statistics included, comes from the checkpoint."""
    state = torchvision_resnet("resnet18").state_dict()

    def refuse(tensor, *args, **kwargs):
        if not tensor.is_meta:  # on the meta device an initialiser touches no memory
            raise AssertionError("a random initialisation ran although a checkpoint was given")
        return tensor

    for name in ("kaiming_normal_", "kaiming_uniform_", "uniform_", "constant_", "ones_", "zeros_"):
        monkeypatch.setattr(torch.nn.init, name, refuse)
    extractor = ResNetFeatures("resnet18", "layer2", weights=state)
    for key, value in extractor.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert all(tensor.device.type == "cpu" for tensor in [*extractor.parameters(), *extractor.buffers()])


@pytest.mark.parametrize(("arch", "tap"), [("resnet18", "layer4"), ("resnet50", "layer3.1"), ("resnet101", "layer2.0")])
def test_truncated_parameters_equal_torchvision_counts(arch, tap):
    with torch.device("meta"):
        reference = getattr(torchvision.models, arch)()
    stage, block = int(tap[5]), int(tap.split(".")[1]) if "." in tap else None
    kept = [reference.conv1, reference.bn1, *(getattr(reference, f"layer{i}") for i in range(1, stage))]
    kept.append(getattr(reference, f"layer{stage}")[: None if block is None else block + 1])
    assert count(ResNetFeatures(arch, tap, weights=None)) == sum(count(module) for module in kept)
    # torchvision's meta["num_params"] is the whole model, fc included
    assert count(reference) == ResNetWeights.default(arch).meta["num_params"]


def test_loading_is_strict_inside_the_built_modules():
    state = torchvision_resnet("resnet18").state_dict()
    with pytest.raises(WeightsLoadError, match="missing keys") as info:
        ResNetFeatures("resnet18", "layer2", weights={k: v for k, v in state.items() if k != "layer2.0.downsample.1.bias"})
    assert info.value.missing == ("layer2.0.downsample.1.bias",)
    with pytest.raises(WeightsLoadError, match=r"shape mismatches.*layer1\.1\.conv2\.weight"):
        ResNetFeatures("resnet18", "layer1", weights={**state, "layer1.1.conv2.weight": torch.zeros(64, 64, 1, 1)})
    with pytest.raises(WeightsLoadError, match=r"unexpected keys.*layer1\.0\.extra\.weight"):
        ResNetFeatures("resnet18", "layer1", weights={**state, "layer1.0.extra.weight": torch.zeros(1)})
    # a ResNet-50 checkpoint is not a ResNet-18 one: the message names the scope and the key layout
    with pytest.raises(WeightsLoadError) as info:
        ResNetFeatures("resnet18", "layer1", weights=torchvision_resnet("resnet50").state_dict())
    message = str(info.value)
    assert "does not fit resnet18 up to layer1 (layer1.1)" in message and "layer1.0.conv3.weight" in message
    assert "Is it a checkpoint of another architecture than resnet18?" in message and "fc.* and the layers" in message
    # fc, deeper blocks and missing num_batches_tracked (checkpoints older than torch 0.4.1) are fine
    trimmed = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked") and not k.startswith("layer4")}
    extractor = ResNetFeatures("resnet18", "layer3.1", weights=trimmed)
    assert extractor.weights_id == "state_dict" and int(extractor.layer1[0].bn1.num_batches_tracked) == 0
    with pytest.raises(WeightsLoadError, match=r"missing keys.*layer4\.0\.conv1\.weight"):
        ResNetFeatures("resnet18", "layer4.0", weights=trimmed)


# ---------------------------------------------------------------------------------------------
# Frozen or learnable, copies
# ---------------------------------------------------------------------------------------------


def test_frozen_extractor_is_eval_locked_and_not_saved():
    extractor = ResNetFeatures("resnet18", "layer2", weights=None)
    assert extractor.frozen and not any(p.requires_grad for p in extractor.parameters())
    parent = Parent(extractor).train()
    assert parent.training and not extractor.training and not extractor.layer2[0].bn1.training
    assert list(parent.state_dict()) == ["head.weight", "head.bias"]
    assert "layer2.0.downsample.0.weight" in extractor.state_dict()
    fresh = Parent(ResNetFeatures("resnet18", "layer2", weights=extractor.state_dict()))
    fresh.load_state_dict(parent.state_dict(), strict=True)  # keeps the extractor's weights
    torch.testing.assert_close(fresh.extractor.conv1.weight, extractor.conv1.weight, rtol=0, atol=0)
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    extractor(x)["layer2"].square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in extractor.parameters())
    assert int(extractor.bn1.num_batches_tracked) == 0  # eval mode: running statistics untouched


@pytest.mark.filterwarnings("ignore::featx.errors.InputRangeWarning")  # the random head's outputs
def test_learnable_extractor_is_saved_also_after_freezing_and_reloads_strictly():
    trained = Parent(ResNetFeatures("resnet18", "layer1", weights=None, requires_grad=True))
    assert trained.extractor.training and not trained.extractor.frozen
    optimizer = torch.optim.SGD(trained.parameters(), lr=0.1)
    trained.extractor(trained.head(torch.rand(2, 3, 32, 32)))["layer1"].mean().backward()
    optimizer.step()
    trained.requires_grad_(False)  # freeze for fine-tuning or export
    assert trained.extractor.frozen and trained.extractor.learnable
    checkpoint = trained.state_dict()
    assert "extractor.layer1.1.bn2.running_var" in checkpoint and "extractor.bn1.num_batches_tracked" in checkpoint
    reloaded = Parent(ResNetFeatures("resnet18", "layer1", weights=None, requires_grad=True))
    reloaded.load_state_dict(checkpoint, strict=True)
    for key, value in checkpoint.items():
        torch.testing.assert_close(reloaded.state_dict()[key], value, rtol=0, atol=0, msg=key)
    with pytest.raises(RuntimeError, match=r"Missing key.*extractor\.conv1\.weight"):
        reloaded.load_state_dict({"head.weight": checkpoint["head.weight"], "head.bias": checkpoint["head.bias"]})


def test_unfreezing_an_extractor_built_frozen_is_not_saved_and_warns():
    extractor = ResNetFeatures("resnet18", "conv1", weights=None)
    extractor.requires_grad_(True)
    with pytest.warns(UserWarning, match="built frozen and later unfrozen.*not saved"):
        keys = list(Parent(extractor).state_dict())
    assert keys == ["head.weight", "head.bias"]


def test_deepcopy_pickle_and_to_dtype():
    extractor = ResNetFeatures("resnet18", "bn1,layer1.0,layer2", weights=None)
    x = torch.rand(1, 3, 32, 32)
    ref = extractor(x)
    for clone in (copy.deepcopy(extractor), pickle.loads(pickle.dumps(extractor))):
        out = clone(x)
        for name in ref:
            torch.testing.assert_close(out[name], ref[name], rtol=0, atol=0)
        assert list(Parent(clone).state_dict()) == ["head.weight", "head.bias"]
    double = copy.deepcopy(extractor).to(torch.float64)
    torch.testing.assert_close(double(x.double())["layer2"].float(), ref["layer2"], rtol=1e-5, atol=1e-5)
    assert "arch='resnet18', taps=('bn1', 'layer1.0', 'layer2'), weights='random'" in repr(extractor)


# ---------------------------------------------------------------------------------------------
# Weights: files, the features cache, "DEFAULT" offline, random initialisation
# ---------------------------------------------------------------------------------------------


def test_checkpoint_file_loads_into_featx_and_torchvision_alike(tmp_path):
    import safetensors.torch

    torch.manual_seed(1)
    saved = torchvision.models.resnet50(weights=None)  # the whole model, fc included, as torchvision saves it
    pth, st = tmp_path / "resnet50.pth", tmp_path / "resnet50.safetensors"
    torch.save(saved.state_dict(), pth)
    safetensors.torch.save_file({k: v.contiguous() for k, v in saved.state_dict().items()}, st)
    reference = copy.deepcopy(saved)  # a model of the same architecture, then loaded from the file
    with torch.no_grad():
        for param in reference.parameters():
            param.zero_()
    reference.load_state_dict(torch.load(pth, weights_only=True))
    reference.eval()
    x = torch.rand(1, 3, 64, 64)
    expected = torchvision_outputs(reference, x, ["bn1", "layer2.1", "layer4"])
    shallow = ResNetFeatures("resnet50", "bn1,layer2.1", weights=pth)  # the first load writes the features cache
    caches = sorted((featx_home() / "cache").glob("*-resnet.safetensors"))
    assert len(caches) == 1 and caches[0].name.startswith(f"resnet50-{shallow.weights_sha256[:16]}")
    with safetensors.safe_open(str(caches[0]), framework="pt") as handle:  # every backbone tensor, no fc
        assert sorted(handle.keys()) == sorted(k for k in saved.state_dict() if not k.startswith("fc."))
    deep = ResNetFeatures("resnet50", "layer4", weights=pth)  # a deeper load reads the cache
    from_st = ResNetFeatures("resnet50", "layer4", weights=st)
    assert shallow.weights_id == deep.weights_id == f"file:{pth}" and deep.weights_sha256 is not None
    for tap, feats in (("bn1", shallow(x)), ("layer2.1", shallow(x)), ("layer4", deep(x))):
        torch.testing.assert_close(feats[tap], expected[tap], rtol=1e-5, atol=1e-5 * expected[tap].abs().max().item())
    torch.testing.assert_close(from_st(x)["layer4"], deep(x)["layer4"], rtol=0, atol=0)


def test_default_weights_are_found_offline():
    # Reference: torchvision's ResNet50_Weights (URLs, parameter count).
    member = ResNetWeights.RESNET50_IMAGENET1K_V1
    assert member.url == torchvision.models.ResNet50_Weights.IMAGENET1K_V1.url
    assert default_backbone("resnet50") is member
    with pytest.raises(WeightsNotFoundError, match="featx weights download RESNET50_IMAGENET1K_V1") as info:
        ResNetFeatures("resnet50", "layer1")
    assert member.file_name in str(info.value)
    hub = Path(os.environ["TORCH_HOME"]) / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    model = torchvision_resnet("resnet50")
    v2 = ResNetWeights.RESNET50_IMAGENET1K_V2
    torch.save(model.state_dict(), hub / v2.file_name)  # fabricated: random values, not the real hash
    with pytest.warns(UnverifiedWeightsWarning, match="RESNET50_IMAGENET1K_V2"):
        extractor = ResNetFeatures("resnet50", "layer1", weights=torchvision.models.ResNet50_Weights.IMAGENET1K_V2)
    assert extractor.weights_id == "unverified:RESNET50_IMAGENET1K_V2" and extractor.weights_verified is False
    torch.testing.assert_close(extractor.layer1[2].bn3.running_mean, model.layer1[2].bn3.running_mean, rtol=0, atol=0)
    with pytest.warns(UnverifiedWeightsWarning):
        by_name = ResNetFeatures("resnet50", "layer1", weights="RESNET50_IMAGENET1K_V2")
    assert by_name.weights_id == extractor.weights_id


def test_random_weights_warn_and_use_torchvisions_initialisation():
    with pytest.warns(RandomWeightsWarning):
        extractor = ResNetFeatures("resnet50", "layer1", weights=None)
    assert extractor.weights_id == "random"
    # torchvision: kaiming_normal_ with fan_out and gain sqrt(2) for convolutions; BatchNorm 1 and 0
    conv = extractor.layer1[0].conv2  # 3x3, 64 -> 64: fan_out 576
    assert abs(float(conv.weight.std()) - math.sqrt(2 / 576)) < 0.05 * math.sqrt(2 / 576)
    assert torch.equal(extractor.layer1[0].bn3.weight, torch.ones(256)) and torch.count_nonzero(extractor.bn1.bias) == 0


# ---------------------------------------------------------------------------------------------
# featx layers
# ---------------------------------------------------------------------------------------------


def test_layer_table_shapes_and_counts_follow_torchvision():
    reference = torchvision_resnet("resnet50")
    rows = resnet_layer_table("resnet50", 45, 61)
    expected = torchvision_outputs(reference, torch.rand(1, 3, 45, 61), [r.name for r in rows if r.index is not None])
    for row in rows:
        if row.index is not None:
            assert row.shape == tuple(expected[row.name].shape[1:]), row.name
            assert row.params == count(dict(reference.named_modules())[row.name]), row.name
    assert sum(row.params for row in rows) == count(reference) == 25_557_032
    assert [row.name for row in rows[-2:]] == ["avgpool", "fc"]
    with pytest.raises(ValueError, match="a ResNet has no convolutional head"):
        resnet_layer_table("resnet50", head="conv")


def test_cli_layers_resnet18_prints_torchvisions_total():
    result = CliRunner().invoke(cli, ["layers", "resnet18", "--taps", "bn1,layer1,layer3.0"])
    assert result.exit_code == 0, result.output
    assert "Total params: 11,689,512" in result.output and "Head params: 513,000" in result.output
    assert count(torchvision.models.resnet18()) == 11_689_512  # the figure a user gets from torchvision
    marked = [line.split()[1] for line in result.output.splitlines() if line.startswith("* ")]
    assert marked == ["bn1", "layer1.1", "layer3.0"]  # a stage marks its last block
    plain = CliRunner().invoke(cli, ["layers", "resnet18", "--head", "none"])
    assert "Total params: 11,176,512" in plain.output and " fc " not in plain.output
    bad = CliRunner().invoke(cli, ["layers", "resnet19"])
    assert bad.exit_code == 2 and "Did you mean 'resnet18'" in bad.output
    bad = CliRunner().invoke(cli, ["layers", "resnet18", "--pooling", "avg"])
    assert bad.exit_code == 2 and "VGG option" in bad.output
