"""The ``corec`` command line: ``corec --help``."""

from __future__ import annotations

import os
from pathlib import Path

import click

from corec_tasks.cli.blocks_cmd import blocks
from corec_tasks.cli.commands_cmd import commands
from corec_tasks.cli.config_cmd import config
from corec_tasks.cli.db_cmd import db
from corec_tasks.cli.demo_cmd import demo
from corec_tasks.cli.metrics_cmd import metrics
from corec_tasks.cli.services_cmd import services
from corec_tasks.cli.status_cmd import status
from corec_tasks.cli.streams_cmd import streams


class _CorecGroup(click.Group):
    """Adds the plugins' command groups on first use, not at import: a plugin's CLI
    module imports ``corec_tasks.cli.output``, so importing it here would be circular."""

    _plugins_added = False

    def _plugins(self) -> None:
        if not self._plugins_added:
            type(self)._plugins_added = True
            _add_plugin_commands(self)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._plugins()
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        self._plugins()
        return super().get_command(ctx, cmd_name)


@click.group(cls=_CorecGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="corec_config.json to use (default: $COREC_CONFIG or ./corec_config.json).",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the embedded servers live (default: $COREC_DATA_DIR or ./.corec).",
)
def main(config_path: Path | None, data_dir: Path | None) -> None:
    """CoreC: symbiotic blocks on Celery, Redis Streams and partitioned PostgreSQL.

    Servers come from REDIS_URL and DATABASE_URL; when unset, the embedded Redis
    and PostgreSQL that `corec services up` starts under .corec/ are used.
    """
    # Set in the environment so workers and beat started from here see the same.
    if config_path:
        os.environ["COREC_CONFIG"] = str(config_path)
    if data_dir:
        os.environ["COREC_DATA_DIR"] = str(data_dir)


for command in (config, services, db, streams, blocks, status, demo, metrics, commands):
    main.add_command(command)


def _add_plugin_commands(group: click.Group) -> None:
    """Command groups of the plugins shipped in this package (``corec capital ...``)."""
    from plugins.aaa.cli import users
    from plugins.capital_pool.cli import capital
    from plugins.core.cli import api
    from plugins.pipeline.cli import trading
    from plugins.portfolio.cli import portfolio

    for command in (users, capital, api, trading, portfolio):
        group.add_command(command)

__all__ = ["main"]
