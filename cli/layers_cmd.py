"""``featx layers ARCH``: the layer table (name, output shape, stride, parameters) with totals."""

from __future__ import annotations

import click


def format_table(rows, taps: tuple[str, ...], title: str) -> str:
    """Render layer rows in the familiar torchsummary style, marking tapped layers with ``*``."""
    lines = [title, "-" * 72, f"  {'Layer':<10}{'Type':<8}{'Output shape':<22}{'Stride':>7}{'Params':>16}", "=" * 72]
    for row in rows:
        mark = "*" if row.name in taps else " "
        shape = "(" + ", ".join(str(d) for d in row.shape) + ")"
        stride = str(row.stride) if row.stride else "-"
        lines.append(f"{mark} {row.name:<10}{row.kind:<8}{shape:<22}{stride:>7}{row.params:>16,}")
    total = sum(row.params for row in rows)
    features = sum(row.params for row in rows if not row.name.startswith(("fc", "gap", "avgpool")))
    lines += ["=" * 72, f"Total params: {total:,}", f"Features params: {features:,}", f"Head params: {total - features:,}"]
    if taps:
        lines.append(f"Taps (*): {', '.join(taps)}")
    return "\n".join(lines)


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
@click.option("--pooling", default="max", show_default=True, help="max, avg, blur, conv or none.")
@click.option("--taps", default=None, help="Mark taps: a preset name or comma-separated layer names.")
def layers(arch: str, input_size: tuple[int, int], head: str, pooling: str, taps: str | None) -> None:
    """Print the layer table of ARCH (vgg11 ... vgg19_bn) for an input size.

    Example: featx layers vgg16 --input-size 400 400 --head conv
    """
    from featx.layers import layer_table, resolve_taps

    try:
        rows = layer_table(arch, *input_size, head=head, pooling=pooling)
        marked = tuple(t.name for t in resolve_taps(arch, taps, pooling)) if taps else ()
    except (ValueError, TypeError) as error:
        raise click.UsageError(str(error)) from None
    height, width = input_size
    click.echo(format_table(rows, marked, f"{arch}, input 3x{height}x{width}, pooling={pooling}, head={head}"))
