"""Every periodic job of CoreC, in one place: the framework's, then the enabled plugins'.

Intervals can be tuned from the environment and the config file; each entry expires if no worker
takes it in time, so a stopped cluster does not come back to a backlog of stale
runs. Every job is idempotent, so a second beat started by mistake doubles no effect.
"""

from typing import Any

from celery.schedules import crontab

from corec_tasks.discovery import PluginSpec, enabled
from corec_tasks.runtime import get_settings
from corec_tasks.settings import Settings
from corec_tasks.wiring import beat_entries


def build_beat_schedule(settings: Settings, plugins: list[PluginSpec]) -> dict[str, Any]:
    """The framework's periodic jobs, then the enabled plugins' (``beat`` and
    ``consumers`` in their plugin.json); a disabled plugin schedules nothing."""
    persist_every = settings.env.persist_every_s
    sync_every = settings.env.sync_every_s
    schedule: dict[str, Any] = {
        # Streams -> PostgreSQL `eventos`; consumer groups make concurrent runs safe.
        "persist-streams": {
            "task": "corec.streams.persist",
            "schedule": persist_every,
            "options": {"expires": max(10.0, 4 * persist_every)},
        },
        # Block results -> `bloques`, for any a cycle's chord callback did not land.
        "persist-block-results": {
            "task": "corec.blocks.persist",
            "schedule": persist_every,
            "options": {"expires": max(10.0, 4 * persist_every)},
        },
        # corec_commands -> the core's and the enabled plugins' handlers -> corec_responses,
        # answered once per id.
        "dispatch-commands": {
            "task": "corec.commands.dispatch",
            "schedule": 2.0,
            "options": {"expires": 10.0},
        },
        # Entity redirection, merge and split; then the audit over block metrics.
        "redirect-entities": {
            "task": "corec.blocks.redirect",
            "schedule": sync_every,
            "options": {"expires": sync_every},
        },
        "audit-blocks": {
            "task": "corec.blocks.audit",
            "schedule": sync_every,
            "options": {"expires": sync_every},
        },
        # Partition upkeep: the current month and the next ones, daily and idempotent.
        "partition-upkeep": {
            "task": "corec.db.partitions",
            "schedule": crontab(minute="7", hour="0"),
            "options": {"expires": 3600},
        },
    }
    # Block cycles, one entry per distinct block interval (`intervalo_s`, default 300 s).
    for interval in sorted({b.intervalo_s for b in settings.config.all_blocks()}):
        schedule[f"block-cycle-{interval:g}s"] = {
            "task": "corec.blocks.cycle",
            "schedule": interval,
            "kwargs": {"interval": interval, "chunk": settings.env.block_chunk},
            "options": {"expires": interval},
        }
    plugin_entries = beat_entries(settings, plugins)
    clash = sorted(set(schedule) & set(plugin_entries))
    if clash:
        from corec_tasks.errors import ConfigurationError

        raise ConfigurationError([("beat", f"plugin entries reuse framework names: {clash}")])
    schedule.update(plugin_entries)
    return schedule


def current() -> dict[str, Any]:
    """The schedule of this process's settings (celeryconfig builds the same)."""
    settings = get_settings()
    return build_beat_schedule(settings, enabled(settings))
