"""Weights provenance is never wrong: mismatched canonical files, the strict switch, the sha256 index,
planted cache files, file modes under the umask, and checkpoint values and formats.

Checkpoints are tiny fabricated VGG11/VGG19 prefixes (torchvision's ``make_layers``) in temporary
directories; references are hashlib on the file bytes, the saved tensors and ``os.stat``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import stat
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import safetensors.torch
import torch
from torchvision.models.vgg import cfgs, make_layers

from featx.errors import HashMismatchError, UnverifiedWeightsWarning, WeightsLoadError
from featx.weights import Verification, VGGWeights, featx_home, load_weights

CANONICAL = "vgg19-dcbb9e9d.pth"


def tv_state(arch_cfg: str = "E", depth: int = 3, scale: float = 1.0) -> dict[str, torch.Tensor]:
    features = make_layers(cfgs[arch_cfg])[:depth]
    return {f"features.{key}": value * scale for key, value in features.state_dict().items()}


def expected_of(state: dict[str, torch.Tensor]) -> dict[str, torch.Size]:
    return {key: value.shape for key, value in state.items()}


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def canonical_file(state: dict[str, torch.Tensor]) -> Path:
    path = featx_home() / CANONICAL
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path, _use_new_zipfile_serialization=False)
    return path


@pytest.fixture()
def umask() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


# ---------------------------------------------------------------------------------------------
# A canonical name with the wrong sha256
# ---------------------------------------------------------------------------------------------


def test_mismatched_canonical_file_warns_at_every_load():
    state = tv_state()
    path = canonical_file(state)
    categories = []
    for _ in range(3):  # the 2nd and 3rd loads come from the sha256 index and the features cache
        with pytest.warns(UserWarning, match=r"VGG19_IMAGENET1K_V1 checkpoint, but its size is") as record:
            load_weights("DEFAULT", arch="vgg19", expected=expected_of(state))
        categories += [w.category for w in record if "574,673,361" in str(w.message)]
    assert categories == [UnverifiedWeightsWarning] * 3
    index = json.loads((featx_home() / "cache" / "index.json").read_text())
    entry = index["files"][str(path)]
    assert entry["sha256"] == sha256_of(path) and entry["verification"] == "mismatch"  # the index remembers it
    # A new process (another user of the shared FEATX_HOME) finds the hash in the index, and warns.
    code = (
        "import warnings, torch\n"
        "from featx.weights import load_weights\n"
        "warnings.simplefilter('always')\n"
        f"load_weights('DEFAULT', arch='vgg19', expected={ {k: tuple(v) for k, v in expected_of(state).items()} !r})\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=os.environ)
    assert result.returncode == 0, result.stderr
    assert "UnverifiedWeightsWarning" in result.stderr and "not 574,673,361" in result.stderr
    assert json.loads((featx_home() / "cache" / "index.json").read_text())["files"][str(path)] == entry  # no re-hash


def test_mismatched_canonical_file_is_not_recorded_under_the_official_id():
    from featx.backbones.vgg.features import VGGFeatures
    from featx.extract.plan import common_metadata
    from featx.show import show_features

    state = tv_state()
    path = canonical_file(state)
    with pytest.warns(UnverifiedWeightsWarning):
        loaded = load_weights("VGG19_IMAGENET1K_V1", arch="vgg19", expected=expected_of(state))
    assert loaded.weights_id == "unverified:VGG19_IMAGENET1K_V1"
    assert loaded.sha256 == sha256_of(path) and loaded.verified is False
    with pytest.warns(UnverifiedWeightsWarning):
        vgg = VGGFeatures("vgg19", "relu1_1,relu1_2", weights="DEFAULT")
    assert vgg.weights_id == "unverified:VGG19_IMAGENET1K_V1" and vgg.weights_verified is False
    assert vgg.weights_sha256 == sha256_of(path)
    meta = common_metadata(vgg, "none", "float32")
    assert meta["weights_id"] == "unverified:VGG19_IMAGENET1K_V1"
    assert meta["weights_sha256"] == sha256_of(path) and meta["weights_verified"] == "false"
    fig, _ = show_features(torch.rand(3, 8, 8), "relu1_1", extractor=vgg, channels=2)
    title = " ".join(text.get_text() for ax in fig.axes for text in ax.texts)  # the header line
    assert "VGG19_IMAGENET1K_V1" not in title.replace("unverified:VGG19_IMAGENET1K_V1", "")
    assert "unverified" in title and sha256_of(path)[:12] in title
    # The same file loaded by path: its own id, and the failed check is recorded too.
    with pytest.warns(UnverifiedWeightsWarning):
        by_path = load_weights(path, arch="vgg19", expected=expected_of(state))
    assert by_path.weights_id == f"file:{path.resolve()}" and by_path.verified is False


def same_size_entry(monkeypatch, member, path: Path) -> None:
    """Give ``member`` the byte size of the fabricated ``path``, so that only its sha256 decides."""
    monkeypatch.setattr(member, "_value_", dataclasses.replace(member.value, size=path.stat().st_size))


def test_matching_canonical_file_is_verified(monkeypatch):
    import featx.weights.index

    member = VGGWeights.VGG19_IMAGENET1K_V1
    state = tv_state()
    same_size_entry(monkeypatch, member, canonical_file(state))
    # stands in for torchvision's real file (not in the tests): its full sha256, from the registry
    monkeypatch.setattr(featx.weights.index, "sha256_file", lambda path: member.sha256)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnverifiedWeightsWarning)
        loaded = load_weights("DEFAULT", arch="vgg19", expected=expected_of(state))
    assert (loaded.weights_id, loaded.sha256, loaded.verified) == ("VGG19_IMAGENET1K_V1", member.sha256, True)
    assert loaded.verification is Verification.SHA256 and loaded.checkpoint == "VGG19_IMAGENET1K_V1"
    custom = load_weights(state, arch="vgg19", expected=expected_of(state))
    assert custom.verified is None and custom.verification is Verification.UNKNOWN  # nothing to check a dict against


def test_a_forged_file_with_the_right_prefix_is_a_mismatch(monkeypatch, tmp_path):
    # Earlier featx versions compared 8 hex digits (32 bits, forgeable) and called such a file verified.
    import featx.weights.index

    member = VGGWeights.VGG19_IMAGENET1K_V1
    state = tv_state()
    same_size_entry(monkeypatch, member, canonical_file(state))
    forged = member.sha256[:8] + "0" * 56  # the name's 8 hex digits, another file
    monkeypatch.setattr(featx.weights.index, "sha256_file", lambda path: forged)
    with pytest.warns(UnverifiedWeightsWarning, match=r"its sha256 dcbb9e9d00000000\.\.\. differs from dcbb9e9dad569fff"):
        loaded = load_weights("DEFAULT", arch="vgg19", expected=expected_of(state))
    assert (loaded.weights_id, loaded.verified, loaded.verification) == (
        "unverified:VGG19_IMAGENET1K_V1", False, Verification.MISMATCH
    )
    with pytest.raises(HashMismatchError) as info:
        load_weights("DEFAULT", arch="vgg19", expected=expected_of(state), verify="error")
    assert (info.value.expected, info.value.actual) == (member.sha256, forged)


def test_mismatch_can_be_an_error(monkeypatch):
    from featx.backbones.vgg.features import VGGFeatures

    state = tv_state()
    path = canonical_file(state)
    with pytest.raises(HashMismatchError, match=r"vgg19-dcbb9e9d\.pth.*FEATX_REQUIRE_VERIFIED") as info:
        load_weights("DEFAULT", arch="vgg19", expected=expected_of(state), verify="error")
    assert info.value.expected == VGGWeights.VGG19_IMAGENET1K_V1.sha256 and info.value.actual == sha256_of(path)
    with pytest.raises(HashMismatchError):
        VGGFeatures("vgg19", "relu1_1", weights="DEFAULT", verify_weights="error")
    monkeypatch.setenv("FEATX_REQUIRE_VERIFIED", "1")
    for _ in range(2):  # also once the index knows the file
        with pytest.raises(HashMismatchError):
            VGGFeatures("vgg19", "relu1_1", weights="DEFAULT")
    with pytest.warns(UnverifiedWeightsWarning):  # an explicit argument wins over the environment
        load_weights("DEFAULT", arch="vgg19", expected=expected_of(state), verify="warn")
    monkeypatch.setenv("FEATX_REQUIRE_VERIFIED", "maybe")
    with pytest.raises(ValueError, match="FEATX_REQUIRE_VERIFIED"):
        load_weights("DEFAULT", arch="vgg19", expected=expected_of(state))
    with pytest.raises(ValueError, match=r"verify must be one of"):
        load_weights("DEFAULT", arch="vgg19", expected=expected_of(state), verify="strict")


# ---------------------------------------------------------------------------------------------
# The sha256 index and the features cache
# ---------------------------------------------------------------------------------------------


def test_replaced_file_with_same_size_and_mtime_is_rehashed(tmp_path):
    path = tmp_path / "ckpt.pth"
    old, new = tv_state(scale=1.0), tv_state(scale=-3.0)
    torch.save(old, path, _use_new_zipfile_serialization=False)
    first = load_weights(path, arch="vgg19", expected=expected_of(old))
    before = os.stat(path)
    replacement = tmp_path / "new.pth"
    torch.save(new, replacement, _use_new_zipfile_serialization=False)
    assert replacement.stat().st_size == before.st_size
    os.replace(replacement, path)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # same size and mtime as the old file
    loaded = load_weights(path, arch="vgg19", expected=expected_of(new))
    assert loaded.sha256 == sha256_of(path) != first.sha256
    assert torch.equal(loaded.state_dict["features.0.weight"], new["features.0.weight"])
    entry = json.loads((featx_home() / "cache" / "index.json").read_text())["files"][str(path.resolve())]
    after = os.stat(path)
    assert (entry["size"], entry["mtime_ns"], entry["ctime_ns"], entry["inode"]) == (
        after.st_size, after.st_mtime_ns, after.st_ctime_ns, after.st_ino
    )  # fmt: skip


def test_planted_features_cache_is_not_used(tmp_path):
    state = tv_state()
    path = tmp_path / "ckpt.pth"
    torch.save(state, path, _use_new_zipfile_serialization=False)
    load_weights(path, arch="vgg19", expected=expected_of(state))
    (cache,) = (featx_home() / "cache").glob("*-features.safetensors")
    with safetensors.safe_open(str(cache), framework="pt") as handle:
        metadata = handle.metadata()
        planted = {key: torch.zeros_like(handle.get_tensor(key)) for key in handle.keys()}
    # Another writer of the shared FEATX_HOME replaces the cache file, keeping name and metadata.
    fake = cache.with_name("planted.tmp")
    safetensors.torch.save_file(planted, str(fake), metadata=metadata)
    os.replace(fake, cache)
    loaded = load_weights(path, arch="vgg19", expected=expected_of(state))
    for key, value in state.items():
        assert torch.equal(loaded.state_dict[key], value)
    # The cache was rebuilt from the real file and is trusted again.
    with safetensors.safe_open(str(cache), framework="pt") as handle:
        assert torch.equal(handle.get_tensor("features.0.weight"), state["features.0.weight"])


def test_created_files_follow_the_umask(tmp_path, umask):
    from featx.weights.fetch import download

    state = tv_state()
    path = tmp_path / "ckpt.pth"
    torch.save(state, path)
    load_weights(path, arch="vgg19", expected=expected_of(state))
    cache_dir = featx_home() / "cache"
    created = sorted(cache_dir.iterdir())
    assert [p.name.endswith(("index.json", "-features.safetensors")) for p in created] == [True, True]
    source = tmp_path / "src.bin"
    source.write_bytes(b"fabricated checkpoint")
    got = download("vgg11", dest_dir=tmp_path / "dl", progress=False, url=source.as_uri(),
                   sha256=sha256_of(source))  # fmt: skip
    for file in [*created, got]:
        assert stat.S_IMODE(file.stat().st_mode) == 0o644, file
    os.umask(0o002)  # a group-shared FEATX_HOME
    os.utime(path, ns=(0, 1))
    load_weights(path, arch="vgg19", expected=expected_of(state))
    assert stat.S_IMODE((cache_dir / "index.json").stat().st_mode) == 0o664


# ---------------------------------------------------------------------------------------------
# Values and formats
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("problem", ["int", "nan", "inf"])
@pytest.mark.parametrize("source", ["file", "memory"])
def test_non_float_nan_or_inf_tensors_are_refused(tmp_path, problem, source):
    state = tv_state(depth=1)
    bad = dict(state)
    if problem == "int":
        bad["features.0.weight"] = torch.ones(state["features.0.weight"].shape, dtype=torch.int64)
    else:
        bad["features.0.bias"] = state["features.0.bias"].clone()
        bad["features.0.bias"][3] = float(problem)
    weights: object = bad
    if source == "file":
        weights = tmp_path / "bad.pth"
        torch.save(bad, weights)
    message = "not floating point" if problem == "int" else ("NaN" if problem == "nan" else "inf")
    with pytest.raises(WeightsLoadError, match=message) as info:
        load_weights(weights, arch="vgg19", expected=expected_of(state))
    assert ("features.0.weight" if problem == "int" else "features.0.bias") in str(info.value)


def test_text_or_safetensors_file_named_pth_gets_an_accurate_message(tmp_path):
    state = tv_state(depth=1)
    text = tmp_path / "notes.pth"
    text.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n")
    with pytest.raises(WeightsLoadError, match=r"notes\.pth.*is a text file") as info:
        load_weights(text, arch="vgg19", expected=expected_of(state))
    assert "execute code" not in str(info.value)
    assert "Git LFS pointer" in str(info.value)
    renamed = tmp_path / "weights.pth"
    safetensors.torch.save_file(state, str(renamed))
    with pytest.raises(WeightsLoadError, match=r"weights\.pth.*is a safetensors file") as info:
        load_weights(renamed, arch="vgg19", expected=expected_of(state))
    assert "execute code" not in str(info.value) and ".safetensors" in str(info.value)
