"""``featx show IMAGE``: a PNG of the strongest channels and the Gram matrix at chosen taps."""

from __future__ import annotations

from typing import Optional

import click

from featx._choices import ALPHA_MODES


@click.command(name="show")
@click.argument("image", type=click.Path(dir_okay=False))
@click.option(
    "--taps",
    default=None,
    help="Comma-separated tap names or a preset (default for VGG relu1_1,relu2_1; required for other families).",
)
@click.option("--out", default="features.png", show_default=True, type=click.Path(dir_okay=False), help="PNG to write.")
@click.option(
    "--weights",
    default="DEFAULT",
    show_default=True,
    help="DEFAULT (ImageNet from the local cache), a checkpoint name, a .pth/.safetensors path, or 'random'.",
)
@click.option(
    "--arch",
    default="vgg19",
    show_default=True,
    help="Backbone of any family: vgg11 ... vgg19_bn, alexnet, squeezenet1_1, resnet18 ... resnet101, "
    "convnext_tiny/small/base, dinov2_vits14, dinov2_vitb14 "
    "(`featx layers ARCH` lists its taps).",
)
@click.option("--channels", default=8, show_default=True, type=click.IntRange(min=1), help="Channels shown per tap.")
@click.option("--pooling", default=None, help="VGG only: max (default), avg, blur or none.")
@click.option(
    "--max-size",
    default=512,
    show_default=True,
    type=click.IntRange(min=0),
    help="Downscale the longer side to this (0: keep the size).",
)
@click.option(
    "--alpha",
    type=click.Choice(ALPHA_MODES),
    default="error",
    show_default=True,
    help="Refuse an image with an alpha channel, or drop the alpha channel.",
)
def show(
    image: str,
    taps: Optional[str],
    out: str,
    weights: str,
    arch: str,
    channels: int,
    pooling: Optional[str],
    max_size: int,
    alpha: str,
) -> None:
    """Picture what a loss compares: the strongest feature maps and the Gram matrix of each tap.

    Example: featx show photo.png --taps relu1_1,relu2_1 --out fig.png
    (or --arch squeezenet1_1 --taps relu1,fire3)
    """
    import warnings

    from featx.errors import ImageDecodeError, RandomWeightsWarning, WeightsNotFoundError
    from featx.show import MATPLOTLIB_HINT, require_matplotlib, show_features

    try:
        require_matplotlib()
    except ImportError:
        raise click.ClickException(
            f"featx show needs matplotlib to draw its figure, and it cannot be imported; {MATPLOTLIB_HINT}"
        ) from None
    chosen = None if weights.lower() == "random" else weights
    if chosen is None:
        click.echo(f"warning: --weights random: the feature maps come from an untrained {arch.upper()}", err=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RandomWeightsWarning)  # reported above, once
            _, summaries = show_features(
                image,
                taps,
                out,
                arch=arch,
                weights=chosen,
                channels=channels,
                pooling=pooling,
                max_size=max_size or None,
                alpha=alpha,
            )
    except ImageDecodeError as error:
        raise click.BadParameter(str(error), param_hint="IMAGE") from None
    except WeightsNotFoundError as error:
        from featx.weights import missing_message

        flags = {"weights": "--weights PATH"}
        message = missing_message(error.missing, cli_flags=flags, command="featx show") if error.missing else str(error)
        raise click.ClickException(message) from None
    except (ValueError, TypeError) as error:
        raise click.UsageError(str(error)) from None
    for summary in summaries.values():
        c, h, w = summary.shape
        click.echo(f"{summary.name}: {c}x{h}x{w}, strongest channels {list(summary.channels)}")
    click.echo(f"wrote {out}")
