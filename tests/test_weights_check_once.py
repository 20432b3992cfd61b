"""The NaN/inf check of checkpoint values runs once per verified file and is remembered in the index
(keyed on the file's full sha256 and size, and on the features cache file's); files that are not
verified are checked at every load, and an index edited by hand or a file replaced under the same
name never skips it.

Checkpoints are fabricated VGG19 prefixes (torchvision's ``make_layers``, random weights) in the real
formats (``torch.save`` of a state dict, safetensors). A file is made "verified" by pointing the
registry entry ``VGG19_IMAGENET1K_V1`` at its real size and full sha256 (reference: hashlib), as
the real 548 MB file would match it. Checks are counted by wrapping ``check_values`` where featx
calls it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import warnings
from pathlib import Path

import pytest
import safetensors.torch
import torch
from torchvision.models.vgg import cfgs, make_layers

import featx.weights.cache
import featx.weights.loading
import featx.weights.matching
from featx.errors import UnverifiedWeightsWarning, WeightsLoadError
from featx.weights import Verification, VGGWeights, featx_home, load_weights
from featx.weights.index import read_index, values_checked

MEMBER = VGGWeights.VGG19_IMAGENET1K_V1


def tv_state(depth: int = 6) -> dict[str, torch.Tensor]:
    return {f"features.{key}": value for key, value in make_layers(cfgs["E"])[:depth].state_dict().items()}


EXPECTED = {key: value.shape for key, value in tv_state(3).items()}  # features.0 and features.2


def save(state: dict[str, torch.Tensor], path: Path) -> Path:
    if path.suffix == ".safetensors":
        safetensors.torch.save_file(state, str(path))
    else:
        torch.save(state, path, _use_new_zipfile_serialization=False)
    return path


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_verified(monkeypatch, path: Path) -> None:
    """Point the registry's VGG19 entry at this file's size and full sha256."""
    info = dataclasses.replace(MEMBER.value, size=path.stat().st_size, sha256=sha256_of(path))
    monkeypatch.setattr(MEMBER, "_value_", info)


@pytest.fixture()
def checks(monkeypatch) -> list[str]:
    """The keys of every tensor whose values featx checks, in order."""
    seen: list[str] = []
    real = featx.weights.matching.check_values

    def counting(selected, where):
        seen.extend(selected)
        return real(selected, where)

    for module in (featx.weights.matching, featx.weights.loading, featx.weights.cache):
        monkeypatch.setattr(module, "check_values", counting)
    return seen


def load(path: Path):
    return load_weights(path, arch="vgg19", expected=EXPECTED)


def drop_features_cache() -> None:
    for cache in (featx_home() / "cache").glob("*-features.safetensors"):
        cache.unlink()


def index_document() -> dict:
    return json.loads((featx_home() / "cache" / "index.json").read_text())


def write_index(document: dict) -> None:
    (featx_home() / "cache" / "index.json").write_text(json.dumps(document))


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
@pytest.mark.parametrize("verified", [True, False])
def test_a_checkpoint_with_a_nan_is_refused(tmp_path, monkeypatch, suffix, verified):
    state = tv_state()
    state["features.2.bias"][5] = float("nan")
    path = save(state, tmp_path / f"nan{suffix}")
    if verified:
        make_verified(monkeypatch, path)
    for _ in range(2):  # refused again: nothing about this file is remembered as checked
        with pytest.raises(WeightsLoadError, match=r"features\.2\.bias holds non-finite values \(1 NaN of 64\)"):
            load(path)
    assert not values_checked(sha256_of(path), path.stat().st_size, "features")


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_a_verified_file_is_checked_on_its_first_load_only(tmp_path, monkeypatch, checks, suffix):
    state = tv_state()
    path = save(state, tmp_path / f"weights{suffix}")
    make_verified(monkeypatch, path)
    first = load(path)
    assert first.verification is Verification.SHA256 and first.checkpoint == MEMBER.name
    # First load: the kept tensors, and every backbone tensor once (features.5 too, for deeper taps later).
    assert set(checks) >= set(state) and "features.5.weight" in checks
    assert values_checked(sha256_of(path), path.stat().st_size, "features")
    checks.clear()
    drop_features_cache()  # the .pth file itself is read again: its record skips the check
    second = load(path)
    assert checks == []
    for key, value in second.state_dict.items():
        assert torch.equal(value, state[key])
    if suffix == ".pth":  # the features cache written by the second load is used without a check too
        assert list((featx_home() / "cache").glob("*-features.safetensors"))
        load(path)
        assert checks == []


def test_an_unverified_file_is_checked_at_every_load(tmp_path, checks):
    path = save(tv_state(), tmp_path / "mine.safetensors")
    for _ in range(3):
        checks.clear()
        assert load(path).verification is Verification.UNKNOWN
        assert set(checks) == set(EXPECTED)
    assert not values_checked(sha256_of(path), path.stat().st_size, "features")


def test_an_unverified_pth_file_is_checked_whenever_it_is_read(tmp_path, checks):
    path = save(tv_state(), tmp_path / "mine.pth")
    for _ in range(2):
        checks.clear()
        drop_features_cache()
        load(path)
        assert set(checks) >= set(EXPECTED)
    assert not values_checked(sha256_of(path), path.stat().st_size, "features")


def test_a_mismatching_file_at_the_canonical_name_is_checked_at_every_load(monkeypatch, checks):
    featx_home().mkdir(parents=True, exist_ok=True)
    path = save(tv_state(), featx_home() / MEMBER.file_name)
    monkeypatch.setattr(MEMBER, "_value_", dataclasses.replace(MEMBER.value, size=path.stat().st_size))
    for _ in range(2):
        checks.clear()
        drop_features_cache()
        with pytest.warns(UnverifiedWeightsWarning):
            assert load_weights("DEFAULT", arch="vgg19", expected=EXPECTED).verification is Verification.MISMATCH
        assert set(checks) >= set(EXPECTED)


@pytest.mark.parametrize(
    "tamper",
    ["size", "sha256", "scopes", "scope name", "missing", "file entry"],
)
def test_an_edited_index_record_does_not_skip_the_check(tmp_path, monkeypatch, checks, tamper):
    path = save(tv_state(), tmp_path / "weights.safetensors")
    make_verified(monkeypatch, path)
    load(path)
    document = index_document()
    sha256, size = sha256_of(path), path.stat().st_size
    key = f"{sha256}-{size}"
    record = document["checked"][key]
    assert record == {"sha256": sha256, "size": size, "scopes": ["features"]}
    if tamper == "size":
        record["size"] = size + 1
    elif tamper == "sha256":
        record["sha256"] = "0" * 64
    elif tamper == "scopes":
        record["scopes"] = "features"
    elif tamper == "scope name":
        record["scopes"] = ["fc"]
    elif tamper == "missing":
        del document["checked"]
    else:  # the path's entry names another sha256: that content is not the verified one
        document["files"][str(path)]["sha256"] = "1" * 64
    write_index(document)
    checks.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnverifiedWeightsWarning)  # "file entry": the file no longer matches
        load(path)
    assert set(checks) >= set(EXPECTED)


def test_a_changed_file_with_the_same_name_is_checked(tmp_path, monkeypatch, checks):
    path = save(tv_state(), tmp_path / "weights.safetensors")
    make_verified(monkeypatch, path)
    load(path)
    bad = tv_state()
    bad["features.0.weight"][0, 0, 0, 0] = float("inf")
    save(bad, path)  # same name, same size, another content
    make_verified(monkeypatch, path)  # even if the registry vouched for the new content
    checks.clear()
    with pytest.raises(WeightsLoadError, match=r"features\.0\.weight holds non-finite values \(1 inf"):
        load(path)


def test_an_edited_features_cache_record_does_not_skip_the_check(tmp_path, checks):
    path = save(tv_state(), tmp_path / "mine.pth")
    load(path)
    (cache,) = (featx_home() / "cache").glob("*-features.safetensors")
    entry = read_index()[str(cache)]
    assert entry["kind"] == "features-cache" and values_checked(entry["sha256"], cache.stat().st_size, "features")
    checks.clear()
    load(path)
    assert checks == []  # the cache featx wrote and checked
    document = index_document()
    document["checked"][f"{entry['sha256']}-{cache.stat().st_size}"]["size"] = 1
    write_index(document)
    load(path)
    assert set(checks) == set(EXPECTED)  # the cache is still used, its kept values checked


def test_the_index_is_not_read_through_a_symlink(tmp_path, monkeypatch):
    path = save(tv_state(), tmp_path / "weights.safetensors")
    make_verified(monkeypatch, path)
    load(path)
    elsewhere = tmp_path / "index.json"
    os.replace(featx_home() / "cache" / "index.json", elsewhere)
    (featx_home() / "cache" / "index.json").symlink_to(elsewhere)
    assert read_index() == {}
    assert not values_checked(sha256_of(path), path.stat().st_size, "features")
    load(path)  # the index is written again, as a regular file (the symlink itself is replaced)
    assert not (featx_home() / "cache" / "index.json").is_symlink()
    assert json.loads(elsewhere.read_text())["files"]  # the symlink's target is untouched
