"""What a plugin brings, and whether its own config is valid: for ``corec plugins``
and ``corec config check``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from corec_tasks.discovery import PluginSpec, enabled, resolve
from corec_tasks.errors import ConfigurationError, CorecError
from corec_tasks.settings import Settings


def read_own_config(path: Path) -> dict[str, Any]:
    """A plugin's own config file: JSON, or YAML for ``.yaml``/``.yml``."""
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    return data if isinstance(data, dict) else {}


def config_problems(settings: Settings, spec: PluginSpec) -> list[tuple[str, str]]:
    """Every problem of ``spec``'s own config file against its manifest's
    ``config_model``, each named ``plugins.NAME.config.<key>``; [] when valid."""
    where = f"plugins.{spec.name}"
    try:
        path = settings.plugin_config_file(spec.name)
        data = read_own_config(path) if path else {}
    except ConfigurationError as exc:
        return exc.problems
    except (OSError, ValueError) as exc:
        return [(f"{where}.config_path", f"cannot read: {exc}")]
    if spec.manifest.config_model is None:
        return []
    try:
        model = resolve(spec.manifest.config_model, spec.name)
    except CorecError as exc:
        return [(f"{where}: plugin.json config_model", str(exc))]
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return [(f"{where}: plugin.json config_model", "is no pydantic model")]
    try:
        model.model_validate(data)
    except ValidationError as exc:
        return [(".".join([f"{where}.config", *map(str, e["loc"])]),
                 str(e["msg"]).removeprefix("Value error, "))
                for e in exc.errors(include_url=False)]  # fmt: skip
    return []


def check_plugins(settings: Settings) -> list[PluginSpec]:
    """The enabled plugins, after checking each one's own config; a ConfigurationError
    lists every problem of every plugin."""
    specs = enabled(settings)
    problems = [p for spec in specs for p in config_problems(settings, spec)]
    if problems:
        raise ConfigurationError(problems, f"plugin configs of {settings.config_path}")
    return specs


def describe(spec: PluginSpec) -> dict[str, Any]:
    """What ``spec`` brings, as plain data."""
    m = spec.manifest
    return {
        "name": m.name,
        "version": m.version,
        "description": m.description,
        "folder": str(spec.folder),
        "enabled": spec.entry.enabled,
        "tasks": m.tasks,
        "routes": m.routes,
        "cli": m.cli,
        "beat": [e.model_dump() for e in m.beat],
        "publishes": m.channels.publishes,
        "consumes": m.channels.consumes,
        "schemas": m.schemas,
        "consumers": [c.model_dump() for c in m.consumers],
        "requires": m.requires,
        "migrations": str(spec.folder / m.migrations) if m.migrations else None,
        "metadata": m.metadata,
        "processors": m.processors,
        "blocks": m.blocks,
        "commands": m.commands,
        "config_model": m.config_model,
        "demo": m.demo.model_dump() if m.demo else None,
    }
