"""featx.SqueezeNetFeatures against torchvision's ``squeezenet1_1`` (the reference) on identical random
weights: names, every tap in float64 and float32, truncation, strict loading, the frozen/learnable
state-dict rules, offline weights, and LPIPS's slicing as the ``lpips`` package does it."""

from __future__ import annotations

import copy
import math
import os
import pickle
import re
import warnings
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from featx.backbones.base import IMAGENET_MEAN, IMAGENET_STD
from featx.backbones.catalog import available_taps, build_backbone, family_of
from featx.backbones.squeezenet import (
    FIRE_PARTS,
    SQUEEZENET_ALIASES,
    SQUEEZENET_LAYERS,
    SqueezeNetFeatures,
    squeezenet_min_input_size,
    squeezenet_output_size,
)
from featx.errors import RandomWeightsWarning, UnverifiedWeightsWarning, WeightsLoadError, WeightsNotFoundError
from featx.presets import PRESETS
from featx.weights import SqueezeNetWeights, default_backbone

pytestmark = pytest.mark.filterwarnings("ignore::featx.errors.RandomWeightsWarning")

ALL_TAPS = tuple(layer.name for layer in SQUEEZENET_LAYERS)
LPIPS_TAPS = ("relu1", "fire3", "fire5", "fire6", "fire7", "fire8", "fire9")
# Exactness is checked in float64, where summation order (threads, SIMD width, oneDNN kernels) moves
# results by ~1e-16 relative per operation, so a 1e-10 bound holds on any CPU.
FLOAT64_RTOL = 1e-10


def torchvision_squeezenet() -> torchvision.models.SqueezeNet:
    """The reference: torchvision's own SqueezeNet 1.1 with random weights, in eval mode."""
    torch.manual_seed(0)
    return torchvision.models.squeezenet1_1(weights=None).eval()


def imagenet_normalize(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float64).view(1, 3, 1, 1)
    return ((x.double() - mean) / std).to(x.dtype)


