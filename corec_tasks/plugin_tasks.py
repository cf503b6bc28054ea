"""The task beat sends for each consumer a plugin's manifest declares
(``corec_tasks/plugin_consumers.py`` runs the round)."""

from __future__ import annotations

from typing import Any

from corec_tasks.celery import app
from corec_tasks.plugin_consumers import consume_round
from corec_tasks.runtime import get_settings


@app.task(name="corec.plugins.consume", ignore_result=True)
def consume(plugin: str, stream: str, group: str, max_batches: int = 10) -> dict[str, Any]:
    """One consumer-loop round of the consumer ``plugin`` declares on ``stream`` for
    consumer group ``group``: the arguments name a declared consumer, never code."""
    return consume_round(get_settings(), plugin, stream, group, max_batches)
