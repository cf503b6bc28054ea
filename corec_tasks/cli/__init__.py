"""The ``corec`` command line: ``corec --help``.

Subcommands import what they use inside their functions, so ``corec --help`` and a
quick command do not pay for the Celery app, SQLAlchemy or the plugins (start-up
time; the framework has no import cycle, tests/unit/test_import_cycles.py).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import click

from corec_tasks.cli.blocks_cmd import blocks
from corec_tasks.cli.commands_cmd import commands
from corec_tasks.cli.config_cmd import config
from corec_tasks.cli.db_cmd import db
from corec_tasks.cli.demo_cmd import demo
from corec_tasks.cli.keys_cmd import keys
from corec_tasks.cli.metrics_cmd import metrics
from corec_tasks.cli.plugins_cmd import plugins
from corec_tasks.cli.services_cmd import services
from corec_tasks.cli.status_cmd import status
from corec_tasks.cli.streams_cmd import streams

log = logging.getLogger("corec_tasks.cli")


class _CorecGroup(click.Group):
    """Adds the enabled plugins' command groups (``cli`` in their plugin.json) on first
    use, not at import: the config file is known only once ``--config`` is parsed, and
    a plugin's CLI module imports ``corec_tasks.cli.output`` (circular at import)."""

    _plugins_added: str | None = None
    _plugin_names: list[str] = []  # noqa: RUF012  (replaced, never mutated)

    def _plugins(self) -> None:
        config = os.environ.get("COREC_CONFIG", "") + os.pathsep + os.environ.get(
            "COREC_PLUGIN_PATH", "")
        if self._plugins_added != config:
            for name in getattr(self, "_plugin_names", ()):
                self.commands.pop(name, None)
            added = _add_plugin_commands(self)
            self._plugin_names = added
            self._plugins_added = config

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._plugins()
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        self._plugins()
        return super().get_command(ctx, cmd_name)


def _set_config(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    """Eager, so ``corec --config X --help`` lists X's plugin groups."""
    if value:
        os.environ["COREC_CONFIG"] = str(value)
    return value


@click.group(cls=_CorecGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    is_eager=True,
    callback=_set_config,
    expose_value=True,
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


for command in (config, services, db, streams, blocks, status, demo, metrics, commands, plugins,
                keys):
    main.add_command(command)


def _add_plugin_commands(group: click.Group) -> list[str]:
    """Command groups of the enabled plugins (``corec capital ...``). Without a config
    file, every plugin that can be found; with a broken one, none (``corec config
    check`` names the problem)."""
    from corec_tasks.discovery import available, enabled
    from corec_tasks.errors import ConfigurationError
    from corec_tasks.manifest import read_manifest
    from corec_tasks.settings import load_settings
    from corec_tasks.wiring import cli_commands

    try:
        settings = load_settings()
        specs = enabled(settings)
    except ConfigurationError as exc:
        if not _config_absent():
            click.echo(f"warning: no plugin commands ({exc})", err=True)
            return []
        specs = _every_plugin(available, read_manifest)
    added = []
    for command in cli_commands(specs):
        if command.name and command.name not in group.commands:
            group.add_command(command)
            added.append(command.name)
    return added


def _config_absent() -> bool:
    return not Path(os.environ.get("COREC_CONFIG", "corec_config.json")).exists()


def _every_plugin(available: Any, read_manifest: Any) -> list[Any]:
    """Every plugin found, as if enabled (no config file says otherwise)."""
    from corec_tasks.config import CorecConfig, PluginConfig
    from corec_tasks.discovery import PluginSpec
    from corec_tasks.settings import Settings, load_env

    env = load_env()
    bare = Settings(env, CorecConfig(), env.config_path)
    out = []
    for name, folder in available(bare).items():
        try:
            out.append(PluginSpec(PluginConfig(name=name), folder, read_manifest(folder)))
        except Exception as exc:  # a broken manifest hides only its own commands
            log.debug("plugin %s skipped: %s", name, exc)
    return out

__all__ = ["main"]
