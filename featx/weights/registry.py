"""The checkpoints featx knows, one enum per family as torchvision has them (:class:`VGGWeights`,
:class:`AlexNetWeights`, :class:`ResNetWeights`, :class:`ConvNeXtWeights`, :class:`SqueezeNetWeights`,
:class:`DINOv2Weights`) plus the metrics' learned layers (:class:`MetricWeights`), and every way of
naming one: member names, arch names, torchvision's weights names, file names and sha256.

The data (URLs, sizes, sha256 and their sources) lives in ``catalog_torchvision``,
``catalog_dinov2`` and ``catalog_metrics``.
"""

from __future__ import annotations

import enum
import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Optional, TypeVar, Union

if TYPE_CHECKING:
    import torch

from featx._checks import check_choice, closest
from featx.errors import FeatxTypeError, FeatxValueError
from featx.weights.catalog_dinov2 import DINOV2
from featx.weights.catalog_metrics import DISTS, LPIPS
from featx.weights.catalog_torchvision import ALEXNET, CONVNEXT, RESNET, SQUEEZENET, VGG
from featx.weights.info import CheckpointInfo, ShippedCopy, Verification

__all__ = [
    "BACKBONE_ARCHS",
    "KINDS",
    "AlexNetWeights",
    "ConvNeXtWeights",
    "DINOv2Weights",
    "KnownCheckpoint",
    "MetricWeights",
    "MetricWeightsInfo",
    "ResNetWeights",
    "SqueezeNetWeights",
    "VGGWeights",
    "WeightsSpec",
    "default_backbone",
    "from_torchvision_name",
    "known_by_file_name",
    "known_by_sha256",
    "known_checkpoints",
    "member_named",
    "member_of",
]

_Member = TypeVar("_Member", bound="KnownCheckpoint")
_TORCHVISION_URL = "https://download.pytorch.org/models/"
_TORCHVISION_NAME = re.compile(r"(?:torchvision\.models\.)?([A-Za-z0-9_]+?)_Weights\.([A-Za-z0-9_]+)")
# torchvision's DEFAULT where it is not IMAGENET1K_V1 (checked against torchvision by the tests)
_TORCHVISION_DEFAULT_TAG = {"resnet50": "IMAGENET1K_V2", "resnet101": "IMAGENET1K_V2"}

KINDS: tuple[str, ...] = ("backbone", "lpips", "dists")
"""What a known checkpoint holds: a ``"backbone"`` (an ImageNet or self-supervised network), the
learned linear layers of LPIPS (``"lpips"``, keys ``lin{k}.model.1.weight``) or the learned
alpha/beta of DISTS (``"dists"``, keys ``alpha`` and ``beta``)."""


