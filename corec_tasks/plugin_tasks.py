"""The task that drives a consumer declared in a plugin's manifest.

``consumers: [{"stream", "group", "handler"}]`` in plugin.json becomes a beat entry
calling ``corec.plugins.consume``, which reads the group's new entries, validates each
against the stream's schema (an invalid one goes to the dead-letter stream with its
reason) and hands the payload to ``handler(settings, payload)``; an entry is
acknowledged after its handler returned, so one that raised stays pending.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

from corec_tasks.celery import app
from corec_tasks.discovery import resolve
from corec_tasks.settings import get_settings

log = logging.getLogger("corec_tasks.plugin_tasks")


@app.task(name="corec.plugins.consume", ignore_result=True)
def consume(plugin: str, stream: str, group: str, handler: str, count: int = 500) -> dict[str, Any]:
    """Hand the new entries of ``stream`` (consumer group ``group``) to ``handler``."""
    from corec_tasks.streams.bus import StreamBus
    from corec_tasks.streams.schemas import PayloadError, validate_payload

    settings = get_settings()
    call = resolve(handler, plugin)
    done = failed = dead = 0
    with StreamBus(settings) as bus:
        bus.ensure_group(stream, group)
        for entry in bus.read(stream, group, f"{plugin}-{socket.gethostname()}", count):
            try:
                payload = validate_payload(stream, entry.original_bytes())
            except PayloadError as exc:
                bus.dead_letter(stream, entry, exc.reason, 1, group=group)
                dead += 1
                continue
            try:
                call(settings, payload)
            except Exception:  # plugin code: the entry stays pending, the worker lives
                log.exception("plugin %s: handler %s failed on %s", plugin, handler, entry.id)
                failed += 1
                continue
            bus.ack(stream, group, [entry.id])
            done += 1
    return {"handled": done, "failed": failed, "dead_lettered": dead}
