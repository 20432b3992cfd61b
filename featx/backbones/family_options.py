"""Build any catalog architecture with options only some families take (``pooling``, ``gray``, DINOv2's
size rules): an option left at ``None`` is not passed, one a family does not take is a clear error.

Losses, ``featx show`` and ``featx extract`` build their backbones through :func:`build_with_options`,
so they take every architecture of :func:`featx.backbones.catalog.architectures` the same way and
never name a family.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Union

from featx.backbones.base import BackboneFeatures
from featx.backbones.catalog import available_taps, build_backbone, family_of
from featx.errors import FeatxValueError

__all__ = ["build_with_options", "default_taps"]


def build_with_options(
    arch: str,
    taps: Union[str, Iterable[str]],
    family_options: Mapping[str, Any],
    **common: Any,
) -> BackboneFeatures:
    """:func:`~featx.backbones.catalog.build_backbone` with ``family_options`` passed only where given.

    Args:
        arch: any architecture of :func:`~featx.backbones.catalog.architectures`.
        taps: as the family's extractor takes them.
        family_options: options that only some families take (``{"pooling": "avg", "gray": None}``);
            ``None`` values are left out, so the family's default holds.
        **common: options every family takes (``weights``, ``input_range``, ``requires_grad``, ...).

    Returns:
        The family's extractor.

    Raises:
        ValueError: unknown ``arch``, or a given family option that ``arch``'s family does not take
            (the message names the option, the arch and its family), or what the family raises.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")  # random weights: for the example only
        ...     build_with_options("alexnet", "relu2", {"pooling": None}, weights=None).taps
        ('relu2',)
        >>> try:
        ...     build_with_options("alexnet", "relu2", {"pooling": "avg"}, weights=None)
        ... except ValueError as error:
        ...     print(str(error).split(":")[0])
        pooling='avg' is not an option of arch 'alexnet' (family 'alexnet')
    """
    family = family_of(arch)
    given = {name: value for name, value in family_options.items() if value is not None}
    try:
        return build_backbone(arch, taps, **common, **given)
    except TypeError as error:  # an option the family's constructor has no parameter for
        rejected = [name for name in given if f"unexpected keyword argument '{name}'" in str(error)]
        if not rejected:
            raise
        name = rejected[0]
        raise FeatxValueError(
            f"{name}={given[name]!r} is not an option of arch {arch!r} (family {family!r}): its extractor takes "
            f"no {name}=; drop {name}=, or pick an arch whose family takes it"
        ) from None


def default_taps(arch: str, default: str) -> str:
    """``default`` (comma-separated taps) where ``arch`` has all those layers, else a clear error.

    Commands with a VGG default (``featx extract``'s ``relu1_1,relu2_1,relu3_1``, ``featx show``'s
    ``relu1_1,relu2_1``) keep it for every VGG; another family's taps must be named.

    Raises:
        ValueError: unknown ``arch``, or ``arch`` lacks one of the default taps (the message lists
            its first taps and the ``featx layers`` command that lists them all).

    Example:
        >>> default_taps("vgg16", "relu1_1,relu2_1")
        'relu1_1,relu2_1'
        >>> try:
        ...     default_taps("alexnet", "relu1_1,relu2_1")
        ... except ValueError as error:
        ...     print(str(error).split(";")[0])
        arch 'alexnet' has no default taps: name them with taps= (--taps), e.g. --taps relu1
    """
    names = [info.name for info in available_taps(arch)]
    if set(default.split(",")) <= set(names):
        return default
    more = ", ..." if len(names) > 8 else ""
    raise FeatxValueError(
        f"arch {arch!r} has no default taps: name them with taps= (--taps), e.g. --taps {names[1]}; "
        f"its taps: {', '.join(names[:8])}{more} (featx layers {arch} lists them all)"
    )
