"""LPIPS's and DISTS's learned layers are verified by their full sha256, never by a prefix.

Earlier featx versions compared the 8 hex digits of a file name (32 bits, forgeable). Here a file
at the checkpoint's name, and the copy the installed ``lpips`` / ``DISTS_pytorch`` package ships,
are given a sha256 that shares the registered digest's first 8 hex digits and differs after them
(the hash function is monkeypatched: forging a real 32-bit collision costs 2^32 hashes): the metric
must not call them verified, and ``verify_weights="error"`` must refuse them. The control is the
real file, whose sha256 is the registered one (the registry's digests come from the packages'
wheels; tests/test_lpips.py and tests/test_dists.py hash the installed copies).

The backbones are random (torchvision's ``alexnet``/``vgg16`` with ``weights=None``): only the
learned layers' provenance is under test.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import DISTS_pytorch
import lpips
import pytest
import torch
import torchvision

import featx.weights.learned
import featx.weights.locations
from featx.errors import HashMismatchError, RandomWeightsWarning, UnverifiedWeightsWarning, WeightsNotFoundError
from featx.metrics.dists import DISTS
from featx.metrics.lpips import LPIPS
from featx.weights import MetricWeights

SHIPPED = {
    "lpips": Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth",
    "dists": Path(DISTS_pytorch.__file__).parent / "weights.pt",
}
MEMBERS = {"lpips": MetricWeights.LPIPS_ALEX_V0_1, "dists": MetricWeights.DISTS_VGG16}
LEARNED = {"lpips": "lin_weights", "dists": "dists_weights"}


@pytest.fixture(scope="module")
def backbones():
    torch.manual_seed(0)
    return {
        "lpips": torchvision.models.alexnet(weights=None).state_dict(),
        "dists": torchvision.models.vgg16(weights=None).state_dict(),
    }


def build(metric: str, backbones, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        if metric == "lpips":
            return LPIPS("alex", weights=backbones["lpips"], **options)
        return DISTS(weights=backbones["dists"], **options)


def forged(member: MetricWeights) -> str:
    """Another digest with the registered one's first 8 hex digits."""
    full = member.value.sha256
    assert len(full) == 64  # the registry holds the full digest of these files
    return full[:8] + "".join("0" if c != "0" else "1" for c in full[8:])


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("FEATX_HOME", str(tmp_path / "fx"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    (tmp_path / "fx").mkdir()
    return tmp_path / "fx"


@pytest.mark.parametrize("metric", ["lpips", "dists"])
def test_a_file_at_the_name_that_matches_8_hex_digits_only_is_not_verified(metric, backbones, home, monkeypatch):
    member, learned = MEMBERS[metric], LEARNED[metric]
    shutil.copy(SHIPPED[metric], home / member.file_name)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnverifiedWeightsWarning)  # the real file: verified, no warning
        real = build(metric, backbones)
    assert getattr(real, f"{learned}_id") == member.name and getattr(real, f"{learned}_verified") is True
    monkeypatch.setattr(featx.weights.learned, "sha256_file", lambda path: forged(member))
    with pytest.warns(UnverifiedWeightsWarning, match=member.name):
        metric_module = build(metric, backbones)
    assert getattr(metric_module, f"{learned}_id") == f"unverified:{member.name}"
    assert getattr(metric_module, f"{learned}_verified") is False
    assert getattr(metric_module, f"{learned}_sha256") == forged(member)
    with pytest.raises(HashMismatchError) as info:
        build(metric, backbones, verify_weights="error")
    assert (info.value.expected, info.value.actual) == (member.value.sha256, forged(member))


@pytest.mark.parametrize("metric", ["lpips", "dists"])
def test_the_packages_copy_is_used_only_on_a_full_sha256_match(metric, backbones, home, monkeypatch, package_weights):
    member, learned = MEMBERS[metric], LEARNED[metric]
    found = build(metric, backbones)  # nothing in FEATX_HOME or TORCH_HOME: the package's copy
    assert getattr(found, f"{learned}_id") == member.name and getattr(found, f"{learned}_verified") is True
    monkeypatch.setattr(featx.weights.locations, "sha256_file", lambda path: forged(member))
    with pytest.raises(WeightsNotFoundError, match=f"featx weights download {member.name}"):
        build(metric, backbones)
