"""The checkpoints featx knows, in one registry: torchvision's ImageNet VGG files (:class:`VGGWeights`)
and the files the calibrated metrics need (:class:`MetricWeights`: torchvision's AlexNet, LPIPS v0.1's
learned linear layers), with their URLs, sha256 (prefixes) and metadata."""

from __future__ import annotations

import enum
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

if TYPE_CHECKING:
    import torch

from featx._checks import check_choice, closest
from featx.errors import FeatxTypeError, FeatxValueError

__all__ = [
    "BACKBONE_ARCHS",
    "KINDS",
    "CheckpointInfo",
    "KnownCheckpoint",
    "MetricWeights",
    "MetricWeightsInfo",
    "VGGWeights",
    "WeightsSpec",
    "default_backbone",
    "known_by_file_name",
    "known_checkpoints",
    "member_of",
]

_BASE_URL = "https://download.pytorch.org/models/"
_TORCHVISION_NAME = re.compile(r"(?:torchvision\.models\.)?(VGG\d+(?:_BN)?)_Weights\.([A-Z0-9_]+)")
_TRANSFORMS = (
    "RGB in [0, 1], normalised with ImageNet mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225); "
    "torchvision's classification preset also resizes to 256 and centre-crops 224, which featx never does"
)


@dataclass(frozen=True)
class CheckpointInfo:
    """One torchvision ImageNet checkpoint of a VGG model.

    Attributes:
        arch: the architecture (``"vgg19"``).
        file_name: torchvision's file name; the 8 hex digits are the start of its sha256.
        num_params: parameters of the full model (features and classifier).
        acc1: ImageNet-1K top-1 accuracy (%) as torchvision documents it.
        acc5: ImageNet-1K top-5 accuracy (%).
        transforms: the input convention the weights were trained with.
    """

    arch: str
    file_name: str
    num_params: int
    acc1: float
    acc5: float
    transforms: str = _TRANSFORMS

    @property
    def url(self) -> str:
        """Where torchvision publishes the file."""
        return _BASE_URL + self.file_name

    @property
    def sha256_prefix(self) -> str:
        """The hex digits after the last ``-`` of the file name: the start of its sha256."""
        return self.file_name.rsplit("-", 1)[1].split(".", 1)[0]


