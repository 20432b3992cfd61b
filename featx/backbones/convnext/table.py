"""The layer table of a ConvNeXt for one input size (``featx layers convnext_tiny``), with an optional
classifier head; rendered by :func:`featx.backbones.table.format_layer_table`."""

from __future__ import annotations

from featx._checks import check_choice, check_int
from featx.backbones.convnext.names import NUM_CLASSES, convnext_layers, convnext_output_size
from featx.backbones.table import LayerRow
from featx.errors import FeatxValueError

__all__ = ["CONVNEXT_HEADS", "convnext_layer_table"]

CONVNEXT_HEADS: tuple[str, ...] = ("none", "fc")
"""Heads of :func:`convnext_layer_table`: none, or torchvision's classifier (``avgpool``, then
``classifier.0``, a LayerNorm, and ``classifier.2``, the linear layer; ``classifier.1`` flattens)."""


def convnext_layer_table(arch: str, height: int = 224, width: int = 224, *, head: str = "none") -> tuple[LayerRow, ...]:
    """The layer table of a ConvNeXt for one input size: every tap in depth order, then the head.

    A stage's row (``stage1``) is the stage's output, the output of its last block; it holds no
    parameters of its own (its blocks' rows do), so the totals count each parameter once. The index
    is the tap's position in depth order (``TapInfo.index``); the type is the layer's kind
    (``stem``, ``block``, ``stage``, ``down`` for a downsampling layer).

    Args:
        arch: ``"convnext_tiny"``, ``"convnext_small"`` or ``"convnext_base"``.
        height: input height.
        width: input width.
        head: one of :data:`CONVNEXT_HEADS`.

    Returns:
        One :class:`~featx.backbones.table.LayerRow` per layer.

    Raises:
        ValueError: unknown arch or head, or an input too small for ``stage4`` (32x32).

    Example:
        >>> rows = convnext_layer_table("convnext_tiny", head="fc")
        >>> [(row.name, row.shape) for row in rows if row.name in ("stem", "stage4", "classifier.2")]
        [('stem', (96, 56, 56)), ('stage4', (768, 7, 7)), ('classifier.2', (1000,))]
        >>> sum(row.params for row in rows)  # torchvision's convnext_tiny(), classifier included
        28589128
    """
    check_choice("head", head, CONVNEXT_HEADS, context=f" for {arch} (ConvNeXt has no fully convolutional head)")
    check_int("height", height)
    check_int("width", width)
    layers = convnext_layers(arch)
    if min(height, width) < layers[-1].stride:
        raise FeatxValueError(
            f"input {height}x{width} is too small for {arch}: stage4 would be empty "
            f"(needs at least {layers[-1].stride}x{layers[-1].stride})"
        )
    rows = [
        LayerRow(
            layer.name,
            layer.position,
            "down" if layer.kind == "downsample" else layer.kind,
            (layer.channels, convnext_output_size(height, layer.stride), convnext_output_size(width, layer.stride)),
            layer.stride,
            layer.params,
        )
        for layer in layers
    ]
    if head == "fc":
        channels = layers[-1].channels
        rows.append(LayerRow("avgpool", None, "pool", (channels, 1, 1), 0, 0))
        rows.append(LayerRow("classifier.0", None, "norm", (channels, 1, 1), 0, 2 * channels))
        rows.append(LayerRow("classifier.2", None, "linear", (NUM_CLASSES,), 0, channels * NUM_CLASSES + NUM_CLASSES))
    return tuple(rows)
