"""Tests for featx.io.featfile: feature files (safetensors) written deterministically and read back.

References: files read back with the official ``safetensors`` reader; header bytes parsed by hand.
"""

from __future__ import annotations

import struct

import pytest
import safetensors.torch
import torch

from featx.io.featfile import load_features, read_feature_metadata, save_features


def test_features_roundtrip_with_official_reader(tmp_path):
    tensors = {
        "relu2_1": torch.randn(4, 3, 2),
        "relu1_1": torch.randn(2, 5).t(),  # non-contiguous view
        "bf": torch.randn(3).to(torch.bfloat16),
        "half": torch.randn(2, 2).half(),
    }
    metadata = {"arch": "vgg19", "taps": "relu1_1,relu2_1"}
    path = tmp_path / "x.safetensors"
    save_features(path, tensors, metadata)
    loaded, meta = load_features(path)
    assert meta == metadata and sorted(loaded) == sorted(tensors)
    official = safetensors.torch.load_file(str(path))  # reference reader
    for name, tensor in tensors.items():
        assert loaded[name].dtype == tensor.dtype and torch.equal(loaded[name], tensor)
        assert torch.equal(official[name], tensor)
    assert read_feature_metadata(path) == metadata


def test_features_bytes_deterministic_regardless_of_key_order(tmp_path):
    a = {"x": torch.arange(6.0).view(2, 3), "y": torch.ones(2)}
    save_features(tmp_path / "1.safetensors", a, {"b": "2", "a": "1"})
    save_features(tmp_path / "2.safetensors", dict(reversed(list(a.items()))), {"a": "1", "b": "2"})
    assert (tmp_path / "1.safetensors").read_bytes() == (tmp_path / "2.safetensors").read_bytes()
    header_len = struct.unpack("<Q", (tmp_path / "1.safetensors").read_bytes()[:8])[0]
    assert header_len % 8 == 0


def test_save_features_validates(tmp_path):
    with pytest.raises(TypeError, match="metadata must map str -> str"):
        save_features(tmp_path / "a.safetensors", {"x": torch.ones(1)}, {"n": 3})
    with pytest.raises(TypeError, match="non-empty dict"):
        save_features(tmp_path / "a.safetensors", {}, {})
    with pytest.raises(TypeError, match=r"tensors\['x'\] must be a torch.Tensor"):
        save_features(tmp_path / "a.safetensors", {"x": [1.0]}, {})
    assert not list(tmp_path.iterdir())


def test_truncated_feature_file_is_invalid(tmp_path):
    path = tmp_path / "x.safetensors"
    save_features(path, {"x": torch.ones(100)}, {"k": "v"})
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        read_feature_metadata(path)
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        load_features(path)
    with pytest.raises(FileNotFoundError, match="feature file not found"):
        load_features(tmp_path / "nope.safetensors")
