"""Verification states: prefix-only checkpoints are never "verified" and are refused when
verification is required, a file is checked by size before its hash, a known file under any name is
recognised by its full sha256, and every place the provenance goes says the same.

Checkpoints are fabricated with torchvision's ``make_layers`` (VGG13 is prefix-only in the registry);
where a test needs a file whose sha256 starts with a registry prefix, the hash is monkeypatched
(32 bits cannot be matched by a real file in a test). References: hashlib and ``os.stat``.
"""

from __future__ import annotations

import hashlib
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from torchvision.models.vgg import cfgs, make_layers

import featx.weights.index
from featx.errors import HashMismatchError, UnverifiableWeightsError, UnverifiedWeightsWarning
from featx.weights import (
    LoadedWeights,
    MetricWeights,
    Verification,
    VGGWeights,
    check_file,
    featx_home,
    load_learned,
    load_weights,
)

VGG13 = VGGWeights.VGG13_IMAGENET1K_V1


def vgg13_file(depth: int = 2) -> tuple[Path, dict[str, torch.Size]]:
    """A fabricated VGG13 prefix at torchvision's file name in featx_home(); returns it and its keys."""
    state = {f"features.{k}": v for k, v in make_layers(cfgs["B"])[:depth].state_dict().items()}
    path = featx_home() / VGG13.file_name
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path, {key: value.shape for key, value in state.items()}


@pytest.fixture()
def prefix_match(monkeypatch):
    """Make every hash start with VGG13's 8 hex digits, as torchvision's real file does."""
    digest = VGG13.sha256 + "ab" * 28
    monkeypatch.setattr(featx.weights.index, "sha256_file", lambda path: digest)
    return digest


def test_states_and_their_yes_no_view():
    assert [(state.value, state.verified) for state in Verification] == [
        ("sha256", True), ("prefix", None), ("mismatch", False), ("unknown", None)
    ]  # fmt: skip
    for state in Verification:
        loaded = LoadedWeights({}, "x", None, None, state)
        assert loaded.verified is state.verified and loaded.verification is state
    assert f"{Verification.PREFIX}" == "prefix" and Verification("mismatch") is Verification.MISMATCH


def test_a_prefix_only_checkpoint_is_refused_when_verification_is_required(monkeypatch, prefix_match):
    from featx.backbones.vgg.features import VGGFeatures

    path, expected = vgg13_file()
    monkeypatch.setenv("FEATX_REQUIRE_VERIFIED", "1")
    with pytest.raises(UnverifiableWeightsError) as info:
        load_weights("DEFAULT", arch="vgg13", expected=expected)
    message = str(info.value)
    for part in ("matches VGG13_IMAGENET1K_V1 only by the 8 hex digits", "19584684", "FEATX_REQUIRE_VERIFIED=1",
                 "featx weights verify PATH --sha256 HEX", "verify_weights='warn'", prefix_match):  # fmt: skip
        assert part in message, part
    assert (info.value.source, info.value.checkpoint, info.value.actual) == (str(path), VGG13.name, prefix_match)
    assert isinstance(info.value, ValueError)
    with pytest.raises(UnverifiableWeightsError):
        VGGFeatures("vgg13", "relu1_1")  # also when the index already knows the file
    with pytest.raises(UnverifiableWeightsError):
        load_weights(path, arch="vgg13", expected=expected, verify="error")  # by path, at the canonical name


