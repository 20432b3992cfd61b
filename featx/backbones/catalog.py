"""Every architecture featx builds, by name: which family builds it and how to get its taps.

A plain table (no registration at import time): ``build_backbone("vgg19", "relu3_1", weights=None)``
and ``available_taps("alexnet")`` work for every family, so losses, metrics and ``featx extract``
take any ``arch`` the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Union

from featx._checks import check_choice
from featx.backbones.alexnet import alexnet_taps
from featx.backbones.base import BackboneFeatures
from featx.backbones.convnext.names import CONVNEXT_ARCHS, convnext_taps
from featx.backbones.dinov2.names import DINOV2_ARCHS
from featx.backbones.resnet.names import RESNET_ARCHS
from featx.backbones.squeezenet import squeezenet_taps
from featx.backbones.taps import TapInfo
from featx.backbones.vgg.layers import ARCHS as VGG_ARCHS
from featx.backbones.vgg.layers import layer_specs

__all__ = ["FAMILIES", "architectures", "available_taps", "build_backbone", "family_of"]

FAMILIES: dict[str, tuple[str, ...]] = {
    "vgg": VGG_ARCHS,
    "alexnet": ("alexnet",),
    "squeezenet": ("squeezenet1_1",),
    "dinov2": tuple(DINOV2_ARCHS),
    "convnext": tuple(CONVNEXT_ARCHS),
    "resnet": tuple(RESNET_ARCHS),
}
"""Family name -> its architectures."""


def architectures() -> tuple[str, ...]:
    """Every architecture name, family by family.

    Example:
        >>> architectures()[:3], "alexnet" in architectures()
        (('vgg11', 'vgg11_bn', 'vgg13'), True)
    """
    return tuple(arch for archs in FAMILIES.values() for arch in archs)


def family_of(arch: object) -> str:
    """The family that builds ``arch``.

    Raises:
        ValueError: unknown architecture (with the closest name).

    Example:
        >>> family_of("vgg19_bn"), family_of("alexnet")
        ('vgg', 'alexnet')
    """
    name = check_choice("arch", arch, architectures())
    return next(family for family, archs in FAMILIES.items() if name in archs)


def available_taps(arch: str, **options: Any) -> tuple[TapInfo, ...]:
    """Every tappable layer of ``arch`` in depth order (``options``: family options such as ``pooling``).

    Example:
        >>> [info.name for info in available_taps("alexnet")][:3]
        ['conv1', 'relu1', 'pool1']
    """
    family = family_of(arch)
    if family == "vgg":
        pooling = options.get("pooling", "max")
        return tuple(TapInfo(s.name, s.index, s.out_channels, s.stride) for s in layer_specs(arch, pooling=pooling))
    if family == "squeezenet":
        return squeezenet_taps()
    if family == "dinov2":
        from featx.backbones.dinov2.features import dinov2_taps

        return dinov2_taps(arch)
    if family == "convnext":
        return convnext_taps(arch)
    if family == "resnet":
        from featx.backbones.resnet.features import resnet_taps

        return resnet_taps(arch)
    return alexnet_taps()


def _vgg(arch: str, taps: Union[str, Iterable[str]], **kwargs: Any) -> BackboneFeatures:
    from featx.backbones.vgg.features import VGGFeatures

    return VGGFeatures(arch, taps, **kwargs)


def _alexnet(arch: str, taps: Union[str, Iterable[str]], **kwargs: Any) -> BackboneFeatures:
    from featx.backbones.alexnet import AlexNetFeatures

    return AlexNetFeatures(taps, **kwargs)


def _squeezenet(arch: str, taps: Union[str, Iterable[str]], **kwargs: Any) -> BackboneFeatures:
    from featx.backbones.squeezenet import SqueezeNetFeatures

    return SqueezeNetFeatures(taps, **kwargs)


def _dinov2(arch: str, taps: Union[str, Iterable[str]], **kwargs: Any) -> BackboneFeatures:
    from featx.backbones.dinov2.features import DINOv2Features

    return DINOv2Features(arch, taps, **kwargs)


def _convnext(arch: str, taps: Union[str, Iterable[str]], **kwargs: Any) -> BackboneFeatures:
    from featx.backbones.convnext.features import ConvNeXtFeatures

    return ConvNeXtFeatures(arch, taps, **kwargs)


def _resnet(arch: str, taps: Union[str, Iterable[str]], **kwargs: Any) -> BackboneFeatures:
    from featx.backbones.resnet.features import ResNetFeatures

    return ResNetFeatures(arch, taps, **kwargs)


_BUILDERS: dict[str, Callable[..., BackboneFeatures]] = {
    "vgg": _vgg,
    "alexnet": _alexnet,
    "squeezenet": _squeezenet,
    "dinov2": _dinov2,
    "convnext": _convnext,
    "resnet": _resnet,
}


def build_backbone(arch: str, taps: Union[str, Iterable[str]], **kwargs: Any) -> BackboneFeatures:
    """Build the extractor of any family: ``arch``'s layers up to the deepest of ``taps``.

    Args:
        arch: an architecture of :func:`architectures`.
        taps: as the family's extractor takes them.
        **kwargs: the family's keyword options (``weights``, ``input_range``, ``requires_grad``, ...).

    Raises:
        ValueError: unknown architecture, or what the family's extractor raises.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     build_backbone("alexnet", "relu2", weights=None).taps
        ('relu2',)
    """
    return _BUILDERS[family_of(arch)](arch, taps, **kwargs)