# Numbers: torchvision.models.VGG*_Weights.IMAGENET1K_V1 (url, meta["num_params"], meta["_metrics"]).
class VGGWeights(enum.Enum):
    """The torchvision ImageNet checkpoints featx knows (names as in torchvision, prefixed by arch).

    Example:
        >>> w = VGGWeights.VGG19_IMAGENET1K_V1
        >>> w.arch, w.file_name, w.sha256_prefix
        ('vgg19', 'vgg19-dcbb9e9d.pth', 'dcbb9e9d')
        >>> w.url
        'https://download.pytorch.org/models/vgg19-dcbb9e9d.pth'
        >>> VGGWeights.default("vgg16_bn").name
        'VGG16_BN_IMAGENET1K_V1'
    """

    VGG11_IMAGENET1K_V1 = CheckpointInfo("vgg11", "vgg11-8a719046.pth", 132_863_336, 69.020, 88.628)
    VGG11_BN_IMAGENET1K_V1 = CheckpointInfo("vgg11_bn", "vgg11_bn-6002323d.pth", 132_868_840, 70.370, 89.810)
    VGG13_IMAGENET1K_V1 = CheckpointInfo("vgg13", "vgg13-19584684.pth", 133_047_848, 69.928, 89.246)
    VGG13_BN_IMAGENET1K_V1 = CheckpointInfo("vgg13_bn", "vgg13_bn-abd245e5.pth", 133_053_736, 71.586, 90.374)
    VGG16_IMAGENET1K_V1 = CheckpointInfo("vgg16", "vgg16-397923af.pth", 138_357_544, 71.592, 90.382)
    VGG16_BN_IMAGENET1K_V1 = CheckpointInfo("vgg16_bn", "vgg16_bn-6c64b313.pth", 138_365_992, 73.360, 91.516)
    VGG19_IMAGENET1K_V1 = CheckpointInfo("vgg19", "vgg19-dcbb9e9d.pth", 143_667_240, 72.376, 90.876)
    VGG19_BN_IMAGENET1K_V1 = CheckpointInfo("vgg19_bn", "vgg19_bn-c79401a0.pth", 143_678_248, 74.218, 91.842)

    @property
    def arch(self) -> str:
        """The architecture the checkpoint belongs to."""
        return self.value.arch

    @property
    def kind(self) -> str:
        """``"backbone"``: every VGG checkpoint is a backbone (see :data:`KINDS`)."""
        return "backbone"

    @property
    def file_name(self) -> str:
        """torchvision's file name (``vgg19-dcbb9e9d.pth``)."""
        return self.value.file_name

    @property
    def url(self) -> str:
        """Download URL (only :func:`download` ever opens it)."""
        return self.value.url

    @property
    def sha256_prefix(self) -> str:
        """The start of the file's sha256 (from its name)."""
        return self.value.sha256_prefix

    @property
    def meta(self) -> dict[str, Any]:
        """Metadata: ``num_params``, ``acc@1``, ``acc@5`` (ImageNet-1K) and ``transforms``."""
        info = self.value
        return {"num_params": info.num_params, "acc@1": info.acc1, "acc@5": info.acc5, "transforms": info.transforms}

    @classmethod
    def default(cls, arch: str) -> VGGWeights:
        """The checkpoint ``weights="DEFAULT"`` means for ``arch``.

        Raises:
            ValueError: unknown ``arch``.
        """
        check_choice("arch", arch, tuple(member.arch for member in cls))
        return next(member for member in cls if member.arch == arch)

    @classmethod
    def from_torchvision_name(cls, text: str) -> Union[VGGWeights, None]:
        """The checkpoint a torchvision weights name such as ``"VGG19_Weights.IMAGENET1K_V1"`` means.

        ``"VGG19_BN_Weights.DEFAULT"`` and a ``torchvision.models.`` prefix are accepted too.

        Returns:
            The member, or ``None`` when ``text`` does not look like a torchvision weights name.

        Raises:
            ValueError: a torchvision name for weights featx does not know
                (``VGG16_Weights.IMAGENET1K_FEATURES``).

        Example:
            >>> VGGWeights.from_torchvision_name("VGG19_Weights.IMAGENET1K_V1").name
            'VGG19_IMAGENET1K_V1'
            >>> VGGWeights.from_torchvision_name("vgg19.pth") is None
            True
        """
        match = _TORCHVISION_NAME.fullmatch(text.strip())
        if match is None:
            return None
        model, tag = match[1], "IMAGENET1K_V1" if match[2] == "DEFAULT" else match[2]
        name = f"{model}_{tag}"
        if name not in cls.__members__:
            known = ", ".join(f"{member.arch.upper()}_Weights.IMAGENET1K_V1" for member in cls)
            raise FeatxValueError(
                f"{text!r} names torchvision weights featx does not know; known: {known} (or .DEFAULT). "
                "Pass weights=PATH to its file instead"
            )
        return cls[name]

    @classmethod
    def from_file_name(cls, file_name: str) -> Union[VGGWeights, None]:
        """The known checkpoint with this file name, or ``None``.

        Example:
            >>> VGGWeights.from_file_name("vgg16-397923af.pth").name
            'VGG16_IMAGENET1K_V1'
        """
        return next((member for member in cls if member.file_name == file_name), None)


WeightsSpec = Union[str, VGGWeights, enum.Enum, "os.PathLike[str]", Mapping[str, "torch.Tensor"], None]
"""What every ``weights=`` argument accepts: ``"DEFAULT"``, a :class:`VGGWeights` member or its
name, a torchvision weights member or name (``"VGG19_Weights.IMAGENET1K_V1"``), a path to a
``.pth``/``.pt``/``.safetensors`` file, an in-memory state dict, or ``None`` (random weights)."""



KINDS: tuple[str, ...] = ("backbone", "lpips", "dists")
"""What a known checkpoint holds: a ``"backbone"`` (convolutional features, ``features.*`` keys),
the learned linear layers of LPIPS (``"lpips"``, keys ``lin{k}.model.1.weight``) or the learned
alpha/beta of DISTS (``"dists"``, keys ``alpha`` and ``beta``)."""

BACKBONE_ARCHS: tuple[str, ...] = (*(member.arch for member in VGGWeights), "alexnet")
"""Every backbone architecture featx builds: the VGG family and AlexNet (LPIPS's default)."""

_LPIPS_URL = "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/"
_DISTS_URL = "https://github.com/dingkeyan93/DISTS/raw/master/DISTS_pytorch/weights.pt"


