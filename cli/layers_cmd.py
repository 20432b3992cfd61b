"""``featx layers ARCH``: the layer table (name, output shape, stride, parameters) with totals."""

from __future__ import annotations

import click


@click.command(name="layers")
@click.argument("arch")
@click.option("--input-size", nargs=2, type=int, default=(224, 224), show_default=True, metavar="H W")
@click.option(
    "--head",
    type=click.Choice(["none", "fc", "conv"]),
    default="none",
    show_default=True,
    help="Add the classifier: torchvision's fc layers, or the fully convolutional form (fc6 as 7x7 conv + GAP).",
)
@click.option("--pooling", default="max", show_default=True, help="max, avg, blur, l2, conv or none.")
@click.option("--taps", default=None, help="Mark taps: a preset name or comma-separated layer names.")
def layers(arch: str, input_size: tuple[int, int], head: str, pooling: str, taps: str | None) -> None:
    """Print the layer table of ARCH (vgg11 ... vgg19_bn) for an input size.

    Example: featx layers vgg16 --input-size 400 400 --head conv
    """
    from featx.backbones.table import format_layer_table, layer_table
    from featx.backbones.taps import resolve_taps

    try:
        rows = layer_table(arch, *input_size, head=head, pooling=pooling)
        marked = tuple(t.name for t in resolve_taps(arch, taps, pooling=pooling)) if taps else ()
    except (ValueError, TypeError) as error:
        raise click.UsageError(str(error)) from None
    height, width = input_size
    title = f"{arch}, input 3x{height}x{width}, pooling={pooling}, head={head}"
    click.echo(format_layer_table(rows, taps=marked, title=title))
