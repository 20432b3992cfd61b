"""The registry: every family's entries against torchvision's own weight enums (URLs, file names,
parameter counts, accuracies, file sizes, default tags, classification heads), the full sha256 and
size of the learned layers against the files the lpips and dists-pytorch packages ship, and name
lookup (featx, arch and torchvision names, enum members, file names, sha256).

References: ``torchvision.models.get_model_weights(arch)`` and the models torchvision builds (on the
meta device: no memory, no weights); hashlib and ``os.stat`` on the installed packages' files.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
from pathlib import Path

import pytest
import torch
import torchvision

from featx.weights import (
    BACKBONE_ARCHS,
    AlexNetWeights,
    ConvNeXtWeights,
    DINOv2Weights,
    KnownCheckpoint,
    MetricWeights,
    ResNetWeights,
    SqueezeNetWeights,
    Verification,
    VGGWeights,
    default_backbone,
    from_torchvision_name,
    known_by_file_name,
    known_by_sha256,
    known_checkpoints,
    member_of,
)

TORCHVISION_FAMILIES = (VGGWeights, AlexNetWeights, ResNetWeights, ConvNeXtWeights, SqueezeNetWeights)
TORCHVISION_MEMBERS = [member for family in TORCHVISION_FAMILIES for member in family]


def reference_of(member: KnownCheckpoint):
    """torchvision's enum member for a featx entry (same arch and tag)."""
    return getattr(torchvision.models.get_model_weights(member.arch), member.tag)


@pytest.mark.parametrize("member", TORCHVISION_MEMBERS, ids=lambda m: m.name)
def test_torchvision_entries_match_torchvision(member):
    reference = reference_of(member)
    assert member.url == reference.url
    assert member.file_name == reference.url.rsplit("/", 1)[1]
    assert member.name == f"{member.arch.upper()}_{member.tag}"
    assert member.meta["num_params"] == reference.meta["num_params"]
    metrics = reference.meta["_metrics"]["ImageNet-1K"]
    assert (member.meta["acc@1"], member.meta["acc@5"]) == (metrics["acc@1"], metrics["acc@5"])
    # torchvision puts the first 8 hex digits of the sha256 in the file name
    prefix = re.fullmatch(r".+-([0-9a-f]{8})\.pth", member.file_name)[1]
    assert member.sha256.startswith(prefix) and len(member.sha256) in (8, 64)
    if member.size is not None:  # torchvision's meta["_file_size"]: MiB, rounded to 3 decimals
        assert round(member.size / 2**20, 3) == reference.meta["_file_size"]


@pytest.mark.parametrize("member", TORCHVISION_MEMBERS, ids=lambda m: m.name)
def test_the_head_is_the_last_module_torchvision_builds(member):
    with torch.device("meta"):
        model = torchvision.models.get_model(member.arch)
    (last, _), keys = list(model.named_children())[-1], list(model.state_dict())
    assert member.head == (f"{last}.",)
    head_keys = [key for key in keys if key.startswith(member.head)]
    assert head_keys and len(head_keys) < len(keys)  # a head, and features besides it


def test_the_prefix_only_entries_are_those_without_a_public_full_hash():
    prefix_only = {m.name for m in known_checkpoints() if m.verification is Verification.PREFIX}
    assert prefix_only == {"VGG11_IMAGENET1K_V1", "VGG13_IMAGENET1K_V1", "VGG13_BN_IMAGENET1K_V1"}
    for member in known_checkpoints():
        assert (member.full_sha256 is None) == (member.verification is Verification.PREFIX)
        assert re.fullmatch(r"[0-9a-f]{8}|[0-9a-f]{64}", member.sha256)
    assert VGGWeights.VGG19_IMAGENET1K_V1.size == 574_673_361  # LibreYOLO/libreyolo docs/provenance/vgg.md
    assert VGGWeights.VGG19_IMAGENET1K_V1.sha256 == "dcbb9e9dad569fff7a846263a77324fc34978fea2bfb039c012d710e1776ae44"