class KnownCheckpoint(enum.Enum):
    """The base of the registry's enums: what every known checkpoint tells.

    ``isinstance(x, KnownCheckpoint)`` holds for a member of any of them.
    """

    _value_: CheckpointInfo

    @property
    def arch(self) -> str:
        """The architecture the checkpoint belongs to (for learned layers: their backbone's)."""
        return self.value.arch

    @property
    def kind(self) -> str:
        """What the file holds (:data:`KINDS`)."""
        return self.value.kind

    @property
    def file_name(self) -> str:
        """The file name featx looks for (torchvision's own for its checkpoints)."""
        return self.value.file_name

    @property
    def url(self) -> str:
        """Where the file is published (only ``featx weights download`` opens it)."""
        return self.value.url

    @property
    def sha256(self) -> str:
        """The file's sha256 as far as it is known: 64 hex digits, or torchvision's 8 for a
        prefix-only entry (see :attr:`verification`)."""
        return self.value.sha256

    @property
    def sha256_prefix(self) -> str:
        """Same as :attr:`sha256` (the name of earlier featx versions, when VGG entries held only
        the 8 hex digits of their file names)."""
        return self.value.sha256

    @property
    def full_sha256(self) -> Optional[str]:
        """The full sha256, ``None`` for a prefix-only entry."""
        return self.value.full_sha256

    @property
    def size(self) -> Optional[int]:
        """The file's size in bytes, ``None`` where no public source gives it."""
        return self.value.size

    @property
    def verification(self) -> Verification:
        """What a matching file reaches: ``Verification.SHA256``, or ``Verification.PREFIX`` for an
        entry whose full sha256 no public source gives ("prefix-verified")."""
        return self.value.verification

    @property
    def head(self) -> tuple[str, ...]:
        """State-dict key prefixes of the classification head (``("fc.",)``), never loaded by an
        extractor and left out of the features-only cache; ``()`` for DINOv2 and learned layers."""
        return self.value.head

    @property
    def tag(self) -> str:
        """The checkpoint's tag within its arch (``"IMAGENET1K_V2"``, ``"LVD142M"``)."""
        return self.value.tag

    @property
    def shipped(self) -> Optional[ShippedCopy]:
        """The Python package that ships an identical copy of the file, if any."""
        return self.value.shipped

    @property
    def meta(self) -> dict[str, Any]:
        """Metadata: ``source``, and where known ``num_params``, ``acc@1``, ``acc@5`` (ImageNet-1K,
        as torchvision documents them) and ``transforms``."""
        info = self.value
        facts = {"num_params": info.num_params, "acc@1": info.acc1, "acc@5": info.acc5, "transforms": info.transforms}
        return {"source": info.source, **{key: value for key, value in facts.items() if value}}

    @classmethod
    def default(cls: type[_Member], arch: str) -> _Member:
        """The member ``weights="DEFAULT"`` means for ``arch`` (the first of the family for it).

        Raises:
            ValueError: ``arch`` has no checkpoint in this enum.
        """
        archs = tuple(dict.fromkeys(member.arch for member in cls))
        check_choice("arch", arch, archs)
        return next(member for member in cls if member.arch == arch)

    @classmethod
    def from_file_name(cls: type[_Member], file_name: str) -> Optional[_Member]:
        """The member with this file name, or ``None``.

        Example:
            >>> VGGWeights.from_file_name("vgg16-397923af.pth").name
            'VGG16_IMAGENET1K_V1'
        """
        return next((member for member in cls if member.file_name == file_name), None)

    @classmethod
    def from_torchvision_name(cls: type[_Member], text: str) -> Optional[_Member]:
        """The member a torchvision weights name such as ``"VGG19_Weights.IMAGENET1K_V1"`` means.

        ``.DEFAULT`` means torchvision's default (``ResNet50_Weights.DEFAULT`` is ``IMAGENET1K_V2``);
        a ``torchvision.models.`` prefix is accepted.

        Returns:
            The member; ``None`` when ``text`` is not a torchvision weights name, or names a
            checkpoint of another family.

        Raises:
            ValueError: a torchvision name for weights featx does not know.

        Example:
            >>> VGGWeights.from_torchvision_name("VGG19_Weights.IMAGENET1K_V1").name
            'VGG19_IMAGENET1K_V1'
            >>> ResNetWeights.from_torchvision_name("torchvision.models.ResNet50_Weights.DEFAULT").name
            'RESNET50_IMAGENET1K_V2'
            >>> VGGWeights.from_torchvision_name("vgg19.pth") is None
            True
        """
        member = from_torchvision_name(text)
        return member if isinstance(member, cls) else None


class VGGWeights(KnownCheckpoint):
    """torchvision's ImageNet VGG checkpoints (names as in torchvision, prefixed by the arch).

    Example:
        >>> w = VGGWeights.VGG19_IMAGENET1K_V1
        >>> w.arch, w.file_name, w.size, w.sha256[:16], w.verification
        ('vgg19', 'vgg19-dcbb9e9d.pth', 574673361, 'dcbb9e9dad569fff', <Verification.SHA256: 'sha256'>)
        >>> w.url
        'https://download.pytorch.org/models/vgg19-dcbb9e9d.pth'
        >>> VGGWeights.default("vgg16_bn").name, VGGWeights.VGG13_IMAGENET1K_V1.verification
        ('VGG16_BN_IMAGENET1K_V1', <Verification.PREFIX: 'prefix'>)
    """

    VGG11_IMAGENET1K_V1 = VGG["vgg11"]
    VGG11_BN_IMAGENET1K_V1 = VGG["vgg11_bn"]
    VGG13_IMAGENET1K_V1 = VGG["vgg13"]
    VGG13_BN_IMAGENET1K_V1 = VGG["vgg13_bn"]
    VGG16_IMAGENET1K_V1 = VGG["vgg16"]
    VGG16_BN_IMAGENET1K_V1 = VGG["vgg16_bn"]
    VGG19_IMAGENET1K_V1 = VGG["vgg19"]
    VGG19_BN_IMAGENET1K_V1 = VGG["vgg19_bn"]


