"""``corec plugins list|show NAME``: what each plugin brings."""

from __future__ import annotations

import click

from corec_tasks.cli.output import console, handle_errors, print_json, table
from corec_tasks.config import CorecConfig, PluginConfig
from corec_tasks.discovery import PluginSpec, available
from corec_tasks.errors import ConfigurationError
from corec_tasks.manifest import read_manifest
from corec_tasks.settings import Settings, load_env, load_settings


@click.group()
def plugins() -> None:
    """Plugins: found on COREC_PLUGIN_PATH, in plugins/, or by entry point."""


def _settings() -> Settings:
    """The configured settings; without a config file, an empty config (none enabled)."""
    env = load_env()
    if not env.config_path.exists():
        return Settings(env, CorecConfig(), env.config_path)
    return load_settings()


def _specs(settings: Settings) -> list[PluginSpec]:
    entries = {p.name: p for p in settings.config.plugins}
    out = []
    for name, folder in available(settings).items():
        entry = entries.get(name, PluginConfig(name=name, enabled=False))
        out.append(PluginSpec(entry, folder, read_manifest(folder)))
    return out


@plugins.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@handle_errors
def list_(as_json: bool) -> None:
    """Every plugin found, whether the config enables it, and what it brings."""
    from corec_tasks.plugin_info import describe

    specs = _specs(_settings())
    if as_json:
        print_json([describe(s) for s in specs])
        return
    rows = [(s.name, s.manifest.version, "yes" if s.entry.enabled else "no",
             len(s.manifest.tasks), ", ".join(c.rsplit(":", 1)[-1] for c in s.manifest.cli),
             len(s.manifest.beat) + len(s.manifest.consumers),
             ", ".join(s.manifest.channels.publishes), "yes" if s.manifest.migrations else "")
            for s in specs]  # fmt: skip
    columns = ["plugin", "version", "enabled", "task modules", "cli", "beat", "publishes",
               "migrations"]  # fmt: skip
    console.print(table("plugins", columns, rows))


@plugins.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@handle_errors
def show(name: str, as_json: bool) -> None:
    """What plugin NAME brings: tasks, streams, beat entries, migrations, blocks, commands."""
    from corec_tasks.plugin_info import describe

    found = {s.name: s for s in _specs(_settings())}
    if name not in found:
        raise ConfigurationError([(name, f"no such plugin (found: {', '.join(found)})")],
                                 "plugin name")  # fmt: skip
    info = describe(found[name])
    if as_json:
        print_json(info)
        return
    rows = [(k, _text(v)) for k, v in info.items()]
    console.print(table(f"plugin {name}", ["", ""], rows))


def _text(value: object) -> str:
    if isinstance(value, dict):
        return "\n".join(f"{k}: {_text(v)}" for k, v in value.items()) or "-"
    if isinstance(value, list):
        return "\n".join(_text(v) for v in value) or "-"
    return "-" if value is None or value == "" else str(value)