def test_torchvision_defaults_and_enum_members_resolve_to_featx_entries():
    for arch in {m.arch for m in TORCHVISION_MEMBERS}:
        tv = torchvision.models.get_model_weights(arch)
        # torchvision's DEFAULT, as a member and as a string, is the same file as featx's entry
        by_member = known_by_file_name(tv.DEFAULT.url.rsplit("/", 1)[1])
        assert from_torchvision_name(f"torchvision.models.{tv.__name__}.DEFAULT") is by_member
        assert member_of(f"{tv.__name__}.DEFAULT") is by_member
        for tag in tv.__members__:
            if tag == "IMAGENET1K_FEATURES":  # vgg16's features-only file: not known to featx
                continue
            assert from_torchvision_name(f"{tv.__name__}.{tag}").url == getattr(tv, tag).url
    # featx's "DEFAULT" is V1 (torchvision's pretrained=True); torchvision's DEFAULT of ResNet-50 is V2
    assert default_backbone("resnet50") is ResNetWeights.RESNET50_IMAGENET1K_V1
    assert torchvision.models.ResNet50_Weights.DEFAULT.url == ResNetWeights.RESNET50_IMAGENET1K_V2.url
    with pytest.raises(ValueError, match=r"'ViT_B_16_Weights.IMAGENET1K_V1' names torchvision weights featx does not"):
        from_torchvision_name("ViT_B_16_Weights.IMAGENET1K_V1")
    assert from_torchvision_name("resnet50.pth") is None


def test_every_arch_has_a_default_and_a_family():
    families = (*TORCHVISION_FAMILIES, DINOv2Weights)
    assert set(BACKBONE_ARCHS) == {m.arch for family in families for m in family}
    expected = {"alexnet", "resnet18", "resnet34", "resnet50", "resnet101", "convnext_tiny", "convnext_small",
                "convnext_base", "squeezenet1_1", "dinov2_vits14", "dinov2_vitb14"}  # fmt: skip
    assert expected <= set(BACKBONE_ARCHS) and {a for a in BACKBONE_ARCHS if a.startswith("vgg")} == {
        f"vgg{depth}{bn}" for depth in (11, 13, 16, 19) for bn in ("", "_bn")
    }
    for arch in BACKBONE_ARCHS:
        member = default_backbone(arch)
        assert member.arch == arch and member.kind == "backbone" and member_of(arch) is member
        assert type(member).default(arch) is member
    with pytest.raises(ValueError, match=r"unknown arch 'resnet51'\. Did you mean 'resnet50'"):
        default_backbone("resnet51")
    with pytest.raises(ValueError, match="unknown arch 'vgg19'"):
        ResNetWeights.default("vgg19")


def test_dinov2_entries():
    for member, model in ((DINOv2Weights.DINOV2_VITS14_LVD142M, "vits14"), (DINOv2Weights.DINOV2_VITB14_LVD142M, "vitb14")):
        # the URLs of Meta's release (facebookresearch/dinov2 hubconf: _DINOV2_BASE_URL/<arch>/<arch>_pretrain.pth)
        assert member.url == f"https://dl.fbaipublicfiles.com/dinov2/dinov2_{model}/dinov2_{model}_pretrain.pth"
        assert member.file_name == member.url.rsplit("/", 1)[1] and member.head == ()
        assert member.verification is Verification.SHA256 and member.size is not None
        assert "num_params" not in member.meta  # torchvision does not document DINOv2


def package_file(module: str, path: str) -> Path:
    spec = importlib.util.find_spec(module)
    assert spec is not None, f"{module} is in the test extra"
    return Path(spec.submodule_search_locations[0]) / path


@pytest.mark.parametrize("member", list(MetricWeights), ids=lambda m: m.name)
def test_learned_layers_equal_the_files_the_packages_ship(member):
    shipped = package_file(member.shipped.module, member.shipped.path)
    assert hashlib.sha256(shipped.read_bytes()).hexdigest() == member.full_sha256  # reference: hashlib
    assert shipped.stat().st_size == member.size
    assert member.url.endswith(("/" + shipped.name, "/DISTS_pytorch/weights.pt"))
    assert known_by_sha256(member.sha256) is member


