"""Placeholder for `featx show` until its module lands."""

import click


@click.command(name="show")
def show() -> None:
    """(not available yet)"""
    raise click.UsageError("featx show is not available in this build")
