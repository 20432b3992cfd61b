"""Placeholder for `featx layers` until its module lands."""

import click


@click.command(name="layers")
def layers() -> None:
    """(not available yet)"""
    raise click.UsageError("featx layers is not available in this build")
