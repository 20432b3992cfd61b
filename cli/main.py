"""The ``featx`` command group. Subcommands live in their own modules and import torch lazily,
so ``featx --help`` stays instant."""

from __future__ import annotations

import click

from featx._version import __version__

from .extract_cmd import extract
from .layers_cmd import layers
from .score_cmd import score
from .show_cmd import show
from .weights_cmd import weights


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="featx")
def cli() -> None:
    """featx: VGG feature extraction and perceptual/texture losses for super-resolution."""


cli.add_command(extract)
cli.add_command(layers)
cli.add_command(score)
cli.add_command(show)
cli.add_command(weights)


if __name__ == "__main__":
    cli()
