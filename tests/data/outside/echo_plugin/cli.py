"""``corec echo``: echo_plugin's command group."""

import click


@click.group()
def echo() -> None:
    """The test plugin's commands."""


@echo.command()
def hello() -> None:
    """Say hello."""
    click.echo("hello from echo_plugin")