class AlexNetWeights(KnownCheckpoint):
    """torchvision's ImageNet AlexNet checkpoint (LPIPS's default backbone)."""

    ALEXNET_IMAGENET1K_V1 = ALEXNET["alexnet"]


class ResNetWeights(KnownCheckpoint):
    """torchvision's ImageNet ResNet checkpoints: V1 of ResNet-18/34/50/101 (``weights="DEFAULT"``,
    torchvision's ``pretrained=True``) and the V2 retraining of ResNet-50 and -101.

    Example:
        >>> ResNetWeights.default("resnet50").name, ResNetWeights.RESNET50_IMAGENET1K_V2.meta["acc@1"]
        ('RESNET50_IMAGENET1K_V1', 80.858)
        >>> ResNetWeights.RESNET18_IMAGENET1K_V1.head
        ('fc.',)
    """

    RESNET18_IMAGENET1K_V1 = RESNET["resnet18"]
    RESNET34_IMAGENET1K_V1 = RESNET["resnet34"]
    RESNET50_IMAGENET1K_V1 = RESNET["resnet50"]
    RESNET50_IMAGENET1K_V2 = RESNET["resnet50_v2"]
    RESNET101_IMAGENET1K_V1 = RESNET["resnet101"]
    RESNET101_IMAGENET1K_V2 = RESNET["resnet101_v2"]


class ConvNeXtWeights(KnownCheckpoint):
    """torchvision's ImageNet ConvNeXt-T/S/B checkpoints."""

    CONVNEXT_TINY_IMAGENET1K_V1 = CONVNEXT["convnext_tiny"]
    CONVNEXT_SMALL_IMAGENET1K_V1 = CONVNEXT["convnext_small"]
    CONVNEXT_BASE_IMAGENET1K_V1 = CONVNEXT["convnext_base"]


class SqueezeNetWeights(KnownCheckpoint):
    """torchvision's ImageNet SqueezeNet 1.1 checkpoint (LPIPS's ``"squeeze"`` backbone)."""

    SQUEEZENET1_1_IMAGENET1K_V1 = SQUEEZENET["squeezenet1_1"]


class DINOv2Weights(KnownCheckpoint):
    """Meta's DINOv2 backbones (the ``.pth`` files ``torch.hub`` loads; no classification head).

    Example:
        >>> DINOv2Weights.default("dinov2_vits14").file_name
        'dinov2_vits14_pretrain.pth'
    """

    DINOV2_VITS14_LVD142M = DINOV2["dinov2_vits14"]
    DINOV2_VITB14_LVD142M = DINOV2["dinov2_vitb14"]


class MetricWeights(KnownCheckpoint):
    """The learned layers of the calibrated metrics: LPIPS v0.1's linear layers and DISTS's alpha/beta.

    ``featx weights list`` shows them, ``featx weights download NAME`` fetches them (full sha256
    checked), and construction finds them in :func:`~featx.weights.search_dirs` or inside the
    installed ``lpips`` / ``dists-pytorch`` package (by sha256). Their backbones are members of the
    family enums (``AlexNetWeights.ALEXNET_IMAGENET1K_V1``, ``VGGWeights.VGG16_IMAGENET1K_V1``, ...);
    ``MetricWeights.ALEXNET_IMAGENET1K_V1`` still names AlexNet's, as in earlier featx versions.

    Example:
        >>> w = MetricWeights.LPIPS_VGG_V0_1
        >>> w.kind, w.arch, w.file_name, w.sha256[:8], w.size
        ('lpips', 'vgg16', 'lpips_vgg_v0.1.pth', 'a78928a0', 7289)
        >>> MetricWeights.lpips("squeezenet1_1").name
        'LPIPS_SQUEEZE_V0_1'
    """

    LPIPS_VGG_V0_1 = LPIPS["vgg16"]
    LPIPS_ALEX_V0_1 = LPIPS["alexnet"]
    LPIPS_SQUEEZE_V0_1 = LPIPS["squeezenet1_1"]
    DISTS_VGG16 = DISTS

    @classmethod
    def lpips(cls, arch: str) -> MetricWeights:
        """The LPIPS v0.1 linear layers for backbone ``arch`` (``"alexnet"``, ``"vgg16"``, ``"squeezenet1_1"``).

        Raises:
            ValueError: no LPIPS weights for ``arch``.
        """
        archs = tuple(member.arch for member in cls if member.kind == "lpips")
        check_choice("LPIPS backbone", arch, archs)
        return next(member for member in cls if member.kind == "lpips" and member.arch == arch)