def test_lookup_by_names_files_and_hashes():
    assert MetricWeights.ALEXNET_IMAGENET1K_V1 is AlexNetWeights.ALEXNET_IMAGENET1K_V1  # the name of earlier versions
    assert MetricWeights.lpips("squeezenet1_1").arch == "squeezenet1_1"
    assert [m.name for m in MetricWeights] == ["LPIPS_VGG_V0_1", "LPIPS_ALEX_V0_1", "LPIPS_SQUEEZE_V0_1", "DISTS_VGG16"]
    names = [m.name for m in known_checkpoints()]
    assert len(names) == len(set(names)) == 25 and names.index("DISTS_VGG16") == 24
    assert all(isinstance(m, KnownCheckpoint) for m in known_checkpoints())
    assert member_of("RESNET101_IMAGENET1K_V2").file_name == "resnet101-cd907fc2.pth"
    assert known_by_file_name("convnext_base-6075fbad.pth") is ConvNeXtWeights.CONVNEXT_BASE_IMAGENET1K_V1
    assert known_by_sha256(SqueezeNetWeights.SQUEEZENET1_1_IMAGENET1K_V1.sha256.upper()).arch == "squeezenet1_1"
    assert known_by_sha256(VGGWeights.VGG11_IMAGENET1K_V1.sha256) is None  # 8 hex digits identify nothing
    with pytest.raises(ValueError, match=r"unknown checkpoint 'RESNET50_IMAGENET1K_V3'\. Did you mean 'RESNET50_IMAGENET1K_V"):
        member_of("RESNET50_IMAGENET1K_V3")
    with pytest.raises(TypeError, match="expected a registry member .* or its name, got int"):
        member_of(3)


def test_load_weights_resolves_every_spelling_to_its_file():
    from featx.errors import WeightsNotFoundError
    from featx.weights import load_weights

    expected = {"features.0.weight": (1,)}  # never read: no file is on disk
    cases = {
        "DEFAULT": "resnet50-0676ba61.pth",  # featx's default: V1
        "IMAGENET1K_V2": "resnet50-11ad3fa6.pth",  # torchvision's tag, for the model's own arch
        "ResNet50_Weights.DEFAULT": "resnet50-11ad3fa6.pth",  # torchvision's default: V2
        "RESNET50_IMAGENET1K_V1": "resnet50-0676ba61.pth",
        ResNetWeights.RESNET50_IMAGENET1K_V2: "resnet50-11ad3fa6.pth",
        torchvision.models.ResNet50_Weights.IMAGENET1K_V1: "resnet50-0676ba61.pth",
    }
    for spec, file_name in cases.items():
        with pytest.raises(WeightsNotFoundError) as info:
            load_weights(spec, arch="resnet50", expected=expected)
        assert info.value.path == file_name, spec
        assert [entry.name for entry in info.value.missing] == [known_by_file_name(file_name).name]
    with pytest.raises(WeightsNotFoundError, match="dinov2_vitb14_pretrain.pth"):
        load_weights("LVD142M", arch="dinov2_vitb14", expected=expected)
    with pytest.raises(ValueError, match=r"weights RESNET50_IMAGENET1K_V1 are for resnet50, but arch='resnet18'"):
        load_weights("RESNET50_IMAGENET1K_V1", arch="resnet18", expected=expected)
    with pytest.raises(ValueError, match=r"LPIPS_SQUEEZE_V0_1 are lpips layers, not a backbone, but arch='squeezenet1_1'"):
        load_weights(MetricWeights.LPIPS_SQUEEZE_V0_1, arch="squeezenet1_1", expected=expected)
    with pytest.raises(ValueError, match=r"unknown weights 'RESNET50_IMAGENET_V2'.*Did you mean 'RESNET50_IMAGENET1K_V2'"):
        load_weights("RESNET50_IMAGENET_V2", arch="resnet50", expected=expected)