@dataclass(frozen=True)
class MetricWeightsInfo:
    """One checkpoint outside torchvision's VGG family.

    Attributes:
        kind: one of :data:`KINDS`.
        arch: the backbone the file belongs to (``"alexnet"``, ``"vgg16"``).
        file_name: the name featx looks for in :func:`~featx.weights.search_dirs`.
        url: where the file is published (only ``featx weights download`` opens it).
        sha256: the file's full sha256, or the 8 hex digits torchvision puts in its file name.
        source: where the file comes from, in words.
        meta: more metadata (``num_params``, ``acc@1``, ``acc@5`` for a backbone).
    """

    kind: str
    arch: str
    file_name: str
    url: str
    sha256: str
    source: str
    meta: tuple[tuple[str, Any], ...] = ()


# Numbers: torchvision.models.AlexNet_Weights.IMAGENET1K_V1 (url, meta["num_params"], meta["_metrics"]);
# the lpips files: lpips 0.1.4 (PyPI), lpips/weights/v0.1/{vgg,alex}.pth, hashed with sha256sum;
# the DISTS file: dists-pytorch 0.1 (PyPI), DISTS_pytorch/weights.pt, hashed with sha256sum.
class MetricWeights(enum.Enum):
    """The checkpoints of the calibrated metrics: torchvision's AlexNet, LPIPS v0.1's linear layers and
    DISTS's alpha/beta.

    They live in the same registry as :class:`VGGWeights`: ``featx weights list`` shows them,
    ``featx weights download NAME`` fetches them (hash-checked) and construction finds them in
    :func:`~featx.weights.search_dirs` only (LPIPS's VGG16 backbone is
    ``VGGWeights.VGG16_IMAGENET1K_V1``).

    Example:
        >>> w = MetricWeights.LPIPS_VGG_V0_1
        >>> w.kind, w.arch, w.file_name, w.sha256_prefix[:8]
        ('lpips', 'vgg16', 'lpips_vgg_v0.1.pth', 'a78928a0')
        >>> MetricWeights.ALEXNET_IMAGENET1K_V1.url
        'https://download.pytorch.org/models/alexnet-owt-7be5be79.pth'
    """

    ALEXNET_IMAGENET1K_V1 = MetricWeightsInfo(
        "backbone",
        "alexnet",
        "alexnet-owt-7be5be79.pth",
        _BASE_URL + "alexnet-owt-7be5be79.pth",
        "7be5be79",
        "torchvision AlexNet_Weights.IMAGENET1K_V1 (ImageNet-1K); the backbone of LPIPS's default net",
        (("num_params", 61_100_840), ("acc@1", 56.522), ("acc@5", 79.066), ("transforms", _TRANSFORMS)),
    )
    LPIPS_VGG_V0_1 = MetricWeightsInfo(
        "lpips",
        "vgg16",
        "lpips_vgg_v0.1.pth",
        _LPIPS_URL + "vgg.pth",
        "a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868",
        "lpips v0.1 linear layers for VGG16 (lpips/weights/v0.1/vgg.pth, Zhang et al. CVPR 2018)",
    )
    LPIPS_ALEX_V0_1 = MetricWeightsInfo(
        "lpips",
        "alexnet",
        "lpips_alex_v0.1.pth",
        _LPIPS_URL + "alex.pth",
        "df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0",
        "lpips v0.1 linear layers for AlexNet (lpips/weights/v0.1/alex.pth, Zhang et al. CVPR 2018)",
    )
    DISTS_VGG16 = MetricWeightsInfo(
        "dists",
        "vgg16",
        "dists_vgg16.pt",
        _DISTS_URL,
        "f5e65c96230b7f6ca995691647d482237e4cab8a50c5c4a5784f219ef0748218",
        "DISTS alpha/beta for VGG16 with L2 pooling (DISTS_pytorch/weights.pt, Ding et al. TPAMI 2020)",
    )

    @property
    def kind(self) -> str:
        """What the file holds (:data:`KINDS`)."""
        return self.value.kind

    @property
    def arch(self) -> str:
        """The backbone architecture the file belongs to."""
        return self.value.arch

    @property
    def file_name(self) -> str:
        """The file name featx looks for."""
        return self.value.file_name

    @property
    def url(self) -> str:
        """Download URL (only :func:`~featx.weights.download` ever opens it)."""
        return self.value.url

    @property
    def sha256_prefix(self) -> str:
        """The file's sha256 as far as it is known (the full digest for the LPIPS files)."""
        return self.value.sha256

    @property
    def meta(self) -> dict[str, Any]:
        """Metadata: ``source``, and ``num_params``, ``acc@1``, ``acc@5``, ``transforms`` for a backbone."""
        return {"source": self.value.source, **dict(self.value.meta)}

    @classmethod
    def lpips(cls, arch: str) -> MetricWeights:
        """The LPIPS v0.1 linear layers for backbone ``arch`` (``"vgg16"`` or ``"alexnet"``).

        Raises:
            ValueError: no LPIPS weights for ``arch``.
        """
        archs = tuple(member.arch for member in cls if member.kind == "lpips")
        check_choice("LPIPS backbone", arch, archs)
        return next(member for member in cls if member.kind == "lpips" and member.arch == arch)


