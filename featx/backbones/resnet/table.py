"""The layer table of a ResNet for one input size (``featx layers resnet50``), with torchvision's classifier."""

from __future__ import annotations

from featx._checks import check_choice, check_int
from featx.backbones.resnet.names import RESNET_ARCHS, resnet_layers, resnet_output_size
from featx.backbones.table import LayerRow

__all__ = ["RESNET_HEADS", "resnet_layer_table"]

RESNET_HEADS: tuple[str, ...] = ("none", "fc")
"""Heads of a ResNet layer table: none, or torchvision's (global average pool, then ``fc``, 1000 classes)."""


def resnet_layer_table(arch: str, height: int = 224, width: int = 224, *, head: str = "fc") -> tuple[LayerRow, ...]:
    """The layer table of a ResNet: the stem, every residual block, and with ``head="fc"`` torchvision's
    ``avgpool`` and ``fc``.

    A stage (``layer1`` ... ``layer4``) is the output of its last block, so it has no row of its own;
    a block's parameters include its ``downsample``. Every layer pads, so a map at stride ``s`` has
    ``ceil(H / s)`` rows for any input size.

    Args:
        arch: one of :data:`~featx.backbones.resnet.names.RESNET_ARCHS`.
        height: input height.
        width: input width.
        head: one of :data:`RESNET_HEADS`.

    Returns:
        One :class:`~featx.backbones.table.LayerRow` per layer; ``index`` is the tap position
        (``None`` for the head).

    Raises:
        ValueError: unknown arch or head, or a size below 1.

    Example:
        >>> rows = resnet_layer_table("resnet18")
        >>> [(r.name, r.shape) for r in rows if r.name in ("maxpool", "layer4.1", "fc")]
        [('maxpool', (64, 56, 56)), ('layer4.1', (512, 7, 7)), ('fc', (1000,))]
        >>> sum(r.params for r in rows)
        11689512
    """
    arch = check_choice("arch", arch, tuple(RESNET_ARCHS))
    check_choice("head", head, RESNET_HEADS, context=f" for {arch} (a ResNet has no convolutional head)")
    check_int("height", height)
    check_int("width", width)
    rows = []
    for layer in resnet_layers(arch):
        if layer.kind == "stage":
            continue
        shape = (layer.channels, resnet_output_size(height, layer.stride), resnet_output_size(width, layer.stride))
        rows.append(LayerRow(layer.name, layer.position, layer.kind, shape, layer.stride, layer.params))
    if head == "fc":
        channels = rows[-1].shape[0]
        rows.append(LayerRow("avgpool", None, "gap", (channels, 1, 1), 0, 0))
        rows.append(LayerRow("fc", None, "linear", (1000,), 0, channels * 1000 + 1000))
    return tuple(rows)
