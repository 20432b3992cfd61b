"""The checkpoints featx knows: torchvision's ImageNet VGG files, their URLs, hash prefixes and metadata."""

from __future__ import annotations

import enum
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

if TYPE_CHECKING:
    import torch

from featx._checks import closest
from featx.errors import FeatxTypeError, FeatxValueError
from featx.layers import ARCHS, check_arch

__all__ = ["CheckpointInfo", "VGGWeights", "WeightsSpec", "member_of"]

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
        check_arch(arch)
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


def member_of(name: Union[str, VGGWeights]) -> VGGWeights:
    """A known checkpoint from a member, its name, an arch name (its default), or torchvision's
    weights name (``"VGG19_Weights.IMAGENET1K_V1"``).

    Raises:
        TypeError: not a string or member.
        ValueError: unknown name (with the closest valid one).

    Example:
        >>> member_of("vgg16").name, member_of("VGG11_BN_Weights.IMAGENET1K_V1").name
        ('VGG16_IMAGENET1K_V1', 'VGG11_BN_IMAGENET1K_V1')
    """
    if isinstance(name, VGGWeights):
        return name
    if not isinstance(name, str):
        raise FeatxTypeError(f"expected a VGGWeights member or its name, got {type(name).__name__}")
    if name in VGGWeights.__members__:
        return VGGWeights[name]
    if name in ARCHS:
        return VGGWeights.default(name)
    from_torchvision = VGGWeights.from_torchvision_name(name)
    if from_torchvision is not None:
        return from_torchvision
    choices = list(VGGWeights.__members__) + list(ARCHS)
    raise FeatxValueError(f"unknown checkpoint {name!r}.{closest(name, choices)} Valid names: {', '.join(choices)}")