KnownCheckpoint = Union[VGGWeights, MetricWeights]
"""A member of either enum of the registry."""


def known_checkpoints() -> tuple[KnownCheckpoint, ...]:
    """Every checkpoint featx knows, VGG backbones first (the order of ``featx weights list``).

    Example:
        >>> [member.name for member in known_checkpoints()][-4:]
        ['ALEXNET_IMAGENET1K_V1', 'LPIPS_VGG_V0_1', 'LPIPS_ALEX_V0_1', 'DISTS_VGG16']
    """
    return (*VGGWeights, *MetricWeights)


def known_by_file_name(file_name: str) -> Union[KnownCheckpoint, None]:
    """The known checkpoint (of either enum) with this file name, or ``None``.

    Example:
        >>> known_by_file_name("lpips_alex_v0.1.pth").name
        'LPIPS_ALEX_V0_1'
    """
    return next((member for member in known_checkpoints() if member.file_name == file_name), None)


def default_backbone(arch: str) -> KnownCheckpoint:
    """The checkpoint ``weights="DEFAULT"`` means for a backbone of :data:`BACKBONE_ARCHS`.

    Raises:
        ValueError: unknown ``arch``.

    Example:
        >>> default_backbone("alexnet").name, default_backbone("vgg16").name
        ('ALEXNET_IMAGENET1K_V1', 'VGG16_IMAGENET1K_V1')
    """
    if arch == "alexnet":
        return MetricWeights.ALEXNET_IMAGENET1K_V1
    check_choice("arch", arch, BACKBONE_ARCHS)
    return VGGWeights.default(arch)


def member_of(name: Union[str, KnownCheckpoint]) -> KnownCheckpoint:
    """A known checkpoint from a member, its name, an arch name (its default backbone), or
    torchvision's weights name (``"VGG19_Weights.IMAGENET1K_V1"``).

    Raises:
        TypeError: not a string or member.
        ValueError: unknown name (with the closest valid one).

    Example:
        >>> member_of("vgg16").name, member_of("VGG11_BN_Weights.IMAGENET1K_V1").name
        ('VGG16_IMAGENET1K_V1', 'VGG11_BN_IMAGENET1K_V1')
        >>> member_of("LPIPS_ALEX_V0_1").file_name, member_of("alexnet").name
        ('lpips_alex_v0.1.pth', 'ALEXNET_IMAGENET1K_V1')
    """
    if isinstance(name, (VGGWeights, MetricWeights)):
        return name
    if not isinstance(name, str):
        raise FeatxTypeError(f"expected a VGGWeights or MetricWeights member or its name, got {type(name).__name__}")
    if name in VGGWeights.__members__:
        return VGGWeights[name]
    if name in MetricWeights.__members__:
        return MetricWeights[name]
    if name in BACKBONE_ARCHS:
        return default_backbone(name)
    if name.strip() in ("AlexNet_Weights.IMAGENET1K_V1", "AlexNet_Weights.DEFAULT"):
        return MetricWeights.ALEXNET_IMAGENET1K_V1
    from_torchvision = VGGWeights.from_torchvision_name(name)
    if from_torchvision is not None:
        return from_torchvision
    choices = [member.name for member in known_checkpoints()] + list(BACKBONE_ARCHS)
    raise FeatxValueError(f"unknown checkpoint {name!r}.{closest(name, choices)} Valid names: {', '.join(choices)}")