def test_a_prefix_only_checkpoint_loads_as_prefix_verified_everywhere(monkeypatch, prefix_match):
    from featx.backbones.vgg.features import VGGFeatures
    from featx.extract.plan import common_metadata

    path, expected = vgg13_file()
    monkeypatch.setenv("FEATX_REQUIRE_VERIFIED", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning: the state is recorded instead
        loaded = load_weights("DEFAULT", arch="vgg13", expected=expected, verify="warn")  # the argument wins
        vgg = VGGFeatures("vgg13", "relu1_1", verify_weights="warn")
    assert loaded.weights_id == "prefix-verified:VGG13_IMAGENET1K_V1" != VGG13.name
    assert (loaded.verification, loaded.verified, loaded.checkpoint) == (Verification.PREFIX, None, VGG13.name)
    assert (vgg.weights_id, vgg.weights_verification, vgg.weights_verified) == (loaded.weights_id, Verification.PREFIX, None)
    meta = common_metadata(vgg, "none", "float32")
    assert meta["weights_verified"] == "prefix" and meta["weights_id"] == "prefix-verified:VGG13_IMAGENET1K_V1"
    by_path = load_weights(path, arch="vgg13", expected=expected, verify="warn")
    assert by_path.weights_id == f"file:{path.resolve()}" and by_path.verification is Verification.PREFIX
    index = featx.weights.index.read_index()[str(path)]
    assert (index["checkpoint"], index["verification"]) == (VGG13.name, "prefix")


def test_a_file_at_a_prefix_only_name_with_another_prefix_is_a_mismatch():
    path, expected = vgg13_file()
    actual = hashlib.sha256(path.read_bytes()).hexdigest()  # reference: hashlib
    assert not actual.startswith(VGG13.sha256)
    with pytest.warns(UnverifiedWeightsWarning, match=rf"its sha256 {actual[:16]}\.\.\. does not start with 19584684"):
        loaded = load_weights("DEFAULT", arch="vgg13", expected=expected)
    assert loaded.weights_id == "unverified:VGG13_IMAGENET1K_V1" and loaded.verified is False
    with pytest.raises(HashMismatchError, match="does not start with 19584684"):
        load_weights("DEFAULT", arch="vgg13", expected=expected, verify="error")


def test_the_size_is_compared_before_the_hash(monkeypatch):
    vgg16 = VGGWeights.VGG16_IMAGENET1K_V1
    state = {f"features.{k}": v for k, v in make_layers(cfgs["D"])[:1].state_dict().items()}
    path = featx_home() / vgg16.file_name
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    # even a file whose sha256 were torchvision's is not the file when its size differs
    monkeypatch.setattr(featx.weights.index, "sha256_file", lambda path: vgg16.sha256)
    with pytest.raises(HashMismatchError, match=rf"its size is {path.stat().st_size:,} bytes, not 553,433,881"):
        load_weights("DEFAULT", arch="vgg16", expected={k: v.shape for k, v in state.items()}, verify="error")


def lpips_package_file(net: str) -> Path:
    import lpips

    return Path(lpips.__file__).parent / "weights" / "v0.1" / f"{net}.pth"


def test_a_known_file_under_another_name_is_recognised_by_content(tmp_path):
    copy = tmp_path / "my_layers.pth"
    shutil.copyfile(lpips_package_file("alex"), copy)
    expected = {f"lin{k}.model.1.weight": (1, c, 1, 1) for k, c in enumerate((64, 192, 384, 256, 256))}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = load_learned(copy, default=MetricWeights.LPIPS_ALEX_V0_1, expected=expected)
    assert loaded.weights_id == f"file:{copy.resolve()}"  # loaded by path: its own id
    assert (loaded.verification, loaded.verified, loaded.checkpoint) == (Verification.SHA256, True, "LPIPS_ALEX_V0_1")
    result = check_file(copy)
    assert (result.verification, result.checkpoint, result.size) == (Verification.SHA256, MetricWeights.LPIPS_ALEX_V0_1, 6009)
    assert result.sha256 == hashlib.sha256(copy.read_bytes()).hexdigest()


def test_check_file_with_the_index_reads_a_file_once(tmp_path, monkeypatch):
    path = tmp_path / "f.pth"
    path.write_bytes(b"abc")
    calls = []
    real = featx.weights.index.sha256_file
    monkeypatch.setattr(featx.weights.index, "sha256_file", lambda p: calls.append(p) or real(p))
    first, second = check_file(path, use_index=True), check_file(path, use_index=True)
    assert first.sha256 == second.sha256 == hashlib.sha256(b"abc").hexdigest() and len(calls) == 1
    assert first.verification is Verification.UNKNOWN and first.checkpoint is None
    with pytest.raises(ValueError, match="a sha256 must be 8 to 64 hex digits, got 'abc'"):
        check_file(path, sha256="abc")