# Earlier featx versions kept AlexNet's ImageNet checkpoint among the metrics' files: the same member.
setattr(MetricWeights, "ALEXNET_IMAGENET1K_V1", AlexNetWeights.ALEXNET_IMAGENET1K_V1)  # noqa: B010

MetricWeightsInfo = CheckpointInfo
"""The record of a :class:`MetricWeights` member (one :class:`CheckpointInfo` type for every entry)."""

_FAMILIES: tuple[type[KnownCheckpoint], ...] = (
    VGGWeights,
    AlexNetWeights,
    ResNetWeights,
    ConvNeXtWeights,
    SqueezeNetWeights,
    DINOv2Weights,
    MetricWeights,
)
_BY_NAME: dict[str, KnownCheckpoint] = {member.name: member for family in _FAMILIES for member in family}

BACKBONE_ARCHS: tuple[str, ...] = tuple(dict.fromkeys(member.arch for member in _BY_NAME.values() if member.kind == "backbone"))
"""Every backbone architecture with a known checkpoint: the VGG family, AlexNet, ResNet-18/34/50/101,
ConvNeXt-T/S/B, SqueezeNet 1.1 and DINOv2 ViT-S/14 and ViT-B/14."""

WeightsSpec = Union[str, KnownCheckpoint, enum.Enum, "os.PathLike[str]", Mapping[str, "torch.Tensor"], None]
"""What every ``weights=`` argument accepts: ``"DEFAULT"``, a registry member or its name, a
torchvision weights member or name (``"ResNet50_Weights.IMAGENET1K_V2"``), a path to a
``.pth``/``.pt``/``.safetensors`` file, an in-memory state dict, or ``None`` (random weights)."""


def known_checkpoints() -> tuple[KnownCheckpoint, ...]:
    """Every checkpoint featx knows, backbones first (the order of ``featx weights list``).

    Example:
        >>> [member.name for member in known_checkpoints()][-4:]
        ['LPIPS_VGG_V0_1', 'LPIPS_ALEX_V0_1', 'LPIPS_SQUEEZE_V0_1', 'DISTS_VGG16']
    """
    return tuple(_BY_NAME.values())


def known_by_file_name(file_name: str) -> Optional[KnownCheckpoint]:
    """The known checkpoint with this file name, or ``None``.

    Example:
        >>> known_by_file_name("lpips_alex_v0.1.pth").name
        'LPIPS_ALEX_V0_1'
    """
    return next((member for member in _BY_NAME.values() if member.file_name == file_name), None)


def known_by_sha256(sha256: str) -> Optional[KnownCheckpoint]:
    """The known checkpoint whose full sha256 is ``sha256``, or ``None`` (prefix-only entries never
    match: 8 hex digits do not identify a file).

    Example:
        >>> known_by_sha256("df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0").name
        'LPIPS_ALEX_V0_1'
    """
    sha256 = sha256.strip().lower()
    return next((member for member in _BY_NAME.values() if member.full_sha256 == sha256), None)


