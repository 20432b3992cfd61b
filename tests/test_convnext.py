"""featx.ConvNeXtFeatures against torchvision's ``convnext_tiny/small/base`` (the reference) on identical
random weights: the tap table, every tap in float64 and float32, truncation, strict loading, the
frozen/learnable state-dict rules, checkpoint files and the features cache, and the layer table.

torchvision's models are the reference throughout: their ``features`` modules are run with forward
hooks that clone each module's output, and their structure (module paths, channels, parameter
counts) is read from models created on the meta device, which costs no memory. convnext_base (88M
parameters) is built once, for one float32 comparison; everything else uses convnext_tiny."""

from __future__ import annotations

import copy
import math
import os
import pickle
import re
from pathlib import Path

import pytest
import torch
import torchvision
from click.testing import CliRunner
from torch import nn

import featx
from featx.backbones.base import IMAGENET_MEAN, IMAGENET_STD
from featx.backbones.catalog import available_taps, build_backbone, family_of
from featx.backbones.convnext import (
    CONVNEXT_ARCHS,
    ConvNeXtFeatures,
    convnext_aliases,
    convnext_layer_table,
    convnext_layers,
    convnext_min_input_size,
    convnext_output_size,
)
from featx.errors import RandomWeightsWarning, UnverifiedWeightsWarning, WeightsLoadError, WeightsNotFoundError
from featx.weights import ConvNeXtWeights, default_backbone
from featx.weights.locations import featx_home

pytestmark = pytest.mark.filterwarnings("ignore::featx.errors.RandomWeightsWarning")

ARCHS = tuple(CONVNEXT_ARCHS)
TINY_TAPS = tuple(layer.name for layer in convnext_layers("convnext_tiny"))
# Exactness is checked in float64, where summation order (threads, SIMD width, oneDNN kernels) moves
# results by ~1e-16 relative per operation, so a 1e-10 bound holds on any CPU.
FLOAT64_RTOL = 1e-10
count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731


def meta_model(arch: str) -> nn.Module:
    """torchvision's model on the meta device: its structure and parameter shapes, no memory."""
    with torch.device("meta"):
        return getattr(torchvision.models, arch)(weights=None)


@pytest.fixture(scope="module")
def tiny() -> nn.Module:
    """The reference: torchvision's own ConvNeXt-T with random weights, in eval mode (do not modify)."""
    torch.manual_seed(0)
    return torchvision.models.convnext_tiny(weights=None).eval()


def imagenet_normalize(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float64).view(1, 3, 1, 1)
    return ((x.double() - mean) / std).to(x.dtype)


