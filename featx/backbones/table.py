"""The layer table of a VGG for one input size (``featx layers``), with an optional classifier head."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Optional

from featx._checks import check_choice, check_int
from featx.backbones.vgg.layers import POOLINGS, layer_specs
from featx.errors import FeatxValueError

__all__ = ["CLASSIFIER", "HEADS", "LayerRow", "format_layer_table", "layer_table"]


@dataclass(frozen=True)
class LayerRow:
    """One row of a layer table (see :func:`layer_table`).

    Attributes:
        name: canonical layer name, or ``fc6``/``fc7``/``fc8``/``gap``/``avgpool`` for head layers.
        index: position in the ``features`` Sequential (``None`` for head layers).
        kind: ``conv``, ``bn``, ``relu``, ``pool``, ``linear`` or ``gap``.
        shape: output shape ``(C, H, W)`` for one image (``(N,)`` after a linear layer).
        stride: downsampling of the output relative to the input (0 after global pooling).
        params: learnable parameters of the layer.
    """

    name: str
    index: Optional[int]
    kind: str
    shape: tuple[int, ...]
    stride: int
    params: int


CLASSIFIER: tuple[tuple[str, int, int], ...] = (("fc6", 7, 4096), ("fc7", 1, 4096), ("fc8", 1, 1000))
"""VGG's classifier layers: ``(name, kernel size in the fully convolutional form, outputs)``; fc6
reads the 512 x 7 x 7 pool5 map (Simonyan & Zisserman 2015, sec. 3.2). The one source of these
shapes for :func:`layer_table` and :class:`featx.backbones.vgg.head.ConvHead`."""

HEADS: tuple[str, ...] = ("none", "fc", "conv")
"""Classifier heads for :func:`layer_table`: none, fc (torchvision's), conv (fully convolutional)."""


def layer_table(
    arch: str, height: int = 224, width: int = 224, *, head: str = "none", pooling: str = "max"
) -> tuple[LayerRow, ...]:
    """The layer table of an architecture for one input size, optionally with a classifier head.

    ``head="fc"`` is torchvision's classifier (``AdaptiveAvgPool2d(7)``, then fc6/fc7/fc8 as linear
    layers). ``head="conv"`` is the fully convolutional form: fc6 as a 7x7 convolution
    (512 -> 4096, no padding), fc7 and fc8 as 1x1 convolutions, then global average pooling, so any
    input of at least 224x224 gives class scores (a 400x400 input gives a 6x6 score map before
    pooling). Both heads hold the same parameters (fc weights reshaped to convolution kernels).

    Args:
        arch: one of :data:`ARCHS`.
        height: input height.
        width: input width.
        head: one of :data:`HEADS`.
        pooling: one of :data:`featx.backbones.vgg.layers.POOLINGS`.

    Returns:
        One :class:`LayerRow` per layer.

    Raises:
        ValueError: unknown arch/pooling/head, or an input too small for the layers or the head.

    Example:
        >>> rows = layer_table("vgg16", 400, 400, head="conv")
        >>> [(r.name, r.shape) for r in rows if r.name in ("pool5", "fc8")]
        [('pool5', (512, 12, 12)), ('fc8', (1000, 6, 6))]
        >>> sum(r.params for r in rows)
        138357544
    """
    check_choice("head", head, HEADS)
    check_choice("pooling", pooling, POOLINGS)
    check_int("height", height)
    check_int("width", width)
    rows = []
    h, w = height, width
    for spec in layer_specs(arch, pooling=pooling):
        if spec.kind == "pool" and pooling != "none":
            h, w = h // 2, w // 2
            if h < 1 or w < 1:
                raise FeatxValueError(
                    f"input {height}x{width} is too small for {arch}: {spec.name} would be empty "
                    f"(needs at least {2 ** spec.pools_before}x{2 ** spec.pools_before})"
                )
        rows.append(LayerRow(spec.name, spec.index, spec.kind, (spec.out_channels, h, w), spec.stride, spec.params))
    channels, stride = rows[-1].shape[0], rows[-1].stride
    fan_in = channels
    if head == "fc":
        rows.append(LayerRow("avgpool", None, "pool", (channels, 7, 7), 0, 0))
    elif head == "conv":
        h, w = h - 6, w - 6
        if h < 1 or w < 1:
            raise FeatxValueError(
                f"input {height}x{width} is too small for the convolutional head: fc6 is a 7x7 "
                f"convolution on the pool5 map, which needs at least 7x7 (input >= {7 * stride}x{7 * stride})"
            )
    if head != "none":
        for name, kernel, width_out in CLASSIFIER:
            params = fan_in * kernel * kernel * width_out + width_out
            shape, kind = ((width_out,), "linear") if head == "fc" else ((width_out, h, w), "conv")
            layer_stride = 0 if head == "fc" else stride
            rows.append(LayerRow(name, None, kind, shape, layer_stride, params))
            if name != "fc8":
                rows.append(LayerRow(name.replace("fc", "relu"), None, "relu", shape, layer_stride, 0))
            fan_in = width_out
        if head == "conv":
            rows.append(LayerRow("gap", None, "gap", (CLASSIFIER[-1][2], 1, 1), 0, 0))
    return tuple(rows)


def format_layer_table(rows: Iterable[LayerRow], *, taps: Iterable[str] = (), title: str = "") -> str:
    """Render layer rows in the torchsummary style (what ``featx layers`` prints).

    Columns: tap mark (``*``), canonical name, ``features`` index (``-`` for head layers), kind,
    output shape for one image, stride (``-`` after global pooling) and parameters; then the
    totals for the whole table, the ``features`` part and the head.

    Args:
        rows: from :func:`layer_table`.
        taps: layer names to mark with ``*``.
        title: first line (e.g. the arch and input size).

    Returns:
        The table as one string (no trailing newline).

    Example:
        >>> print(format_layer_table(layer_table("vgg11", 32, 32)[:2], taps=["relu1_1"], title="vgg11"))
        vgg11
        -------------------------------------------------------------------------
          Layer      Index  Type    Output shape           Stride          Params
        =========================================================================
          conv1_1        0  conv    (64, 32, 32)                1           1,792
        * relu1_1        1  relu    (64, 32, 32)                1               0
        =========================================================================
        Total params: 1,792
        Features params: 1,792
        Head params: 0
        Taps (*): relu1_1
    """
    rows, marked = tuple(rows), tuple(taps)
    width = max([10, *(len(row.name) for row in rows)])  # longer names (ConvNeXt's downsample2) widen the column
    rule = 63 + width
    lines = [title] if title else []
    lines += ["-" * rule, f"  {'Layer':<{width}}{'Index':>6}  {'Type':<8}{'Output shape':<22}{'Stride':>7}{'Params':>16}"]
    lines.append("=" * rule)
    for row in rows:
        mark = "*" if row.name in marked else " "
        index = "-" if row.index is None else str(row.index)
        shape = "(" + ", ".join(str(d) for d in row.shape) + ")"
        stride = str(row.stride) if row.stride else "-"
        lines.append(f"{mark} {row.name:<{width}}{index:>6}  {row.kind:<8}{shape:<22}{stride:>7}{row.params:>16,}")
    total = sum(row.params for row in rows)
    features = sum(row.params for row in rows if row.index is not None)
    lines += ["=" * rule, f"Total params: {total:,}", f"Features params: {features:,}", f"Head params: {total - features:,}"]
    if marked:
        lines.append(f"Taps (*): {', '.join(marked)}")
    return "\n".join(lines)