def from_torchvision_name(text: str) -> Optional[KnownCheckpoint]:
    """The checkpoint a torchvision weights name means, of any family.

    Returns:
        The member, or ``None`` when ``text`` does not look like ``<Model>_Weights.<TAG>``.

    Raises:
        ValueError: a torchvision name for weights featx does not know.

    Example:
        >>> from_torchvision_name("ConvNeXt_Tiny_Weights.IMAGENET1K_V1").name
        'CONVNEXT_TINY_IMAGENET1K_V1'
        >>> from_torchvision_name("SqueezeNet1_1_Weights.DEFAULT").name
        'SQUEEZENET1_1_IMAGENET1K_V1'
    """
    match = _TORCHVISION_NAME.fullmatch(text.strip())
    if match is None:
        return None
    arch, tag = match[1].lower(), match[2]
    if tag == "DEFAULT":
        tag = _TORCHVISION_DEFAULT_TAG.get(arch, "IMAGENET1K_V1")
    member = _BY_NAME.get(f"{arch.upper()}_{tag}")
    if member is None or member.kind != "backbone":
        known = ", ".join(_torchvision_spelling(m) for m in _BY_NAME.values() if m.url.startswith(_TORCHVISION_URL))
        raise FeatxValueError(
            f"{text!r} names torchvision weights featx does not know; known: {known} (or <Model>_Weights.DEFAULT). "
            "Pass weights=PATH to its file instead"
        )
    return member


def _torchvision_spelling(member: KnownCheckpoint) -> str:
    """torchvision's name of a member: ``VGG19_BN_Weights.IMAGENET1K_V1``, ``ResNet50_Weights.IMAGENET1K_V2``."""
    words = {"alexnet": "AlexNet", "resnet": "ResNet", "convnext": "ConvNeXt", "squeezenet": "SqueezeNet"}
    model = member.arch.upper()
    for lower, spelled in words.items():
        if member.arch.startswith(lower):
            model = spelled + member.arch[len(lower) :].title()
    return f"{model}_Weights.{member.tag}"


def default_backbone(arch: str) -> KnownCheckpoint:
    """The checkpoint ``weights="DEFAULT"`` means for a backbone of :data:`BACKBONE_ARCHS`.

    Raises:
        ValueError: unknown ``arch``.

    Example:
        >>> default_backbone("alexnet").name, default_backbone("vgg16").name, default_backbone("resnet101").name
        ('ALEXNET_IMAGENET1K_V1', 'VGG16_IMAGENET1K_V1', 'RESNET101_IMAGENET1K_V1')
    """
    check_choice("arch", arch, BACKBONE_ARCHS)
    return next(member for member in _BY_NAME.values() if member.kind == "backbone" and member.arch == arch)


def member_of(name: Union[str, KnownCheckpoint]) -> KnownCheckpoint:
    """A known checkpoint from a member, its name, an arch name (its default backbone), or
    torchvision's weights name (``"VGG19_Weights.IMAGENET1K_V1"``).

    Raises:
        TypeError: not a string or member.
        ValueError: unknown name (with the closest valid one).

    Example:
        >>> member_of("vgg16").name, member_of("VGG11_BN_Weights.IMAGENET1K_V1").name
        ('VGG16_IMAGENET1K_V1', 'VGG11_BN_IMAGENET1K_V1')
        >>> member_of("LPIPS_ALEX_V0_1").file_name, member_of("AlexNet_Weights.DEFAULT").name
        ('lpips_alex_v0.1.pth', 'ALEXNET_IMAGENET1K_V1')
    """
    if isinstance(name, KnownCheckpoint):
        return name
    if not isinstance(name, str):
        raise FeatxTypeError(
            f"expected a registry member (VGGWeights, ResNetWeights, ...) or its name, got {type(name).__name__}"
        )
    if name in _BY_NAME:
        return _BY_NAME[name]
    if name in BACKBONE_ARCHS:
        return default_backbone(name)
    from_torchvision = from_torchvision_name(name)
    if from_torchvision is not None:
        return from_torchvision
    choices = [*_BY_NAME, *BACKBONE_ARCHS]
    raise FeatxValueError(f"unknown checkpoint {name!r}.{closest(name, choices)} Valid names: {', '.join(choices)}")


def member_named(name: str) -> Optional[KnownCheckpoint]:
    """The member called ``name`` exactly (of any enum), or ``None``."""
    return _BY_NAME.get(name)