def torchvision_outputs(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Reference: the output of every module of torchvision's ``features`` down to the blocks (keyed by
    module path) in torchvision's own forward, cloned by forward hooks as it is produced."""
    kept: dict[str, torch.Tensor] = {}
    handles = [
        module.register_forward_hook(lambda _m, _i, output, name=name: kept.__setitem__(name, output.clone()))
        for name, module in model.features.named_modules(prefix="features")
        if name.count(".") <= 2  # features.N and features.N.M (stages' blocks; the stem's and downsamplings' parts)
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
# Names, channels, strides and parameters follow torchvision
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_tap_table_follows_torchvision(arch):
    reference = meta_model(arch)
    modules = dict(reference.features.named_modules(prefix="features"))
    layers = convnext_layers(arch)
    assert [layer.position for layer in layers] == list(range(len(layers)))
    assert convnext_aliases(arch) == {layer.module: layer.name for layer in layers}
    # every features.N and every block features.N.M of a stage is a tap, and nothing else
    stage_paths = {f"features.{i}" for i in range(8)} | {
        f"features.{i}.{j}" for i in (1, 3, 5, 7) for j in range(len(reference.features[i]))
    }
    assert {layer.module for layer in layers} == stage_paths
    kinds = {"stem": "Conv2dNormActivation", "block": "CNBlock", "stage": "Sequential", "downsample": "Sequential"}
    for layer in layers:
        module = modules[layer.module]
        assert type(module).__name__ == kinds[layer.kind], layer.name
        assert layer.params == (0 if layer.kind == "stage" else count(module)), layer.name
        convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
        if layer.kind in ("stem", "downsample"):
            assert layer.channels == convs[-1].out_channels
        else:
            assert layer.channels == convs[0].in_channels  # the depthwise conv keeps the width
    # the stride of each layer is the product of the stem's and the downsamplings' strides up to it
    stride = 1
    for layer in layers:
        if layer.kind in ("stem", "downsample"):
            stride *= [m for m in modules[layer.module].modules() if isinstance(m, nn.Conv2d)][-1].stride[0]
        assert layer.stride == stride, layer.name
    # with the classifier, featx's parameter figures give torchvision's total (meta["num_params"])
    member = default_backbone(arch)
    rows = convnext_layer_table(arch, head="fc")
    assert sum(row.params for row in rows) == count(reference) == member.meta["num_params"]
    assert sum(layer.params for layer in layers) == count(reference.features)
    assert family_of(arch) == "convnext" and [info.name for info in available_taps(arch)] == [x.name for x in layers]


def test_the_tiny_names_read_as_documented():
    layers = convnext_layers("convnext_tiny")
    assert TINY_TAPS[:6] == ("stem", "stage1.0", "stage1.1", "stage1.2", "stage1", "downsample2")
    assert TINY_TAPS[-5:] == ("downsample4", "stage4.0", "stage4.1", "stage4.2", "stage4")
    by_name = {layer.name: layer for layer in layers}
    assert by_name["stage3.4"].module == "features.5.4" and by_name["stage3"].module == "features.5"
    assert [by_name[f"downsample{s}"].module for s in (2, 3, 4)] == ["features.2", "features.4", "features.6"]
    assert [by_name[f"stage{s}"].channels for s in (1, 2, 3, 4)] == [96, 192, 384, 768]
    assert len(convnext_layers("convnext_small")) == len(convnext_layers("convnext_base")) == 44  # 27 blocks in stage 3


def test_feature_info_matches_output_shapes(tiny):
    extractor = ConvNeXtFeatures("convnext_tiny", TINY_TAPS, weights=tiny.state_dict())
    assert extractor.feature_info == available_taps("convnext_tiny")
    for height, width in ((70, 45), (32, 39)):
        feats = extractor(torch.rand(1, 3, height, width))
        assert list(feats) == list(TINY_TAPS)
        for info in extractor.feature_info:
            shape = (info.channels, convnext_output_size(height, info.stride), convnext_output_size(width, info.stride))
            assert tuple(feats[info.name].shape[1:]) == shape, info.name


# ---------------------------------------------------------------------------------------------
# Equal to torchvision on identical weights
# ---------------------------------------------------------------------------------------------


def test_every_tap_matches_torchvision_in_float64(tiny):
    reference = copy.deepcopy(tiny).double()
    extractor = ConvNeXtFeatures("convnext_tiny", TINY_TAPS, weights=reference.state_dict()).double()
    x = torch.rand(2, 3, 64, 48, dtype=torch.float64)
    out = extractor(x)
    expected = torchvision_outputs(reference, x)
    for layer in convnext_layers("convnext_tiny"):
        ref = expected[layer.module]
        scale = ref.abs().max().item()
        torch.testing.assert_close(out[layer.name], ref, rtol=FLOAT64_RTOL, atol=FLOAT64_RTOL * scale, msg=layer.name)
    # the stage outputs are the blocks' outputs, and the last tap is torchvision's whole features stack
    assert torch.equal(out["stage3"], out["stage3.8"])
    with torch.no_grad():
        whole = reference.features(imagenet_normalize(x))
    torch.testing.assert_close(out["stage4"], whole, rtol=FLOAT64_RTOL, atol=FLOAT64_RTOL * whole.abs().max().item())


def fp32_tolerance(arch: str, tap: str) -> float:
    """Bound on ``|fp32 - float64|`` relative to the tap's largest magnitude.

    A convolution or linear layer sums ``K`` products (``in_channels x kernel area``: 48 for the stem,
    49 for a depthwise conv, ``C`` and ``4 C`` for a block's linear layers, ``4 C`` for a 2x2
    downsampling); with round-to-nearest the accumulated error is about ``sqrt(K) u`` relative
    (``u = 2**-24``) for random-sign terms, and errors of successive layers add, so after ``n`` such
    layers it is below ``n sqrt(K_max) u`` of the magnitude; a factor 8 covers other kernels' blocked
    or pairwise summation orders, LayerNorm's mean and variance and GELU (the same derivation as the
    VGG and SqueezeNet tests). ``n`` counts every such layer of torchvision's model up to the tap."""
    layers = convnext_layers(arch)
    end = next(layer for layer in layers if layer.name == tap).position
    sizes = []
    for layer in layers[: end + 1]:
        if layer.kind == "stem":
            sizes.append(48)
        elif layer.kind == "downsample":
            sizes.append(layer.channels * 2)  # (C / 2) x 2 x 2 products
        elif layer.kind == "block":
            sizes += [49, layer.channels, 4 * layer.channels]
    return 8 * len(sizes) * math.sqrt(max(sizes)) * 2**-24


def test_every_tap_matches_torchvision_in_float32_within_rounding(tiny):
    """The float32 extractor against torchvision's ConvNeXt-T run in float64 (same weights)."""
    extractor = ConvNeXtFeatures("convnext_tiny", TINY_TAPS, weights=tiny.state_dict())
    x = torch.rand(2, 3, 48, 40)
    out = extractor(x)
    expected = torchvision_outputs(copy.deepcopy(tiny).double(), x.double())
    for layer in convnext_layers("convnext_tiny"):
        ref = expected[layer.module]
        error = (out[layer.name].double() - ref).abs().max().item() / ref.abs().max().item()
        assert error <= fp32_tolerance("convnext_tiny", layer.name), (layer.name, error)


def test_convnext_base_built_once_matches_torchvision_in_float32():
    """ConvNeXt-B (88M parameters, 128 to 1024 channels) built once: featx's stages against
    torchvision's own forward in float32 on identical weights, with the derived fp32 bound on both."""
    torch.manual_seed(1)
    reference = torchvision.models.convnext_base(weights=None).eval()
    extractor = ConvNeXtFeatures("convnext_base", "stem,stage2,stage3.26,stage4", weights=reference.state_dict())
    assert count(extractor) == count(reference.features)
    x = torch.rand(1, 3, 32, 32)
    out = extractor(x)
    expected = torchvision_outputs(reference, x)
    modules = {"stem": "features.0", "stage2": "features.3", "stage3.26": "features.5.26", "stage4": "features.7"}
    for tap, module in modules.items():
        ref = expected[module]
        error = (out[tap] - ref).abs().max().item() / ref.abs().max().item()
        assert error <= 2 * fp32_tolerance("convnext_base", tap), (tap, error)  # both sides round
        assert out[tap].shape[1] == {"stem": 128, "stage2": 256, "stage3.26": 512, "stage4": 1024}[tap]


# ---------------------------------------------------------------------------------------------
# Tap names: aliases and errors
# ---------------------------------------------------------------------------------------------


def test_torchvision_module_paths_are_taps_keyed_as_given(tiny):
    state = tiny.state_dict()
    by_name = ConvNeXtFeatures("convnext_tiny", "stem,stage3.4,downsample4", weights=state)
    by_path = ConvNeXtFeatures("convnext_tiny", ["features.6", "features.0", "features.5.4"], weights=state)
    assert by_path.taps == ("features.0", "features.5.4", "features.6")  # depth order, as spelled
    x = torch.rand(1, 3, 64, 64)
    named, pathed = by_name(x), by_path(x)
    for name, path in (("stem", "features.0"), ("stage3.4", "features.5.4"), ("downsample4", "features.6")):
        assert torch.equal(named[name], pathed[path])
    with pytest.raises(ValueError, match=r"taps 'stage2' and 'features\.3' name the same layer of convnext_tiny"):
        ConvNeXtFeatures("convnext_tiny", "stage2,features.3", weights=None)


@pytest.mark.parametrize(
    ("tap", "suggestion"),
    [("stage5", "stage4"), ("stag3.4", "stage3.4"), ("downsampel3", "downsample3"), ("stage3.9", "stage3.8"),
     ("features.8", "features.7"), ("features.5.12", "features.5.2")],
)  # fmt: skip
def test_unknown_taps_suggest_the_closest(tap, suggestion):
    with pytest.raises(ValueError) as info:
        ConvNeXtFeatures("convnext_tiny", tap, weights=None)
    message = str(info.value)
    assert message.startswith(f"unknown tap {tap!r} for convnext_tiny. Did you mean {suggestion!r}?")
    assert "'stage1' ... 'stage4', 'downsample2' ... 'downsample4'" in message
    assert "last blocks 'stage1.2', 'stage2.2', 'stage3.8', 'stage4.2'" in message


def test_argument_errors():
    with pytest.raises(ValueError, match=r"unknown arch 'convnext_larg'.*Did you mean 'convnext_base'|convnext_small"):
        ConvNeXtFeatures("convnext_larg", "stem", weights=None)
    with pytest.raises(ValueError, match="at least one layer of convnext_tiny"):
        ConvNeXtFeatures("convnext_tiny", " , ", weights=None)
    with pytest.raises(TypeError, match="tap names must be strings"):
        ConvNeXtFeatures("convnext_tiny", ["stem", 3], weights=None)
    with pytest.raises(ValueError, match=r"stochastic_depth_prob must be in \[0, 1\), got 1.5"):
        ConvNeXtFeatures("convnext_tiny", "stem", weights=None, stochastic_depth_prob=1.5)
    with pytest.raises(TypeError, match="stochastic_depth_prob must be a finite number"):
        ConvNeXtFeatures("convnext_tiny", "stem", weights=None, stochastic_depth_prob="0.1")


def test_the_catalog_builds_it():
    module = build_backbone("convnext_small", "stage2.1", weights=None)
    assert type(module) is ConvNeXtFeatures and module.taps == ("stage2.1",) and module.arch == "convnext_small"
    assert featx.ConvNeXtFeatures is ConvNeXtFeatures is featx.backbones.ConvNeXtFeatures


# ---------------------------------------------------------------------------------------------
# Truncation and strict loading
# ---------------------------------------------------------------------------------------------


def test_only_the_layers_up_to_the_deepest_tap_are_built(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the whole torchvision model was built")

    reference = meta_model("convnext_tiny")  # created before the refusal: the structure to compare with
    monkeypatch.setattr(torchvision.models.convnext.ConvNeXt, "__init__", refuse)
    stage3 = ConvNeXtFeatures("convnext_tiny", "stem,stage3", weights=None)
    assert len(stage3.features) == 6 and len(stage3.features[5]) == 9
    assert count(stage3) == count(reference.features[:6]) < count(reference.features) < count(reference)
    cut = ConvNeXtFeatures("convnext_tiny", "stage3.4", weights=None)
    assert len(cut.features) == 6 and len(cut.features[5]) == 5  # blocks 5 ... 8 of stage 3 never built
    assert count(cut) == count(reference.features[:5]) + count(reference.features[5][:5])
    stem = ConvNeXtFeatures("convnext_tiny", "features.0", weights=None)
    assert len(stem.features) == 1 and stem.min_input_size == 4


def test_a_block_tap_loads_strictly_from_the_whole_checkpoint(tiny):
    state = tiny.state_dict()
    cut = ConvNeXtFeatures("convnext_tiny", "stage3.4", weights=state, requires_grad=True)
    built = {key for key in state if key.startswith("features.")}
    built -= {key for key in built if key.startswith(("features.6.", "features.7."))}
    built -= {key for key in built if key.startswith("features.5.") and int(key.split(".")[2]) > 4}
    assert set(nn.Module.state_dict(cut)) == built
    x = torch.rand(1, 3, 64, 64)
    torch.testing.assert_close(cut(x)["stage3.4"], torchvision_outputs(tiny, x)["features.5.4"], rtol=1e-5, atol=1e-5)
    cut(x)["stage3.4"].square().mean().backward()
    assert all(p.grad is not None for p in cut.parameters())  # nothing unused (DDP needs that)


def test_loading_is_strict_inside_the_built_layers_and_names_the_bad_keys(tiny):
    state = tiny.state_dict()
    missing = "features.5.3.block.0.weight"
    with pytest.raises(WeightsLoadError, match="missing keys") as info:
        ConvNeXtFeatures("convnext_tiny", "stage3.4", weights={k: v for k, v in state.items() if k != missing})
    assert info.value.missing == (missing,)
    message = str(info.value)
    assert "does not fit convnext_tiny up to features.5.4" in message and "classifier.* and layers past" in message
    with pytest.raises(WeightsLoadError, match=r"shape mismatches.*features\.5\.3\.layer_scale: expected \(384, 1, 1\)"):
        ConvNeXtFeatures("convnext_tiny", "stage3.4", weights={**state, "features.5.3.layer_scale": torch.ones(96, 1, 1)})
    with pytest.raises(WeightsLoadError, match=r"unexpected keys.*features\.5\.2\.extra"):
        ConvNeXtFeatures("convnext_tiny", "stage3.4", weights={**state, "features.5.2.extra": torch.zeros(1)})
    with pytest.raises(WeightsLoadError, match=r"unexpected keys.*'fc\.weight'"):  # a ResNet's head is not ignored
        ConvNeXtFeatures("convnext_tiny", "stem", weights={**state, "fc.weight": torch.zeros(1)})
    # later blocks of the cut stage, deeper stages and the classifier may be anything: they are ignored
    ignored = {**state, "features.5.5.layer_scale": torch.zeros(3), "features.7.0.layer_scale": torch.zeros(3)}
    assert ConvNeXtFeatures("convnext_tiny", "stage3.4", weights=ignored).weights_id == "state_dict"
    # a features-only state dict (keys '{i}.*') loads
    bare = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
    assert ConvNeXtFeatures("convnext_tiny", "stage2", weights=bare).weights_id == "state_dict"


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------


def test_too_small_inputs_name_the_minimum(tiny):
    assert [convnext_min_input_size("convnext_tiny", tap) for tap in ("stem", "stage1", "downsample3", "stage4")] == [
        4, 4, 16, 32,
    ]  # fmt: skip
    extractor = ConvNeXtFeatures("convnext_tiny", "stage4", weights=tiny.state_dict())
    assert extractor.min_input_size == 32
    assert extractor(torch.rand(1, 3, 32, 63))["stage4"].shape == (1, 768, 1, 1)
    with pytest.raises(ValueError, match=r"input of size 31x64 is too small for tap 'stage4': it needs at least 32x32"):
        extractor(torch.rand(1, 3, 31, 64))
    with pytest.raises(RuntimeError):  # the reference: torchvision fails below the minimum too
        tiny.features(torch.rand(1, 3, 31, 31))


def test_input_range_gray_and_autocast(tiny):
    state = tiny.state_dict()
    x = torch.rand(2, 3, 32, 32)
    base = ConvNeXtFeatures("convnext_tiny", "stem,stage2", weights=state)(x)
    minus_one = ConvNeXtFeatures("convnext_tiny", "stem,stage2", weights=state, input_range=(-1, 1))(2 * x - 1)
    normalized = ConvNeXtFeatures("convnext_tiny", "stem,stage2", weights=state, input_range="normalized")
    expected = torchvision_outputs(tiny, x)
    for tap, module in (("stem", "features.0"), ("stage2", "features.3")):
        torch.testing.assert_close(minus_one[tap], base[tap], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(base[tap], expected[module], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(normalized(imagenet_normalize(x))[tap], expected[module], rtol=1e-4, atol=1e-4)
    gray = ConvNeXtFeatures("convnext_tiny", "stage2", weights=state, gray="repeat")
    torch.testing.assert_close(gray(x[:, :1])["stage2"], gray(x[:, :1].expand(-1, 3, -1, -1))["stage2"], rtol=0, atol=0)
    with pytest.raises(ValueError, match="gray='repeat'"):
        ConvNeXtFeatures("convnext_tiny", "stage2", weights=state)(x[:, :1])
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the reference runs under autocast too
        low = ConvNeXtFeatures("convnext_tiny", "stem,stage2", weights=state)(x)
        with torch.no_grad():
            low_ref = tiny.features[:4](imagenet_normalize(x))
    assert low["stem"].dtype == torch.bfloat16  # a block output is float32 as torchvision's (fp32 layer_scale)
    assert low["stage2"].dtype == low_ref.dtype
    torch.testing.assert_close(low["stage2"], low_ref, rtol=0, atol=0)
    assert (low["stage2"].float() - base["stage2"]).norm() / base["stage2"].norm() < 0.05


# ---------------------------------------------------------------------------------------------
# Frozen or learnable, stochastic depth, copies
# ---------------------------------------------------------------------------------------------


def test_frozen_extractor_is_eval_locked_and_not_saved():
    extractor = ConvNeXtFeatures("convnext_tiny", "stage2", weights=None)
    assert extractor.frozen and not any(p.requires_grad for p in extractor.parameters())
    parent = Parent(extractor).train()
    assert parent.training and not extractor.training
    assert not any(module.training for module in extractor.modules())  # stochastic depth is off
    assert list(parent.state_dict()) == ["head.weight", "head.bias"]
    assert "features.3.1.layer_scale" in extractor.state_dict()
    fresh = Parent(ConvNeXtFeatures("convnext_tiny", "stage2", weights=extractor.state_dict()))
    fresh.load_state_dict(parent.state_dict(), strict=True)  # keeps the extractor's weights
    torch.testing.assert_close(fresh.extractor.features[0][0].weight, extractor.features[0][0].weight, rtol=0, atol=0)
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    extractor(x)["stage2"].square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in extractor.parameters())


@pytest.mark.filterwarnings("ignore::featx.errors.InputRangeWarning")  # the random head's outputs
def test_learnable_extractor_is_saved_also_after_freezing_and_reloads_strictly():
    trained = Parent(ConvNeXtFeatures("convnext_tiny", "stage1.1", weights=None, requires_grad=True))
    assert trained.extractor.training and not trained.extractor.frozen
    optimizer = torch.optim.SGD(trained.parameters(), lr=0.1)
    trained.extractor(trained.head(torch.rand(2, 3, 16, 16)))["stage1.1"].mean().backward()
    optimizer.step()
    trained.requires_grad_(False)  # freeze for fine-tuning or export
    assert trained.extractor.frozen and trained.extractor.learnable
    checkpoint = trained.state_dict()
    assert "extractor.features.1.1.block.3.weight" in checkpoint and "extractor.features.1.2.layer_scale" not in checkpoint
    reloaded = Parent(ConvNeXtFeatures("convnext_tiny", "stage1.1", weights=None, requires_grad=True))
    reloaded.load_state_dict(checkpoint, strict=True)
    for key, value in checkpoint.items():
        torch.testing.assert_close(reloaded.state_dict()[key], value, rtol=0, atol=0, msg=key)
    with pytest.raises(RuntimeError, match=r"Missing key.*extractor\.features\.0\.0\.weight"):
        reloaded.load_state_dict({"head.weight": checkpoint["head.weight"], "head.bias": checkpoint["head.bias"]})


def test_unfreezing_an_extractor_built_frozen_is_not_saved_and_warns():
    extractor = ConvNeXtFeatures("convnext_tiny", "stem", weights=None)
    extractor.requires_grad_(True)
    with pytest.warns(UserWarning, match="built frozen and later unfrozen.*not saved"):
        keys = list(Parent(extractor).state_dict())
    assert keys == ["head.weight", "head.bias"]


def test_stochastic_depth_follows_torchvisions_schedule_and_acts_only_in_train_mode(tiny):
    state = tiny.state_dict()
    default = ConvNeXtFeatures("convnext_tiny", "stage3.4", weights=state, requires_grad=True)
    assert {block.stochastic_depth.p for stage in (1, 3, 5) for block in default.features[stage]} == {0.0}
    dropping = ConvNeXtFeatures("convnext_tiny", "stage3.4", weights=state, requires_grad=True, stochastic_depth_prob=0.1)
    reference = meta_model("convnext_tiny")  # torchvision's convnext_tiny trains with 0.1, linear in the block id
    for stage in (1, 3, 5):
        for block, module in enumerate(dropping.features[stage]):
            assert module.stochastic_depth.p == reference.features[stage][block].stochastic_depth.p, (stage, block)
    x = torch.rand(2, 3, 32, 32)
    assert dropping.training and not torch.equal(dropping(x)["stage3.4"], default(x)["stage3.4"])
    dropping.eval()
    torch.testing.assert_close(dropping(x)["stage3.4"], default.eval()(x)["stage3.4"], rtol=0, atol=0)


def test_deepcopy_pickle_to_dtype_and_repr():
    extractor = ConvNeXtFeatures("convnext_tiny", "stem,stage1.0,downsample2", weights=None)
    x = torch.rand(1, 3, 32, 32)
    ref = extractor(x)
    for clone in (copy.deepcopy(extractor), pickle.loads(pickle.dumps(extractor))):
        out = clone(x)
        for name in ref:
            torch.testing.assert_close(out[name], ref[name], rtol=0, atol=0)
        assert list(Parent(clone).state_dict()) == ["head.weight", "head.bias"]
    double = copy.deepcopy(extractor).to(torch.float64)
    torch.testing.assert_close(double(x.double())["downsample2"].float(), ref["downsample2"], rtol=1e-5, atol=1e-5)
    assert "arch='convnext_tiny', taps=('stem', 'stage1.0', 'downsample2'), weights='random'" in repr(extractor)


def test_random_weights_warn_and_use_torchvisions_initialisation():
    with pytest.warns(RandomWeightsWarning):
        extractor = ConvNeXtFeatures("convnext_tiny", "stage1.0", weights=None)
    assert extractor.weights_id == "random"
    block = extractor.features[1][0]
    # torchvision: truncated normal (std 0.02, cut at +-2) weights, zero biases, layer_scale 1e-6
    linear = block.block[3]
    assert float(linear.weight.abs().max()) <= 2.0 and 0.015 < float(linear.weight.std()) < 0.025
    assert torch.count_nonzero(linear.bias) == 0
    assert torch.equal(block.layer_scale, torch.full((96, 1, 1), 1e-6))


# ---------------------------------------------------------------------------------------------
# Weights: fabricated checkpoint files, the features cache, "DEFAULT" offline
# ---------------------------------------------------------------------------------------------


def test_fabricated_checkpoint_files_and_the_features_cache(tiny, tmp_path, monkeypatch):
    import safetensors.torch

    pth, st = tmp_path / "convnext.pth", tmp_path / "convnext.safetensors"
    torch.save(tiny.state_dict(), pth)  # the whole model, classifier included, as torchvision saves it
    safetensors.torch.save_file({k: v.contiguous() for k, v in tiny.state_dict().items()}, st)
    x = torch.rand(1, 3, 40, 40)
    expected = torchvision_outputs(tiny, x)
    shallow = ConvNeXtFeatures("convnext_tiny", "stem", weights=pth)  # the first load writes the features cache
    caches = sorted((featx_home() / "cache").glob("*-features.safetensors"))
    assert [cache.name for cache in caches] == [f"convnext-{shallow.weights_sha256[:16]}-features.safetensors"]
    with safetensors.safe_open(str(caches[0]), framework="pt") as handle:  # every features tensor, no classifier
        assert sorted(handle.keys()) == sorted(k for k in tiny.state_dict() if k.startswith("features."))

    def forbidden(*args, **kwargs):
        raise AssertionError("torch.load called although the features cache exists")

    monkeypatch.setattr(torch, "load", forbidden)
    deep = ConvNeXtFeatures("convnext_tiny", "stage3.4,stage4", weights=pth)  # a deeper load reads the cache
    from_st = ConvNeXtFeatures("convnext_tiny", "stage4", weights=st)
    assert shallow.weights_id == deep.weights_id == f"file:{pth}" and deep.weights_sha256 is not None
    torch.testing.assert_close(shallow(x)["stem"], expected["features.0"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(deep(x)["stage3.4"], expected["features.5.4"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(deep(x)["stage4"], expected["features.7"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(from_st(x)["stage4"], deep(x)["stage4"], rtol=0, atol=0)


def test_default_weights_are_found_offline(tiny):
    # Reference: torchvision's ConvNeXt_Tiny_Weights.IMAGENET1K_V1 (URL, parameter count).
    reference = torchvision.models.ConvNeXt_Tiny_Weights.IMAGENET1K_V1
    member = ConvNeXtWeights.CONVNEXT_TINY_IMAGENET1K_V1
    assert member.url == reference.url and member.file_name == "convnext_tiny-983f1562.pth"
    assert default_backbone("convnext_tiny") is member
    with pytest.raises(WeightsNotFoundError, match="featx weights download CONVNEXT_TINY_IMAGENET1K_V1") as info:
        ConvNeXtFeatures("convnext_tiny", "stage2")
    assert member.file_name in str(info.value)
    hub = Path(os.environ["TORCH_HOME"]) / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    torch.save(tiny.state_dict(), hub / member.file_name)  # fabricated: random values, not the real hash
    with pytest.warns(UnverifiedWeightsWarning, match="CONVNEXT_TINY_IMAGENET1K_V1"):
        extractor = ConvNeXtFeatures("convnext_tiny", "stage2")
    assert extractor.weights_id == "unverified:CONVNEXT_TINY_IMAGENET1K_V1" and extractor.weights_verified is False
    torch.testing.assert_close(extractor.features[3][2].layer_scale, tiny.features[3][2].layer_scale, rtol=0, atol=0)
    with pytest.warns(UnverifiedWeightsWarning):
        by_enum = ConvNeXtFeatures("convnext_tiny", "stage2", weights=reference)
    assert by_enum.weights_id == extractor.weights_id
    with pytest.raises(ValueError, match=r"weights CONVNEXT_SMALL_IMAGENET1K_V1 are for convnext_small"):
        ConvNeXtFeatures("convnext_tiny", "stage2", weights="CONVNEXT_SMALL_IMAGENET1K_V1")


# ---------------------------------------------------------------------------------------------
# The layer table: `featx layers convnext_tiny`
# ---------------------------------------------------------------------------------------------


def test_layer_table_shapes_match_a_real_forward(tiny):
    rows = convnext_layer_table("convnext_tiny", 70, 45)
    extractor = ConvNeXtFeatures("convnext_tiny", TINY_TAPS, weights=tiny.state_dict())
    feats = extractor(torch.rand(1, 3, 70, 45))
    assert [row.name for row in rows] == list(TINY_TAPS)
    for row in rows:
        assert row.shape == tuple(feats[row.name].shape[1:]), row.name
    with pytest.raises(ValueError, match="too small for convnext_tiny: stage4 would be empty .needs at least 32x32"):
        convnext_layer_table("convnext_tiny", 31, 224)
    with pytest.raises(ValueError, match="unknown head 'conv' for convnext_tiny"):
        convnext_layer_table("convnext_tiny", head="conv")


def test_cli_layers_prints_torchvisions_parameter_total():
    from featx_cli.main import cli

    reference = meta_model("convnext_tiny")
    total = sum(p.numel() for p in reference.parameters())  # what a user gets from torchvision
    result = CliRunner().invoke(cli, ["layers", "convnext_tiny", "--head", "fc", "--taps", "stage3.4,features.7"])
    assert result.exit_code == 0, result.output
    assert f"Total params: {total:,}" in result.output and total == 28_589_128
    assert f"Features params: {count(reference.features):,}" in result.output
    assert "* stage3.4 " in result.output and "* stage4 " in result.output
    assert re.search(r"\n  downsample2 +5  down +\(192, 28, 28\) +8 +74,112\n", result.output)
    bad = CliRunner().invoke(cli, ["layers", "convnext_tiny", "--taps", "stage5"])
    assert bad.exit_code == 2 and "Did you mean 'stage4'?" in bad.output
    pooled = CliRunner().invoke(cli, ["layers", "convnext_tiny", "--pooling", "avg"])
    assert pooled.exit_code == 2 and "--pooling applies to VGG only" in pooled.output
