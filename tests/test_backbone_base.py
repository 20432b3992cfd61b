"""The contract every backbone shares (featx.backbones.base, catalog) and the generic strict loading
behind it (featx.weights.matching.KeyLayout, the features cache's one-time value check)."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

import featx.weights.cache
from featx.backbones.alexnet import AlexNetFeatures
from featx.backbones.base import BackboneFeatures
from featx.backbones.catalog import architectures, available_taps, build_backbone, family_of
from featx.backbones.taps import TapInfo, select_taps
from featx.errors import FeatxWarning, WeightsLoadError
from featx.weights import load_weights
from featx.weights.matching import KeyLayout


def quiet(factory, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return factory(*args, **kwargs)


# --- the catalog -----------------------------------------------------------------------------


def test_the_catalog_builds_every_family_by_name():
    vgg = quiet(build_backbone, "vgg16", "relu2_2", weights=None)
    alex = quiet(build_backbone, "alexnet", ["relu2", "relu1"], weights=None)
    assert (type(vgg).__name__, vgg.taps) == ("VGGFeatures", ("relu2_2",))
    assert (type(alex).__name__, alex.taps) == ("AlexNetFeatures", ("relu1", "relu2"))
    assert family_of("vgg19_bn") == "vgg" and "alexnet" in architectures()


def test_an_unknown_arch_suggests_the_closest():
    with pytest.raises(ValueError, match=r"unknown arch 'vgg91'.*Did you mean 'vgg19'"):
        build_backbone("vgg91", "relu1_1", weights=None)


@pytest.mark.parametrize("arch", ["vgg11", "alexnet"])
def test_available_taps_are_what_the_extractor_reports(arch):
    # reference: the extractor's own feature_info, built with every tap
    every = available_taps(arch)
    module = quiet(build_backbone, arch, [info.name for info in every], weights=None)
    assert module.feature_info == every


def test_select_taps_orders_by_depth_and_suggests_names():
    layers = (TapInfo("stem", 0, 8, 2), TapInfo("stage1", 1, 16, 4), TapInfo("stage2", 2, 32, 8))
    assert [info.name for info in select_taps(layers, ["stage2", "stem", "stage2"], arch="demo")] == ["stem", "stage2"]
    with pytest.raises(ValueError, match=r"unknown tap 'stage3' for demo.*Did you mean"):
        select_taps(layers, "stage3", arch="demo")
    with pytest.raises(ValueError, match="at least one layer of demo"):
        select_taps(layers, " , ", arch="demo")
    with pytest.raises(TypeError, match="tap names must be strings"):
        select_taps(layers, [1], arch="demo")


# --- AlexNet on the shared base ----------------------------------------------------------------


def test_alexnet_feature_info_matches_output_shapes():
    alex = quiet(AlexNetFeatures, "conv1,pool1,relu3,pool5", weights=None)
    x = torch.rand(2, 3, 127, 127)
    out = alex(x)
    for info in alex.feature_info:
        assert out[info.name].shape[1] == info.channels
        # nominal stride: the map is the input divided by the stride, rounded down by the kernels
        assert out[info.name].shape[-1] <= 127 // info.stride + 1


def test_alexnet_gray_repeat_equals_rgb():
    alex = quiet(AlexNetFeatures, "relu2", weights=None, gray="repeat")
    gray = torch.rand(1, 1, 64, 64)
    torch.testing.assert_close(alex(gray)["relu2"], alex(gray.expand(-1, 3, -1, -1))["relu2"], rtol=0, atol=0)
    strict = quiet(AlexNetFeatures, "relu2", weights=None)
    with pytest.raises(ValueError, match="gray='repeat'"):
        strict(gray)


def test_an_unfrozen_frozen_backbone_warns_once_when_its_parent_drops_it():
    parent = nn.Module()
    parent.alex = quiet(AlexNetFeatures, "relu1", weights=None)
    parent.alex.requires_grad_(True)
    with pytest.warns(FeatxWarning, match="built frozen and later unfrozen"):
        state = parent.state_dict()
    assert not any(key.startswith("alex.") for key in state)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        parent.state_dict()  # once only


def test_a_backbone_without_forward_features_says_so():
    class Incomplete(BackboneFeatures):
        pass

    module = Incomplete("demo", (TapInfo("x", 0, 3, 1),), min_input_size=1)
    with pytest.raises(NotImplementedError, match="Incomplete does not define forward_features"):
        module(torch.rand(1, 3, 2, 2))
    assert copy.deepcopy(module).taps == ("x",)


# --- generic strict loading ----------------------------------------------------------------------


def nested_layout(deepest_block: int) -> KeyLayout:
    """A ResNet-like layout: ``stem.*``, ``blocks.{i}.*``, head ``fc.*``; blocks past ``deepest_block`` not built."""

    def canonical(key: str):
        return None if key.startswith("fc.") else key

    def built(key: str) -> bool:
        parts = key.split(".")
        return not (parts[0] == "blocks" and int(parts[1]) > deepest_block)

    return KeyLayout(canonical, built, f"demo up to blocks.{deepest_block}", "Keys look like 'blocks.{i}.conv.weight'.", "demo")


def full_state() -> dict[str, torch.Tensor]:
    state = {"stem.weight": torch.randn(4, 3), "fc.weight": torch.randn(10, 4)}
    for i in range(3):
        state[f"blocks.{i}.conv.weight"] = torch.randn(4, 4)
    return state


def expected_up_to(block: int) -> dict[str, torch.Size]:
    return {
        key: value.shape
        for key, value in full_state().items()
        if key == "stem.weight" or (key.startswith("blocks.") and int(key.split(".")[1]) <= block)
    }


def test_a_layout_ignores_the_head_and_deeper_layers():
    state = full_state()
    loaded = load_weights(state, arch="alexnet", expected=expected_up_to(1), layout=nested_layout(1))
    assert sorted(loaded.state_dict) == ["blocks.0.conv.weight", "blocks.1.conv.weight", "stem.weight"]
    assert torch.equal(loaded.state_dict["blocks.1.conv.weight"], state["blocks.1.conv.weight"])


def test_a_layout_is_strict_inside_the_built_layers():
    state = full_state()
    state["blocks.0.extra.weight"] = torch.zeros(1)  # inside a built block: unexpected
    del state["blocks.1.conv.weight"]  # a built layer's key: missing
    state["stem.weight"] = torch.zeros(5, 3)  # wrong shape
    with pytest.raises(WeightsLoadError) as info:
        load_weights(state, arch="alexnet", expected=expected_up_to(1), layout=nested_layout(1))
    message = str(info.value)
    assert "does not fit demo up to blocks.1" in message
    assert "missing keys (1): ['blocks.1.conv.weight']" in message
    assert "unexpected keys (1): ['blocks.0.extra.weight']" in message
    assert "stem.weight: expected (4, 3), got (5, 3)" in message
    assert "Keys look like 'blocks.{i}.conv.weight'." in message


def test_an_expected_key_outside_the_layout_is_refused():
    with pytest.raises(ValueError, match="expected key 'blocks.2.conv.weight' is not a key of demo up to blocks.1"):
        load_weights(full_state(), arch="alexnet", expected={"blocks.2.conv.weight": (4, 4)}, layout=nested_layout(1))


def test_the_sequential_layout_reads_bare_and_prefixed_keys():
    layout = KeyLayout.sequential(3, "vgg11")
    assert layout.canonical("0.weight") == layout.canonical("features.0.weight") == "features.0.weight"
    assert layout.canonical("classifier.6.bias") is None
    assert layout.built("features.3.weight") and not layout.built("features.4.weight")
    assert layout.canonical(layout.canonical("0.weight")) == "features.0.weight"  # idempotent, as the cache needs


# --- the features cache checks values once ----------------------------------------------------------


def test_a_cached_load_does_not_check_the_values_again(tmp_path, monkeypatch):
    monkeypatch.setenv("FEATX_HOME", str(tmp_path / "home"))
    reference = quiet(build_backbone, "vgg11", "relu2_1", weights=None)
    checkpoint = tmp_path / "vgg11-custom.pth"
    torch.save({f"features.{k}": v for k, v in reference.features.state_dict().items()}, checkpoint)
    checked: list[int] = []
    original = featx.weights.matching.check_values

    def spy(selected, where):
        checked.append(len(selected))
        return original(selected, where)

    monkeypatch.setattr(featx.weights.matching, "check_values", spy)
    monkeypatch.setattr(featx.weights.cache, "check_values", spy)
    first = quiet(build_backbone, "vgg11", "relu2_1", weights=checkpoint)
    assert checked, "the first load checks the values"
    assert any(path.name.endswith("-features.safetensors") for path in (tmp_path / "home" / "cache").iterdir())
    checked.clear()
    second = quiet(build_backbone, "vgg11", "relu2_1", weights=checkpoint)
    assert checked == [], "a load from the cache featx wrote and checked does not check again"
    for a, b in zip(first.parameters(), second.parameters(), strict=True):
        assert torch.equal(a, b)


def test_a_checkpoint_with_non_finite_values_gets_no_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FEATX_HOME", str(tmp_path / "home"))
    reference = quiet(build_backbone, "vgg11", "relu1_1", weights=None)
    state = {f"features.{k}": v.clone() for k, v in reference.features.state_dict().items()}
    state["features.30.weight"] = torch.full((2, 2), float("nan"))  # a layer this extractor never builds
    checkpoint = tmp_path / "vgg11-nan-deep.pth"
    torch.save(state, checkpoint)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_backbone("vgg11", "relu1_1", weights=checkpoint)  # the built layers are finite: it loads
    assert not [w for w in caught if "cache" in str(w.message)], "no cache, and no warning about the cache"
    cache = tmp_path / "home" / "cache"
    assert not list(cache.glob("*.safetensors"))
