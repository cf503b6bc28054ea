"""The task that drives a consumer declared in a plugin's manifest.

``consumers: [{"stream", "group", "handler"}]`` in plugin.json becomes a beat entry
calling ``corec.plugins.consume``, which reads the group's new entries and hands each
payload to ``handler(settings, payload)``; an entry is acknowledged after its handler
returned, so one that raised is read again by the framework's stream consumer loop.
"""

from __future__ import annotations

import json
import socket
from typing import Any

from corec_tasks.celery import app
from corec_tasks.discovery import resolve
from corec_tasks.settings import get_settings


@app.task(name="corec.plugins.consume", ignore_result=True)
def consume(plugin: str, stream: str, group: str, handler: str, count: int = 500) -> dict[str, Any]:
    """Hand the new entries of ``stream`` (consumer group ``group``) to ``handler``."""
    from corec_tasks.streams.bus import StreamBus

    settings = get_settings()
    call = resolve(handler, plugin)
    done = failed = 0
    with StreamBus(settings) as bus:
        bus.ensure_group(stream, group)
        for entry in bus.read(stream, group, f"{plugin}-{socket.gethostname()}", count):
            try:
                call(settings, json.loads(entry.original_bytes()))
            except Exception:  # plugin code: the entry stays pending, the worker lives
                failed += 1
                continue
            bus.ack(stream, group, [entry.id])
            done += 1
    return {"handled": done, "failed": failed}
