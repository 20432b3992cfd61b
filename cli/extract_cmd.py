"""Placeholder for `featx extract` until its module lands."""

import click


@click.command(name="extract")
def extract() -> None:
    """(not available yet)"""
    raise click.UsageError("featx extract is not available in this build")
