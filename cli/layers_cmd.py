"""``featx layers ARCH``: the layer table (name, output shape, stride, parameters) with totals."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from featx.backbones.table import LayerRow


@click.command(name="layers")
@click.argument("arch")
@click.option("--input-size", nargs=2, type=int, default=(224, 224), show_default=True, metavar="H W")
@click.option(
    "--head",
    type=click.Choice(["none", "fc", "conv"]),
    default=None,
    help="Add the classifier: torchvision's fc layers, or the fully convolutional form (fc6 as 7x7 conv + GAP; "
    "VGG only). Default: none for VGG and ConvNeXt, fc for ResNet (its totals then equal torchvision's model).",
)
@click.option("--pooling", default="max", show_default=True, help="max, avg, blur, l2, conv or none (VGG only).")
@click.option("--taps", default=None, help="Mark taps: a preset name or comma-separated layer names.")
def layers(arch: str, input_size: tuple[int, int], head: str | None, pooling: str, taps: str | None) -> None:
    """Print the layer table of ARCH (vgg11 ... vgg19_bn, resnet18 ... resnet101, convnext_tiny/small/base)
    for an input size.

    Example: featx layers vgg16 --input-size 400 400 --head conv; featx layers resnet18
    """
    from featx.backbones import RESNET_ARCHS

    if arch in RESNET_ARCHS or arch.startswith("res"):  # a misspelt ResNet gets ResNet suggestions
        _resnet_table(arch, input_size, head or "fc", pooling, taps)
        return
    from featx.backbones.table import format_layer_table, layer_table
    from featx.backbones.taps import resolve_taps

    head = head or "none"
    height, width = input_size
    try:
        if arch.startswith("convnext"):
            rows, marked, title = _convnext_table(arch, height, width, head, pooling, taps)
        else:
            rows = layer_table(arch, *input_size, head=head, pooling=pooling)
            marked = tuple(t.name for t in resolve_taps(arch, taps, pooling=pooling)) if taps else ()
            title = f"{arch}, input 3x{height}x{width}, pooling={pooling}, head={head}"
    except (ValueError, TypeError) as error:
        raise click.UsageError(str(error)) from None
    click.echo(format_layer_table(rows, taps=marked, title=title))


def _convnext_table(
    arch: str, height: int, width: int, head: str, pooling: str, taps: str | None
) -> tuple[tuple[LayerRow, ...], tuple[str, ...], str]:
    """Rows, marked taps and title of a ConvNeXt's table (its own tap names; no pooling variants)."""
    from featx.backbones.convnext import convnext_layer_table, convnext_layers, resolve_convnext_taps

    if pooling != "max":
        raise click.UsageError(f"--pooling applies to VGG only; {arch} has no pooling variants")
    rows = convnext_layer_table(arch, height, width, head=head)
    layers = convnext_layers(arch)  # torchvision's paths (features.7) mark the rows they name (stage4)
    marked = tuple(layers[info.index].name for info in resolve_convnext_taps(arch, taps)) if taps else ()
    return rows, marked, f"{arch}, input 3x{height}x{width}, head={head}"


def _resnet_table(arch: str, input_size: tuple[int, int], head: str, pooling: str, taps: str | None) -> None:
    """A ResNet's table; a stage tap (``layer2``) marks the row of its last block, whose output it is."""
    from featx.backbones import format_layer_table, resnet_layer_table
    from featx.backbones.resnet import resnet_layers, resolve_resnet_taps

    try:
        if pooling != "max":
            raise ValueError(f"--pooling {pooling} is a VGG option; {arch} keeps torchvision's max pool")
        rows = resnet_layer_table(arch, *input_size, head=head)
        layers = resnet_layers(arch)
        marked = tuple(
            f"layer{layers[t.index].stage}.{layers[t.index].block}" if layers[t.index].kind == "stage" else t.name
            for t in (resolve_resnet_taps(arch, taps) if taps else ())
        )
    except (ValueError, TypeError) as error:
        raise click.UsageError(str(error)) from None
    height, width = input_size
    click.echo(format_layer_table(rows, taps=dict.fromkeys(marked), title=f"{arch}, input 3x{height}x{width}, head={head}"))
