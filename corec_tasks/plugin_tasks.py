"""The task beat sends for each consumer a plugin's manifest declares
(``corec_tasks/plugin_consumers.py`` runs the round)."""

from __future__ import annotations

from typing import Any

from corec_tasks.celery import app
from corec_tasks.plugin_consumers import consume_round
from corec_tasks.runtime import get_settings


@app.task(name="corec.plugins.consume", ignore_result=True)
def consume(plugin: str, stream: str, group: str, handler: str,
            max_batches: int = 10, loop: bool = False) -> dict[str, Any]:  # fmt: skip
    """One consumer-loop round of ``handler`` on ``stream`` for consumer group ``group``."""
    return consume_round(get_settings(), plugin, stream, group, handler, max_batches, loop)
