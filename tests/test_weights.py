"""Tests for featx.weights: known checkpoints, search order, strict loading, safety and the features cache.

Checkpoints are fabricated in torchvision's layout: ``features`` built by torchvision's own
``make_layers`` (the code torchvision's VGG uses), keys ``features.{i}.*``, plus ``classifier.*``
entries. References are torchvision's weight enums, the saved tensors themselves and hashlib.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import socket
import warnings
from pathlib import Path

import pytest
import safetensors
import safetensors.torch
import torch
import torchvision
from torchvision.models.vgg import cfgs, make_layers

from featx.backbones.vgg.layers import ARCHS
from featx.errors import RandomWeightsWarning, UnverifiedWeightsWarning, WeightsLoadError, WeightsNotFoundError
from featx.weights import (
    LoadedWeights,
    VGGWeights,
    clear_cache,
    featx_home,
    find,
    load_weights,
    locate,
    read_checkpoint,
    search_dirs,
)

_CFG = {"vgg11": "A", "vgg13": "B", "vgg16": "D", "vgg19": "E"}  # torchvision.models.vgg: cfgs letters


def tv_state_dict(arch: str = "vgg11", depth: int | None = None) -> dict[str, torch.Tensor]:
    """A state dict laid out like torchvision's VGG (features.{i}.* and classifier.*), random values.

    ``depth`` keeps only features[:depth] (smaller files); the classifier entries are small
    stand-ins with torchvision's key names (featx ignores them, whatever their shape).
    """
    features = make_layers(cfgs[_CFG[arch.removesuffix("_bn")]], batch_norm=arch.endswith("_bn"))
    if depth is not None:
        features = features[:depth]
    state = {f"features.{key}": value for key, value in features.state_dict().items()}
    for index in (0, 3, 6):
        state[f"classifier.{index}.weight"] = torch.randn(4, 4)
        state[f"classifier.{index}.bias"] = torch.randn(4)
    return state


def expected_of(state: dict[str, torch.Tensor], depth: int) -> dict[str, torch.Size]:
    """What an extractor truncated to features[:depth] asks for."""
    return {k: v.shape for k, v in state.items() if k.startswith("features.") and int(k.split(".")[1]) < depth}


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()  # reference: hashlib on the whole file


def hub_dir() -> Path:
    return Path(os.environ["TORCH_HOME"]) / "hub" / "checkpoints"


def save(state: dict, path: Path, legacy: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        safetensors.torch.save_file(state, str(path))
    else:
        torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    return path


# ---------------------------------------------------------------------------------------------
# Known checkpoints
# ---------------------------------------------------------------------------------------------


def test_default_per_arch_and_vgg19_numbers():
    assert {VGGWeights.default(arch).arch for arch in ARCHS} == set(ARCHS)
    # torchvision docs: VGG19 IMAGENET1K_V1 acc@1 72.376, 143,667,240 parameters.
    assert VGGWeights.default("vgg19").meta["acc@1"] == pytest.approx(72.376)
    assert VGGWeights.VGG19_IMAGENET1K_V1.meta["num_params"] == 143_667_240
    with pytest.raises(ValueError, match="unknown arch 'vgg20'"):
        VGGWeights.default("vgg20")


def test_featx_home_and_search_dirs(monkeypatch, tmp_path):
    monkeypatch.setenv("FEATX_HOME", str(tmp_path / "fx"))
    assert featx_home() == tmp_path / "fx"
    # torch.hub.get_dir() honours TORCH_HOME (reference: torch's public API).
    assert search_dirs() == (tmp_path / "fx", Path(torch.hub.get_dir()) / "checkpoints")
    assert search_dirs()[1] == hub_dir()
    monkeypatch.delenv("FEATX_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert featx_home() == tmp_path / "home" / ".cache" / "featx"


# ---------------------------------------------------------------------------------------------
# Resolving "DEFAULT" and names
# ---------------------------------------------------------------------------------------------


def test_default_found_in_hub_dir():
    state = tv_state_dict("vgg19", depth=5)
    path = save(state, hub_dir() / "vgg19-dcbb9e9d.pth", legacy=True)
    # A fabricated file under the real name is not torchvision's: featx says so (hash prefix), and
    # never records it under the checkpoint's name.
    with pytest.warns(UnverifiedWeightsWarning, match=r"its size is [\d,]+ bytes, not 574,673,361"):
        loaded = load_weights("DEFAULT", arch="vgg19", expected=expected_of(state, 5))
    assert isinstance(loaded, LoadedWeights)
    assert loaded.weights_id == "unverified:VGG19_IMAGENET1K_V1" and loaded.verified is False
    assert loaded.source == str(path)
    assert loaded.sha256 == sha256_of(path)
    assert list(loaded.state_dict) == list(expected_of(state, 5))
    for key, value in loaded.state_dict.items():
        assert torch.equal(value, state[key])


def test_featx_home_is_searched_first():
    in_hub = tv_state_dict("vgg11", depth=2)
    in_home = {k: v + 1 for k, v in in_hub.items()}
    save(in_hub, hub_dir() / "vgg11-8a719046.pth")
    home_file = save(in_home, featx_home() / "vgg11-8a719046.pth")
    assert find("VGG11_IMAGENET1K_V1") == home_file == locate("vgg11")
    with pytest.warns(UserWarning, match="named like torchvision"):
        loaded = load_weights(VGGWeights.VGG11_IMAGENET1K_V1, arch="vgg11", expected=expected_of(in_hub, 2))
    assert torch.equal(loaded.state_dict["features.0.weight"], in_home["features.0.weight"])
    assert loaded.source == str(home_file)


def test_not_found_message_names_file_dirs_and_fixes():
    with pytest.raises(WeightsNotFoundError) as info:
        load_weights("DEFAULT", arch="vgg19", expected={"features.0.weight": torch.Size([64, 3, 3, 3])})
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    for part in ("vgg19-dcbb9e9d.pth", "dcbb9e9d", str(featx_home()), str(hub_dir()),
                 "featx weights download VGG19_IMAGENET1K_V1", "weights=PATH"):  # fmt: skip
        assert part in message
    assert info.value.searched == (featx_home(), hub_dir())
    assert find("vgg19") is None


def test_names_torchvision_enum_and_wrong_arch():
    state = tv_state_dict("vgg11", depth=2)
    save(state, hub_dir() / "vgg11-8a719046.pth")
    expected = expected_of(state, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # fabricated file under the real name
        by_name = load_weights("VGG11_IMAGENET1K_V1", arch="vgg11", expected=expected)
        by_tv = load_weights(torchvision.models.VGG11_Weights.IMAGENET1K_V1, arch="vgg11", expected=expected)
    assert by_name.weights_id == by_tv.weights_id == "unverified:VGG11_IMAGENET1K_V1"  # fabricated file
    with pytest.raises(ValueError, match=r"VGG16_IMAGENET1K_V1 are for vgg16, but arch='vgg11'"):
        load_weights(VGGWeights.VGG16_IMAGENET1K_V1, arch="vgg11", expected=expected)
    with pytest.raises(ValueError, match=r"are for vgg19, but arch='vgg11'"):
        load_weights("VGG19_IMAGENET1K_V1", arch="vgg11", expected=expected)


def test_torchvision_weights_strings():
    state = tv_state_dict("vgg19", depth=2)
    save(state, hub_dir() / "vgg19-dcbb9e9d.pth")
    save(tv_state_dict("vgg11_bn", depth=2), hub_dir() / "vgg11_bn-6002323d.pth")
    expected = expected_of(state, 2)
    # torchvision's own spellings name the checkpoint; they are not paths with a suffix
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # fabricated file under the real name
        for spelling in ("VGG19_Weights.IMAGENET1K_V1", "VGG19_Weights.DEFAULT", "IMAGENET1K_V1",
                         "torchvision.models.VGG19_Weights.IMAGENET1K_V1"):  # fmt: skip
            loaded = load_weights(spelling, arch="vgg19", expected=expected)
            assert loaded.weights_id == "unverified:VGG19_IMAGENET1K_V1", spelling
    # the reference: torchvision's enum member of the same name
    assert str(torchvision.models.VGG19_Weights.IMAGENET1K_V1) == "VGG19_Weights.IMAGENET1K_V1"
    assert VGGWeights.from_torchvision_name("VGG11_BN_Weights.IMAGENET1K_V1") is VGGWeights.VGG11_BN_IMAGENET1K_V1
    assert find("VGG11_BN_Weights.IMAGENET1K_V1") == hub_dir() / "vgg11_bn-6002323d.pth"
    with pytest.raises(ValueError, match=r"are for vgg16, but arch='vgg19'"):
        load_weights("VGG16_Weights.IMAGENET1K_V1", arch="vgg19", expected=expected)
    with pytest.raises(ValueError, match=r"'VGG16_Weights.IMAGENET1K_FEATURES' names torchvision weights featx"):
        load_weights("VGG16_Weights.IMAGENET1K_FEATURES", arch="vgg16", expected=expected)


def test_bad_weights_arguments():
    expected = {"features.0.weight": torch.Size([64, 3, 3, 3])}
    with pytest.raises(ValueError, match=r"unknown weights 'VGG19_IMAGENET_V1'.*Did you mean 'VGG19_IMAGENET1K_V1'"):
        load_weights("VGG19_IMAGENET_V1", arch="vgg19", expected=expected)
    with pytest.raises(WeightsNotFoundError, match=r"weights file not found: .*nowhere/vgg\.pth"):
        load_weights("nowhere/vgg.pth", arch="vgg19", expected=expected)
    with pytest.raises(WeightsNotFoundError, match=r"missing\.safetensors"):
        load_weights(Path("missing.safetensors"), arch="vgg19", expected=expected)
    with pytest.raises(TypeError, match="weights must be 'DEFAULT'.*got int"):
        load_weights(3, arch="vgg19", expected=expected)
    with pytest.raises(TypeError, match="must map str keys to tensors"):
        load_weights({"features.0.weight": [1.0]}, arch="vgg19", expected=expected)
    with pytest.raises(ValueError, match="unknown arch"):
        load_weights(None, arch="vgg21", expected=expected)


def test_none_warns_once_and_returns_none():
    with pytest.warns(RandomWeightsWarning, match="random weights") as record:
        assert load_weights(None, arch="vgg19", expected={"features.0.weight": torch.Size([64, 3, 3, 3])}) is None
    assert len([w for w in record if issubclass(w.category, RandomWeightsWarning)]) == 1


# ---------------------------------------------------------------------------------------------
# Paths, formats, key layouts
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,legacy", [("ckpt.pth", False), ("ckpt_legacy.pth", True), ("ckpt.safetensors", False)])
def test_load_by_path(tmp_path, name, legacy):
    state = tv_state_dict("vgg11", depth=6)
    path = save(state, tmp_path / name, legacy=legacy)
    loaded = load_weights(str(path), arch="vgg11", expected=expected_of(state, 4))
    assert loaded.weights_id == f"file:{path.resolve()}"
    assert loaded.sha256 == sha256_of(path)
    assert list(loaded.state_dict) == ["features.0.weight", "features.0.bias", "features.3.weight", "features.3.bias"]
    for key, value in loaded.state_dict.items():
        assert torch.equal(value, state[key])


def test_bare_feature_keys_and_in_memory_dict(tmp_path):
    features = make_layers(cfgs["A"])[:4]  # what `vgg.features[:4].state_dict()` gives: "0.weight", ...
    bare = features.state_dict()
    assert "0.weight" in bare
    expected = {f"features.{k}": v.shape for k, v in bare.items()}
    from_file = load_weights(save(bare, tmp_path / "features.pth"), arch="vgg11", expected=expected)
    from_memory = load_weights(bare, arch="vgg11", expected=expected)
    assert from_memory.weights_id == "state_dict" and from_memory.sha256 is None and from_memory.source is None
    for key in expected:
        assert torch.equal(from_file.state_dict[key], bare[key.removeprefix("features.")])
        assert torch.equal(from_memory.state_dict[key], bare[key.removeprefix("features.")])


def test_classifier_and_deeper_layers_are_ignored():
    state = tv_state_dict("vgg11")  # all 21 feature layers plus classifier entries
    loaded = load_weights(state, arch="vgg11", expected=expected_of(state, 2))
    assert sorted(loaded.state_dict) == ["features.0.bias", "features.0.weight"]


def test_batchnorm_keys_and_missing_num_batches_tracked():
    state = tv_state_dict("vgg11_bn", depth=3)
    expected = expected_of(state, 3)
    assert "features.1.num_batches_tracked" in expected and "features.1.running_var" in expected
    # Checkpoints written before PyTorch 0.4.1 (like torchvision's *_bn files) lack num_batches_tracked;
    # torch's BatchNorm loading fills in 0, so featx does the same.
    old = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    loaded = load_weights(old, arch="vgg11_bn", expected=expected)
    assert loaded.state_dict["features.1.num_batches_tracked"].item() == 0
    assert torch.equal(loaded.state_dict["features.1.running_var"], state["features.1.running_var"])


def test_strict_errors_list_sorted_keys():
    state = tv_state_dict("vgg11", depth=6)
    expected = expected_of(state, 6)
    broken = dict(state)
    del broken["features.3.bias"], broken["features.0.bias"]
    broken["features.3.extra"] = torch.zeros(1)
    broken["features.1.alpha"] = torch.zeros(1)
    broken["features.0.weight"] = torch.zeros(32, 3, 3, 3)
    broken["module.features.0.weight"] = torch.zeros(1)
    with pytest.raises(WeightsLoadError) as info:
        load_weights(broken, arch="vgg11", expected=expected)
    error = info.value
    assert error.missing == ("features.0.bias", "features.3.bias")
    assert error.unexpected == ("features.1.alpha", "features.3.extra", "module.features.0.weight")
    assert error.mismatched == ("features.0.weight: expected (64, 3, 3, 3), got (32, 3, 3, 3)",)
    message = str(error)
    assert "missing keys (2): ['features.0.bias', 'features.3.bias']" in message
    assert "unexpected keys (3): ['features.1.alpha', 'features.3.extra', 'module.features.0.weight']" in message
    assert "features.0.weight: expected (64, 3, 3, 3), got (32, 3, 3, 3)" in message
    assert isinstance(error, ValueError)


def test_wrong_arch_checkpoint_is_refused(tmp_path):
    path = save(tv_state_dict("vgg11", depth=4), tmp_path / "vgg11.pth")
    # vgg19 has conv1_2 at index 2 (64 -> 64); vgg11 has a pool there and conv2_1 (64 -> 128) at 3.
    vgg19 = tv_state_dict("vgg19", depth=4)
    with pytest.raises(WeightsLoadError, match=r"does not fit vgg19 up to features\.2 ") as info:
        load_weights(path, arch="vgg19", expected=expected_of(vgg19, 4))
    assert info.value.missing == ("features.2.bias", "features.2.weight")
    assert info.value.path == str(path.resolve())


def test_read_checkpoint_unwraps_and_rejects_non_state_dicts(tmp_path):
    state = tv_state_dict("vgg11", depth=1)
    wrapped = save({"state_dict": state}, tmp_path / "wrapped.pt")
    assert read_checkpoint(wrapped).keys() == state.keys()
    mixed = save({"state_dict": state, "epoch": 3}, tmp_path / "mixed.pt")
    with pytest.raises(WeightsLoadError, match=r"not a state dict: entries \['epoch', 'state_dict'\]"):
        read_checkpoint(mixed)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        read_checkpoint(tmp_path / "nope.pth")


# ---------------------------------------------------------------------------------------------
# Unsafe and broken files
# ---------------------------------------------------------------------------------------------


class _Exploit:
    marker: str = ""

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("writer", ["pickle2", "pickle_default", "torch_zip", "torch_legacy"])
def test_malicious_pickle_is_refused_and_not_executed(tmp_path, writer):
    marker = tmp_path / "executed"
    exploit = _Exploit()
    exploit.marker = str(marker)
    path = tmp_path / "evil.pth"
    payload = {"features.0.weight": exploit}
    if writer.startswith("pickle"):
        path.write_bytes(pickle.dumps(payload, protocol=2 if writer == "pickle2" else None))
    else:
        torch.save(payload, path, _use_new_zipfile_serialization=writer == "torch_zip")
    with pytest.raises(WeightsLoadError, match=r"refusing to load .*evil\.pth.*only tensors are allowed") as info:
        load_weights(path, arch="vgg11", expected={"features.0.weight": torch.Size([64, 3, 3, 3])})
    assert isinstance(info.value.__cause__, pickle.UnpicklingError)
    assert not marker.exists()  # os.system never ran


@pytest.mark.parametrize("kind", ["empty", "truncated_zip", "truncated_legacy", "truncated_safetensors"])
def test_empty_or_truncated_files_name_the_path(tmp_path, kind):
    state = tv_state_dict("vgg11", depth=1)
    suffix = ".safetensors" if kind == "truncated_safetensors" else ".pth"
    full = save(state, tmp_path / f"full{suffix}", legacy=kind == "truncated_legacy")
    broken = tmp_path / f"broken{suffix}"
    broken.write_bytes(b"" if kind == "empty" else full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(WeightsLoadError, match=rf"cannot read .*{broken.name}") as info:
        load_weights(broken, arch="vgg11", expected=expected_of(state, 1))
    assert str(broken) in str(info.value)


# ---------------------------------------------------------------------------------------------
# Offline construction and the features cache
# ---------------------------------------------------------------------------------------------


def test_loading_never_opens_a_socket(tmp_path, monkeypatch):
    state = tv_state_dict("vgg19", depth=3)
    save(state, hub_dir() / "vgg19-dcbb9e9d.pth", legacy=True)
    pth = save(state, tmp_path / "a.pth")
    st = save({k: v for k, v in state.items()}, tmp_path / "a.safetensors")

    def no_network(*args, **kwargs):
        raise AssertionError("network access during weight loading")

    monkeypatch.setattr(socket, "socket", no_network)
    expected = expected_of(state, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for weights in ("DEFAULT", "DEFAULT", pth, st):  # the second DEFAULT reads the cache
            loaded = load_weights(weights, arch="vgg19", expected=expected)
            assert torch.equal(loaded.state_dict["features.2.weight"], state["features.2.weight"])


def test_cache_written_once_then_reused_without_torch_load(tmp_path, monkeypatch):
    state = tv_state_dict("vgg11")
    path = save(state, tmp_path / "vgg11-full.pth", legacy=True)
    first = load_weights(path, arch="vgg11", expected=expected_of(state, 4))
    caches = sorted((featx_home() / "cache").glob("*-features.safetensors"))
    assert [c.name for c in caches] == [f"vgg11-full-{first.sha256[:16]}-features.safetensors"]
    with safetensors.safe_open(str(caches[0]), framework="pt") as handle:
        # All features.* tensors (any tap depth can use the cache), nothing of the classifier.
        assert sorted(handle.keys()) == sorted(k for k in state if k.startswith("features."))
        assert handle.metadata()["sha256"] == sha256_of(path)
        assert handle.metadata()["source"] == "vgg11-full.pth"
    mtime = caches[0].stat().st_mtime_ns

    def forbidden(*args, **kwargs):
        raise AssertionError("torch.load called although the features cache exists")

    monkeypatch.setattr(torch, "load", forbidden)
    second = load_weights(path, arch="vgg11", expected=expected_of(state, 4))
    deeper = load_weights(path, arch="vgg11", expected=expected_of(state, 20))
    assert caches[0].stat().st_mtime_ns == mtime  # not rewritten
    assert second.sha256 == first.sha256 == deeper.sha256
    for key in first.state_dict:
        assert torch.equal(first.state_dict[key], second.state_dict[key])
    for key, value in deeper.state_dict.items():
        assert torch.equal(value, state[key])


def test_changed_file_is_rehashed(tmp_path):
    path = tmp_path / "ckpt.pth"
    old = tv_state_dict("vgg11", depth=1)
    save(old, path)
    assert torch.equal(load_weights(path, arch="vgg11", expected=expected_of(old, 1)).state_dict["features.0.weight"],
                       old["features.0.weight"])  # fmt: skip
    new = {k: v * 2 + 1 for k, v in old.items()}
    save(new, path)
    os.utime(path, ns=(0, 12345))  # a different mtime, as a copy or re-save gives
    loaded = load_weights(path, arch="vgg11", expected=expected_of(new, 1))
    assert loaded.sha256 == sha256_of(path)
    assert torch.equal(loaded.state_dict["features.0.weight"], new["features.0.weight"])


def test_unwritable_cache_warns_and_still_loads(tmp_path):
    featx_home().mkdir(parents=True)
    (featx_home() / "cache").write_text("a file where the cache directory should be")
    state = tv_state_dict("vgg11", depth=1)
    path = save(state, tmp_path / "ckpt.pth", legacy=True)
    with pytest.warns(UserWarning, match="cache .* is not usable") as record:
        loaded = load_weights(path, arch="vgg11", expected=expected_of(state, 1))
    assert len(record) == 1
    assert loaded.sha256 == sha256_of(path)
    assert torch.equal(loaded.state_dict["features.0.bias"], state["features.0.bias"])


def test_clear_cache(tmp_path):
    state = tv_state_dict("vgg11", depth=1)
    load_weights(save(state, tmp_path / "c.pth"), arch="vgg11", expected=expected_of(state, 1))
    assert clear_cache() == 2  # the features file and index.json
    assert list((featx_home() / "cache").iterdir()) == []
