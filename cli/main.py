"""The ``featx`` command group. Subcommands live in their own modules and import torch lazily,
so ``featx --help`` stays instant."""

from __future__ import annotations

import sys
import warnings
from typing import Optional, TextIO

import click

from featx._version import __version__

from .extract_cmd import extract
from .layers_cmd import layers
from .score_cmd import score
from .show_cmd import show
from .weights_cmd import weights


def one_line_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Optional[TextIO] = None,
    line: Optional[str] = None,
) -> None:
    """Print a warning as the CLI's other messages: one ``featx: warning: ...`` line on stderr, without
    Python's ``file:line`` and source line (drop-in for :func:`warnings.showwarning`).

    A progress bar on screen is kept intact (the line is written through tqdm).
    """
    from tqdm.auto import tqdm

    text = " ".join(str(message).split())
    tqdm.write(f"featx: warning: {text}", file=file if file is not None else sys.stderr)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="featx")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """featx: VGG feature extraction and perceptual/texture losses for super-resolution."""
    saved = warnings.showwarning
    warnings.showwarning = one_line_warning

    def restore() -> None:
        warnings.showwarning = saved

    ctx.call_on_close(restore)


cli.add_command(extract)
cli.add_command(layers)
cli.add_command(score)
cli.add_command(show)
cli.add_command(weights)


if __name__ == "__main__":
    cli()
