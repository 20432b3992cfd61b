"""featx.AlexNetFeatures: canonical names, truncation, strict loading of torchvision's layout,
features equal to torchvision's ``alexnet().features`` on the same weights, offline lookup."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
import torch
import torchvision

from featx.backbones.alexnet import ALEXNET_LAYERS, AlexNetFeatures, alexnet_min_input_size
from featx.backbones.base import IMAGENET_MEAN, IMAGENET_STD
from featx.errors import RandomWeightsWarning, UnverifiedWeightsWarning, WeightsLoadError, WeightsNotFoundError
from featx.weights import MetricWeights, default_backbone
from featx.weights.registry import member_of


def torchvision_alexnet() -> torchvision.models.AlexNet:
    torch.manual_seed(0)
    return torchvision.models.alexnet(weights=None).eval()


def test_names_and_indices_follow_torchvision():
    reference = torchvision_alexnet().features
    assert len(ALEXNET_LAYERS) == len(reference) == 13
    kinds = {torch.nn.Conv2d: "conv", torch.nn.ReLU: "relu", torch.nn.MaxPool2d: "pool"}
    for layer, module in zip(ALEXNET_LAYERS, reference, strict=True):
        assert layer.kind == kinds[type(module)]
        if layer.kind == "conv":
            assert (layer.in_channels, layer.out_channels) == (module.in_channels, module.out_channels)
            assert (layer.kernel, layer.stride, layer.padding) == (module.kernel_size[0], module.stride[0], module.padding[0])
    assert [layer.name for layer in ALEXNET_LAYERS] == [
        "conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "conv3", "relu3",
        "conv4", "relu4", "conv5", "relu5", "pool5",
    ]  # fmt: skip


def test_features_equal_torchvision_on_the_same_weights():
    reference = torchvision_alexnet()
    alex = AlexNetFeatures("conv2,relu2,relu5", weights=reference.state_dict())
    assert len(alex.features) == 12  # built up to relu5 only
    assert alex.weights_id == "state_dict"
    x = torch.rand(2, 3, 80, 72)
    feats = alex(x)
    normalised = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    outputs, h = {}, normalised
    for index, module in enumerate(reference.features):
        h = module(h.clone())  # clone: torchvision's ReLUs are in place
        outputs[index] = h
    assert list(feats) == ["conv2", "relu2", "relu5"]
    torch.testing.assert_close(feats["conv2"], outputs[3], rtol=1e-5, atol=1e-5)  # pre-activation, not clobbered
    assert (feats["conv2"] < 0).any()
    torch.testing.assert_close(feats["relu2"], outputs[4], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(feats["relu5"], outputs[11], rtol=1e-5, atol=1e-5)
    normalized = AlexNetFeatures("relu5", weights=reference.state_dict(), input_range="normalized")
    torch.testing.assert_close(normalized(normalised)["relu5"], outputs[11], rtol=1e-5, atol=1e-5)


def test_strict_loading_and_frozen_defaults():
    state = torchvision_alexnet().state_dict()
    with pytest.raises(WeightsLoadError, match="missing keys") as info:
        AlexNetFeatures("relu2", weights={k: v for k, v in state.items() if k != "features.3.bias"})
    assert info.value.missing == ("features.3.bias",)
    with pytest.raises(WeightsLoadError, match="shape mismatches"):
        AlexNetFeatures("relu1", weights={**state, "features.0.weight": torch.zeros(64, 3, 3, 3)})
    with pytest.warns(RandomWeightsWarning):
        alex = AlexNetFeatures("relu3", weights=None)
    assert alex.weights_id == "random" and not any(p.requires_grad for p in alex.parameters())
    parent = torch.nn.Sequential(torch.nn.Identity(), alex)
    parent.train()
    assert not alex.training and parent.state_dict() == {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        learnable = AlexNetFeatures("relu1", weights=None, requires_grad=True)
    assert learnable.training and all(p.requires_grad for p in learnable.parameters())


def test_min_input_size_and_bad_inputs():
    assert alexnet_min_input_size("relu5") == 31 and alexnet_min_input_size("pool5") == 63
    state = torchvision_alexnet().state_dict()
    alex = AlexNetFeatures("relu5", weights=state)
    assert alex(torch.rand(1, 3, 31, 31))["relu5"].shape == (1, 256, 1, 1)
    with pytest.raises(ValueError, match="at least 31x31"):
        alex(torch.rand(1, 3, 30, 40))
    with pytest.raises(ValueError, match="unknown tap 'relu6' for alexnet"):
        AlexNetFeatures("relu6", weights=state)
    with pytest.raises(ValueError, match=r"Did you mean 'relu1'\?"):
        AlexNetFeatures(["rleu1"], weights=state)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        alex(torch.rand(3, 64, 64))


def test_registry_and_offline_lookup(monkeypatch, tmp_path):
    # Reference: torchvision's AlexNet_Weights.IMAGENET1K_V1 (URL, parameter count, accuracy).
    reference = torchvision.models.AlexNet_Weights.IMAGENET1K_V1
    member = MetricWeights.ALEXNET_IMAGENET1K_V1
    assert member.url == reference.url and member.file_name == reference.url.rsplit("/", 1)[1]
    assert member.meta["num_params"] == reference.meta["num_params"]
    assert member.meta["acc@1"] == reference.meta["_metrics"]["ImageNet-1K"]["acc@1"]
    assert member.kind == "backbone" and default_backbone("alexnet") is member
    assert member_of("alexnet") is member and member_of("AlexNet_Weights.IMAGENET1K_V1") is member
    with pytest.raises(WeightsNotFoundError, match="featx weights download ALEXNET_IMAGENET1K_V1"):
        AlexNetFeatures("relu1")
    hub = Path(os.environ["TORCH_HOME"]) / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    torch.save(torchvision_alexnet().state_dict(), hub / member.file_name)  # fabricated: not the real hash
    with pytest.warns(UnverifiedWeightsWarning, match="torchvision's ALEXNET_IMAGENET1K_V1"):
        alex = AlexNetFeatures("relu2")
    assert alex.weights_id == "unverified:ALEXNET_IMAGENET1K_V1" and alex.weights_verified is False
    with pytest.warns(UnverifiedWeightsWarning):
        by_enum = AlexNetFeatures("relu2", weights=reference)
    assert by_enum.weights_id == alex.weights_id
