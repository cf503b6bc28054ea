"""What the enabled plugins' manifests add to Celery, beat and the CLI.

``celeryconfig.py`` and ``beat_schedule.py`` call these with the enabled plugins
(``corec_tasks.discovery.enabled``); nothing here names a plugin.
"""

from __future__ import annotations

from typing import Any

import click

from corec_tasks.config import CHANNEL_QUEUES
from corec_tasks.discovery import PluginSpec, resolve
from corec_tasks.errors import ConfigurationError
from corec_tasks.manifest import BeatEntry
from corec_tasks.settings import Settings

#: The task that drives a manifest's consumer (corec_tasks/plugin_tasks.py).
CONSUME_TASK = "corec.plugins.consume"


def task_modules(specs: list[PluginSpec]) -> list[str]:
    """Celery ``include``: every enabled plugin's task modules."""
    return [module for spec in specs for module in spec.manifest.tasks]


def task_routes(specs: list[PluginSpec]) -> dict[str, dict[str, str]]:
    """Celery ``task_routes`` of the enabled plugins; a queue must be one of the channels'."""
    queues = set(CHANNEL_QUEUES.values())
    out: dict[str, dict[str, str]] = {}
    for spec in specs:
        for pattern, queue in spec.manifest.routes.items():
            if queue not in queues:
                key = f"plugins.{spec.name}: plugin.json routes.{pattern}"
                raise ConfigurationError([(key, f"unknown queue {queue!r} ({sorted(queues)})")])
            out[pattern] = {"queue": queue}
    return out


def _seconds(value: float | str, settings: Settings, where: str) -> float:
    if isinstance(value, int | float):
        if value <= 0:
            raise ConfigurationError([(where, f"must be > 0 seconds, got {value}")])
        return float(value)
    if value.startswith("env."):
        found = getattr(settings.env, value[4:], None)
        if not isinstance(found, int | float):
            raise ConfigurationError([(where, f"no numeric setting {value!r}")])
        return float(found)
    return float(resolve(value, where)(settings))


def beat_entry(entry: BeatEntry, settings: Settings, plugin: str) -> dict[str, Any]:
    """One Celery beat entry from a manifest's ``beat`` item."""
    where = f"plugins.{plugin}.beat.{entry.name}"
    every = _seconds(entry.every, settings, where)
    expires = max(10.0, every)
    if entry.expires is not None:
        expires = _seconds(entry.expires, settings, where)
    out: dict[str, Any] = {"task": entry.task, "schedule": every, "options": {"expires": expires}}
    if entry.args:
        out["args"] = list(entry.args)
    if entry.kwargs:
        out["kwargs"] = dict(entry.kwargs)
    return out


def beat_entries(settings: Settings, specs: list[PluginSpec]) -> dict[str, dict[str, Any]]:
    """Beat entries of the enabled plugins: their ``beat`` items and one per consumer."""
    out: dict[str, dict[str, Any]] = {}
    for spec in specs:
        for entry in spec.manifest.beat:
            out[entry.name] = beat_entry(entry, settings, spec.name)
        for consumer in spec.manifest.consumers:
            every = _seconds(consumer.every_s, settings,
                             f"plugins.{spec.name}.consumers.{consumer.stream}.every_s")
            out[f"consume-{spec.name}-{consumer.stream}-{consumer.group}"] = {
                "task": CONSUME_TASK,
                "schedule": every,
                "kwargs": {"plugin": spec.name, "stream": consumer.stream,
                           "group": consumer.group},
                "options": {"expires": max(10.0, 4 * every)},
            }  # fmt: skip
    return out


def cli_commands(specs: list[PluginSpec]) -> list[click.Command]:
    """The click groups the enabled plugins add to ``corec``."""
    out = []
    for spec in specs:
        for ref in spec.manifest.cli:
            command = resolve(ref, spec.name)
            if not isinstance(command, click.Command):
                problem = (f"plugins.{spec.name}.cli", f"{ref} is no click command")
                raise ConfigurationError([problem])
            out.append(command)
    return out


def stream_schemas(specs: list[PluginSpec]) -> dict[str, Any]:
    """Payload models of the enabled plugins' streams: stream -> pydantic model."""
    return {stream: resolve(ref, spec.name)
            for spec in specs for stream, ref in spec.manifest.schemas.items()}  # fmt: skip


def persisted_streams(specs: list[PluginSpec]) -> list[str]:
    """Streams the enabled plugins want landed in ``eventos``."""
    return [s for spec in specs for s in spec.manifest.persisted]
