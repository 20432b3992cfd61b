"""Placeholder for `featx weights` until its module lands."""

import click


@click.command(name="weights")
def weights() -> None:
    """(not available yet)"""
    raise click.UsageError("featx weights is not available in this build")