def torchvision_outputs(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Reference: the output of every module of torchvision's ``features`` (keyed by module path) in
    torchvision's own forward, each cloned by a forward hook the moment it is produced, before a later
    in-place ReLU can overwrite it."""
    kept: dict[str, torch.Tensor] = {}
    handles = [
        module.register_forward_hook(lambda _m, _i, output, name=name: kept.__setitem__(name, output.clone()))
        for name, module in model.features.named_modules(prefix="features")
        if name != "features"
    ]
    try:
        with torch.no_grad():
            model.features(imagenet_normalize(x))
    finally:
        for handle in handles:
            handle.remove()
    return kept


class Parent(nn.Module):
    def __init__(self, extractor: nn.Module) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, 3, 1)
        self.extractor = extractor


# ---------------------------------------------------------------------------------------------
# Names and shapes follow torchvision
# ---------------------------------------------------------------------------------------------


def test_layer_table_follows_torchvision():
    reference = torchvision_squeezenet()
    modules = dict(reference.features.named_modules(prefix="features"))
    del modules["features"]
    # every module of torchvision's features is a tap, under its own path as well as its name
    assert sorted(SQUEEZENET_ALIASES) == sorted(modules)
    assert [layer.name for layer in SQUEEZENET_LAYERS if not layer.part] == [
        "conv1", "relu1", "pool1", "fire2", "fire3", "pool3", "fire4", "fire5", "pool5",
        "fire6", "fire7", "fire8", "fire9",
    ]  # fmt: skip
    kinds = {nn.Conv2d: "conv", nn.ReLU: "relu", nn.MaxPool2d: "pool", torchvision.models.squeezenet.Fire: "fire"}
    stride = 1
    for layer in SQUEEZENET_LAYERS:
        module = modules[layer.module]
        assert layer.kind == kinds[type(module)], layer.name
        assert layer.module == f"features.{layer.block}" + (f".{layer.part}" if layer.part else "")
        if not layer.part and layer.kind in ("conv", "pool"):
            stride *= module.stride[0] if isinstance(module.stride, tuple) else module.stride
        assert layer.stride == stride, layer.name
        if layer.kind == "conv":
            assert layer.channels == module.out_channels, layer.name
        elif layer.kind == "fire":
            assert layer.channels == module.expand1x1.out_channels + module.expand3x3.out_channels
    assert [layer.position for layer in SQUEEZENET_LAYERS] == list(range(61))
    assert [info.name for info in available_taps("squeezenet1_1")] == list(ALL_TAPS)
    assert family_of("squeezenet1_1") == "squeezenet"


def test_output_sizes_equal_torchvision_for_every_input_size():
    features = torchvision_squeezenet().features
    for size in range(1, 48):
        h, expected = torch.rand(1, 3, size, size), 0
        for block, module in enumerate(features):
            if h is not None:
                try:
                    with torch.no_grad():
                        h = module(h)
                    expected = h.shape[-1]
                except RuntimeError:  # torchvision refuses an input too small for this layer
                    h, expected = None, 0
            for layer in SQUEEZENET_LAYERS:
                if layer.block == block:  # a Fire module's parts keep its size
                    assert squeezenet_output_size(size, layer.name) == expected, (size, layer.name)


def test_feature_info_matches_output_shapes():
    extractor = SqueezeNetFeatures(ALL_TAPS, weights=None)
    assert extractor.feature_info == available_taps("squeezenet1_1")
    for height, width in ((64, 48), (17, 23)):
        feats = extractor(torch.rand(1, 3, height, width))
        assert list(feats) == list(ALL_TAPS)
        for info in extractor.feature_info:
            shape = (info.channels, squeezenet_output_size(height, info.name), squeezenet_output_size(width, info.name))
            assert tuple(feats[info.name].shape[1:]) == shape, info.name


# ---------------------------------------------------------------------------------------------
# Equal to torchvision on identical weights
# ---------------------------------------------------------------------------------------------


def test_every_tap_matches_torchvision_in_float64():
    reference = torchvision_squeezenet().double()
    extractor = SqueezeNetFeatures(ALL_TAPS, weights=reference.state_dict()).double()
    x = torch.rand(2, 3, 40, 36, dtype=torch.float64)
    out = extractor(x)
    expected = torchvision_outputs(reference, x)
    for layer in SQUEEZENET_LAYERS:
        ref = expected[layer.module]
        scale = ref.abs().max().item()
        torch.testing.assert_close(out[layer.name], ref, rtol=FLOAT64_RTOL, atol=FLOAT64_RTOL * scale, msg=layer.name)
        if layer.kind == "conv":  # pre-activation taps hold negative values: no in-place ReLU ran over them
            assert (out[layer.name] < 0).any(), layer.name
    # and the last tap is what torchvision's whole features stack returns
    with torch.no_grad():
        whole = reference.features(imagenet_normalize(x))
    torch.testing.assert_close(out["fire9"], whole, rtol=FLOAT64_RTOL, atol=FLOAT64_RTOL * whole.abs().max().item())


def fp32_tolerance(reference: nn.Module, layer) -> float:
    """Bound on ``|fp32 - float64|`` relative to the tap's largest magnitude.

    A convolution sums ``K = in_channels x kernel area`` products; with round-to-nearest the
    accumulated error is about ``sqrt(K) u`` relative (``u = 2**-24``, float32's unit roundoff) for
    random-sign terms, and errors of successive layers add, so after ``n`` convolutions it is below
    ``n sqrt(K_max) u`` of the magnitude; a factor 8 covers other kernels' blocked or pairwise
    summation orders (the same derivation as the VGG test). ``n`` counts every convolution of
    torchvision's model up to the tap (both expand branches of a Fire module: an over-count)."""
    modules = list(reference.features.named_modules(prefix="features"))
    end = max(i for i, (name, _) in enumerate(modules) if name == layer.module or name.startswith(layer.module + "."))
    sizes = [m.in_channels * m.kernel_size[0] * m.kernel_size[1] for _, m in modules[: end + 1] if isinstance(m, nn.Conv2d)]
    return 8 * len(sizes) * math.sqrt(max(sizes)) * 2**-24


def test_every_tap_matches_torchvision_in_float32_within_rounding():
    """The float32 extractor against torchvision's SqueezeNet run in float64 (same weights)."""
    reference = torchvision_squeezenet()
    extractor = SqueezeNetFeatures(ALL_TAPS, weights=reference.state_dict())
    x = torch.rand(2, 3, 40, 36)
    out = extractor(x)
    expected = torchvision_outputs(reference.double(), x.double())
    for layer in SQUEEZENET_LAYERS:
        ref = expected[layer.module]
        scale = ref.abs().max().item()
        error = (out[layer.name].double() - ref).abs().max().item()
        bound = fp32_tolerance(reference, layer)
        assert error <= bound * scale, (layer.name, error / scale, bound)


def test_lpips_slices_equal_the_lpips_package():
    """The ``lpips_squeeze`` taps are the ends of lpips' seven slices (``lpips.pretrained_networks.squeezenet``)."""
    from lpips.pretrained_networks import squeezenet as lpips_squeezenet

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's deprecation warning for pretrained=False
        reference = lpips_squeezenet(requires_grad=False, pretrained=False).double().eval()
    state = {re.sub(r"^slice\d+\.", "features.", key): value for key, value in reference.state_dict().items()}
    extractor = SqueezeNetFeatures("lpips_squeeze", weights=state, input_range="normalized").double()
    assert extractor.taps == LPIPS_TAPS == PRESETS["lpips_squeeze"].taps
    x = torch.randn(2, 3, 48, 48, dtype=torch.float64)
    with torch.no_grad():
        expected = reference(x)
    for tap, ref in zip(LPIPS_TAPS, expected, strict=True):
        torch.testing.assert_close(extractor(x)[tap], ref, rtol=FLOAT64_RTOL, atol=FLOAT64_RTOL * ref.abs().max().item())


def test_conv_taps_are_pre_activation_and_parts_compose_the_fire_output():
    extractor = SqueezeNetFeatures(
        ["conv1", "relu1", *(f"fire2.{part}" for part in FIRE_PARTS), "fire2"], weights=None, requires_grad=False
    )
    feats = extractor(torch.rand(1, 3, 32, 32))
    assert extractor.features[1].inplace is False and extractor.features[3].squeeze_activation.inplace is False
    assert extractor.features[3].expand1x1_activation.inplace is False
    for conv in ("conv1", "fire2.squeeze", "fire2.expand1x1", "fire2.expand3x3"):
        relu = "relu1" if conv == "conv1" else f"{conv}_activation"
        assert feats[conv].min() < 0, conv
        assert torch.equal(feats[relu], feats[conv].clamp(min=0)), relu
    expected = torch.cat([feats["fire2.expand1x1_activation"], feats["fire2.expand3x3_activation"]], 1)
    assert torch.equal(feats["fire2"], expected)
    # untapped layers keep torchvision's in-place ReLUs (memory)
    assert SqueezeNetFeatures("fire2", weights=None).features[1].inplace is True


# ---------------------------------------------------------------------------------------------
# Tap names: aliases, presets, errors
# ---------------------------------------------------------------------------------------------


def test_torchvision_module_paths_are_taps_keyed_as_given():
    state = torchvision_squeezenet().state_dict()
    by_name = SqueezeNetFeatures("fire2.squeeze,fire9", weights=state)
    by_path = SqueezeNetFeatures(["features.12", "features.3.squeeze"], weights=state)
    assert by_path.taps == ("features.3.squeeze", "features.12")  # depth order, as spelled
    x = torch.rand(1, 3, 32, 32)
    named, pathed = by_name(x), by_path(x)
    assert torch.equal(named["fire9"], pathed["features.12"])
    assert torch.equal(named["fire2.squeeze"], pathed["features.3.squeeze"])
    with pytest.raises(ValueError, match=r"taps 'fire9' and 'features\.12' name the same layer of squeezenet1_1"):
        SqueezeNetFeatures("fire9,features.12", weights=state)


@pytest.mark.parametrize(
    ("tap", "suggestion"),
    [("fier3", "fire3"), ("fire2.sqeeze", "fire2.squeeze"), ("features.3.squeze", "features.3.squeeze"),
     ("lpips_squeze", "lpips_squeeze"), ("fire10", "fire9")],
)  # fmt: skip
def test_unknown_taps_suggest_the_closest(tap, suggestion):
    with pytest.raises(ValueError) as info:
        SqueezeNetFeatures(tap, weights=None)
    message = str(info.value)
    assert message.startswith(f"unknown tap {tap!r} for squeezenet1_1. Did you mean {suggestion!r}?")
    assert "Valid choices: 'conv1', 'relu1', 'pool1', 'fire2'" in message and "'features.0' ... 'features.12'" in message
    assert "'lpips_squeeze'" in message


def test_tap_argument_errors():
    with pytest.raises(ValueError, match="at least one layer of squeezenet1_1"):
        SqueezeNetFeatures(" , ", weights=None)
    with pytest.raises(TypeError, match="tap names must be strings"):
        SqueezeNetFeatures(["relu1", 3], weights=None)
    with pytest.raises(TypeError, match="taps must be a preset name"):
        SqueezeNetFeatures(5, weights=None)


def test_the_catalog_and_the_preset_build_it():
    module = build_backbone("squeezenet1_1", "lpips_squeeze", weights=None)
    assert type(module) is SqueezeNetFeatures and module.taps == LPIPS_TAPS
    preset = PRESETS["lpips_squeeze"]
    assert (preset.arch, preset.criterion, preset.normalize_channels) == ("squeezenet1_1", "l2", True)
    assert "squeezenet" in preset.source


# ---------------------------------------------------------------------------------------------
# Truncation and strict loading
# ---------------------------------------------------------------------------------------------


def test_only_the_layers_up_to_the_deepest_tap_are_built(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the whole torchvision model was built")

    monkeypatch.setattr(torchvision.models.squeezenet.SqueezeNet, "__init__", refuse)
    fire5 = SqueezeNetFeatures("relu1,fire5", weights=None)
    assert len(fire5.features) == 8
    squeeze_only = SqueezeNetFeatures("fire9.squeeze", weights=None)
    assert len(squeeze_only.features) == 13
    assert [name for name, _ in squeeze_only.features[12].named_children()] == ["squeeze"]
    expand3x3 = SqueezeNetFeatures("features.12.expand3x3_activation", weights=None)
    parts = [name for name, _ in expand3x3.features[12].named_children()]
    assert parts == ["squeeze", "squeeze_activation", "expand3x3", "expand3x3_activation"]  # no expand1x1 branch


def test_truncated_parameters_equal_torchvision_counts():
    reference = torchvision_squeezenet()
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    assert count(SqueezeNetFeatures("fire5", weights=None)) == count(reference.features[:8])
    assert count(SqueezeNetFeatures("fire9", weights=None)) == count(reference.features)
    cut = SqueezeNetFeatures("fire9.squeeze", weights=None)
    assert count(cut) == count(reference.features[:12]) + count(reference.features[12].squeeze)
    # torchvision's meta["num_params"] is the whole model, classifier included
    assert count(reference) == SqueezeNetWeights.SQUEEZENET1_1_IMAGENET1K_V1.meta["num_params"] == 1_235_496


def test_a_cut_fire_loads_strictly_and_every_parameter_gets_a_gradient():
    reference = torchvision_squeezenet()
    state = reference.state_dict()
    cut = SqueezeNetFeatures("fire9.expand1x1", weights=state, requires_grad=True)
    assert set(nn.Module.state_dict(cut)) == {
        key for key in state if key.startswith("features.") and not key.startswith("features.12.expand3x3")
    }
    x = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(
        cut(x)["fire9.expand1x1"], torchvision_outputs(reference, x)["features.12.expand1x1"], rtol=1e-5, atol=1e-5
    )
    cut(x)["fire9.expand1x1"].square().mean().backward()
    assert all(p.grad is not None for p in cut.parameters())  # nothing unused (DDP needs that)
    again = SqueezeNetFeatures("fire9.expand1x1", weights=nn.Module.state_dict(cut))  # its own keys only
    torch.testing.assert_close(again(x)["fire9.expand1x1"], cut(x)["fire9.expand1x1"], rtol=0, atol=0)


def test_loading_is_strict_inside_the_built_layers():
    state = torchvision_squeezenet().state_dict()
    with pytest.raises(WeightsLoadError, match="missing keys") as info:
        SqueezeNetFeatures("fire3", weights={k: v for k, v in state.items() if k != "features.3.squeeze.bias"})
    assert info.value.missing == ("features.3.squeeze.bias",)
    with pytest.raises(WeightsLoadError, match=r"shape mismatches.*features\.4\.expand3x3\.weight"):
        SqueezeNetFeatures("fire3", weights={**state, "features.4.expand3x3.weight": torch.zeros(64, 16, 1, 1)})
    with pytest.raises(WeightsLoadError, match=r"unexpected keys.*features\.4\.extra\.weight"):
        SqueezeNetFeatures("fire3", weights={**state, "features.4.extra.weight": torch.zeros(1)})
    with pytest.raises(WeightsLoadError, match=r"does not fit squeezenet1_1 up to features\.12\.squeeze"):
        SqueezeNetFeatures("fire9.squeeze", weights={k: v for k, v in state.items() if "12.squeeze" not in k})
    # a features-only state dict (keys '{i}.*') loads; the classifier and deeper layers are ignored
    bare = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
    assert SqueezeNetFeatures("fire3", weights=bare).weights_id == "state_dict"


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------


def test_too_small_inputs_name_the_minimum():
    assert squeezenet_min_input_size("conv1") == 3 and squeezenet_min_input_size("fire9") == 17
    reference = torchvision_squeezenet()
    extractor = SqueezeNetFeatures("fire9", weights=reference.state_dict())
    assert extractor.min_input_size == 17
    assert extractor(torch.rand(1, 3, 17, 17))["fire9"].shape == (1, 512, 1, 1)
    with pytest.raises(ValueError, match=r"input of size 16x40 is too small for tap 'fire9': it needs at least 17x17"):
        extractor(torch.rand(1, 3, 16, 40))
    with pytest.raises(RuntimeError):  # the reference: torchvision fails below the minimum too
        reference.features(torch.rand(1, 3, 16, 16))


def test_input_range_gray_and_autocast():
    state = torchvision_squeezenet().state_dict()
    x = torch.rand(2, 3, 33, 33)
    base = SqueezeNetFeatures("conv1,fire5", weights=state)(x)
    minus_one = SqueezeNetFeatures("conv1,fire5", weights=state, input_range=(-1, 1))(2 * x - 1)
    for tap in base:
        torch.testing.assert_close(minus_one[tap], base[tap], rtol=1e-5, atol=1e-5)
    gray = SqueezeNetFeatures("fire5", weights=state, gray="repeat")
    torch.testing.assert_close(gray(x[:, :1])["fire5"], gray(x[:, :1].expand(-1, 3, -1, -1))["fire5"], rtol=0, atol=0)
    with pytest.raises(ValueError, match="gray='repeat'"):
        SqueezeNetFeatures("fire5", weights=state)(x[:, :1])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = SqueezeNetFeatures("fire5", weights=state)(x)["fire5"]
    assert low.dtype == torch.bfloat16
    assert (low.float() - base["fire5"]).norm() / base["fire5"].norm() < 0.05


# ---------------------------------------------------------------------------------------------
# Frozen or learnable, copies
# ---------------------------------------------------------------------------------------------


def test_frozen_extractor_is_eval_locked_and_not_saved():
    extractor = SqueezeNetFeatures("fire3", weights=None)
    assert extractor.frozen and not any(p.requires_grad for p in extractor.parameters())
    parent = Parent(extractor).train()
    assert parent.training and not extractor.training
    assert list(parent.state_dict()) == ["head.weight", "head.bias"]
    assert "features.3.squeeze.weight" in extractor.state_dict()
    fresh = Parent(SqueezeNetFeatures("fire3", weights=extractor.state_dict()))
    fresh.load_state_dict(parent.state_dict(), strict=True)  # keeps the extractor's weights
    torch.testing.assert_close(fresh.extractor.features[0].weight, extractor.features[0].weight, rtol=0, atol=0)
    x = torch.rand(1, 3, 24, 24, requires_grad=True)
    extractor(x)["fire3"].square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in extractor.parameters())


@pytest.mark.filterwarnings("ignore::featx.errors.InputRangeWarning")  # the random head's outputs
def test_learnable_extractor_is_saved_also_after_freezing_and_reloads_strictly():
    trained = Parent(SqueezeNetFeatures("fire3", weights=None, requires_grad=True))
    assert trained.extractor.training and not trained.extractor.frozen
    optimizer = torch.optim.SGD(trained.parameters(), lr=0.1)
    trained.extractor(trained.head(torch.rand(2, 3, 24, 24)))["fire3"].mean().backward()
    optimizer.step()
    trained.requires_grad_(False)  # freeze for fine-tuning or export
    assert trained.extractor.frozen and trained.extractor.learnable
    checkpoint = trained.state_dict()
    assert "extractor.features.4.expand3x3.weight" in checkpoint
    reloaded = Parent(SqueezeNetFeatures("fire3", weights=None, requires_grad=True))
    reloaded.load_state_dict(checkpoint, strict=True)
    for key, value in checkpoint.items():
        torch.testing.assert_close(reloaded.state_dict()[key], value, rtol=0, atol=0, msg=key)
    with pytest.raises(RuntimeError, match=r"Missing key.*extractor\.features\.0\.weight"):
        reloaded.load_state_dict({"head.weight": checkpoint["head.weight"], "head.bias": checkpoint["head.bias"]})


def test_unfreezing_an_extractor_built_frozen_is_not_saved_and_warns():
    extractor = SqueezeNetFeatures("relu1", weights=None)
    extractor.requires_grad_(True)
    with pytest.warns(UserWarning, match="built frozen and later unfrozen.*not saved"):
        keys = list(Parent(extractor).state_dict())
    assert keys == ["head.weight", "head.bias"]


def test_deepcopy_pickle_and_to_dtype():
    extractor = SqueezeNetFeatures("conv1,fire2.squeeze,fire4", weights=None)
    x = torch.rand(1, 3, 32, 32)
    ref = extractor(x)
    for clone in (copy.deepcopy(extractor), pickle.loads(pickle.dumps(extractor))):
        out = clone(x)
        for name in ref:
            torch.testing.assert_close(out[name], ref[name], rtol=0, atol=0)
        assert list(Parent(clone).state_dict()) == ["head.weight", "head.bias"]
    double = copy.deepcopy(extractor).to(torch.float64)
    torch.testing.assert_close(double(x.double())["fire4"].float(), ref["fire4"], rtol=1e-5, atol=1e-5)
    assert "taps=('conv1', 'fire2.squeeze', 'fire4'), weights='random'" in repr(extractor)


# ---------------------------------------------------------------------------------------------
# Weights: files, the features cache, "DEFAULT" offline
# ---------------------------------------------------------------------------------------------


def test_checkpoint_files_and_the_features_cache(tmp_path):
    import safetensors.torch

    reference = torchvision_squeezenet()
    pth, st = tmp_path / "squeezenet.pth", tmp_path / "squeezenet.safetensors"
    torch.save(reference.state_dict(), pth)  # the whole model, classifier included, as torchvision saves it
    safetensors.torch.save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, st)
    x = torch.rand(1, 3, 40, 40)
    expected = torchvision_outputs(reference, x)
    shallow = SqueezeNetFeatures("relu1", weights=pth)  # the first load writes the features cache
    deep = SqueezeNetFeatures("fire2.squeeze,fire9", weights=pth)  # a deeper load reads it
    from_st = SqueezeNetFeatures("fire9", weights=st)
    assert shallow.weights_id == deep.weights_id == f"file:{pth}" and deep.weights_sha256 is not None
    torch.testing.assert_close(shallow(x)["relu1"], expected["features.1"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(deep(x)["fire2.squeeze"], expected["features.3.squeeze"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(deep(x)["fire9"], expected["features.12"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(from_st(x)["fire9"], deep(x)["fire9"], rtol=0, atol=0)


def test_default_weights_are_found_offline(monkeypatch, tmp_path):
    # Reference: torchvision's SqueezeNet1_1_Weights.IMAGENET1K_V1 (URL, parameter count, accuracy).
    reference = torchvision.models.SqueezeNet1_1_Weights.IMAGENET1K_V1
    member = SqueezeNetWeights.SQUEEZENET1_1_IMAGENET1K_V1
    assert member.url == reference.url and member.file_name == reference.url.rsplit("/", 1)[1]
    assert member.meta["num_params"] == reference.meta["num_params"]
    assert default_backbone("squeezenet1_1") is member
    with pytest.raises(WeightsNotFoundError, match="featx weights download SQUEEZENET1_1_IMAGENET1K_V1") as info:
        SqueezeNetFeatures("fire3")
    assert member.file_name in str(info.value)
    hub = Path(os.environ["TORCH_HOME"]) / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    model = torchvision_squeezenet()
    torch.save(model.state_dict(), hub / member.file_name)  # fabricated: random values, not the real hash
    with pytest.warns(UnverifiedWeightsWarning, match="SQUEEZENET1_1_IMAGENET1K_V1"):
        extractor = SqueezeNetFeatures("fire3")
    assert extractor.weights_id == "unverified:SQUEEZENET1_1_IMAGENET1K_V1" and extractor.weights_verified is False
    torch.testing.assert_close(extractor.features[0].weight, model.features[0].weight, rtol=0, atol=0)
    with pytest.warns(UnverifiedWeightsWarning):
        by_enum = SqueezeNetFeatures("fire3", weights=reference)
    assert by_enum.weights_id == extractor.weights_id


def test_random_weights_warn_and_use_torchvisions_initialisation():
    with pytest.warns(RandomWeightsWarning):
        extractor = SqueezeNetFeatures("fire2", weights=None)
    assert extractor.weights_id == "random"
    # torchvision: kaiming_uniform_ (gain sqrt(2), fan_in) and zero biases for every features conv
    conv = extractor.features[3].expand3x3
    bound = math.sqrt(2.0) * math.sqrt(3.0 / (16 * 9))
    assert float(conv.weight.abs().max()) <= bound and float(conv.weight.abs().max()) > 0.9 * bound
    assert torch.count_nonzero(conv.bias) == 0
