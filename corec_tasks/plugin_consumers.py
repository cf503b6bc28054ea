"""A consumer declared in a plugin's manifest, run for one round of the one loop.

``consumers: [{"stream", "group", "handler"}]`` in plugin.json becomes a beat entry
calling ``corec.plugins.consume``: one round of the consumer loop
(``corec_tasks.streams.consumer``) whose handler validates each entry against the
stream's schema (an invalid one is dead-lettered with its reason) and hands the payload
to ``handler(settings, payload)``. The loop reclaims, isolates a poison entry, counts
deliveries and acks after the handler returned, as for every other consumer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from corec_tasks.discovery import resolve
from corec_tasks.errors import ConfigurationError
from corec_tasks.settings import Settings
from corec_tasks.streams.bus import Entry, StreamBus
from corec_tasks.streams.consumer import ConsumerLoop
from corec_tasks.streams.handler import Done, EntryHandler, Handler, Verdict
from corec_tasks.streams.schemas import validate_payload


class ManifestHandler(EntryHandler):
    """A manifest's ``handler(settings, payload)`` as a handler of the consumer loop."""

    def __init__(self, settings: Settings, stream: str, group: str,
                 call: Callable[[Settings, dict[str, Any]], object]) -> None:  # fmt: skip
        self.settings, self.stream, self.group, self.call = settings, stream, group, call

    def handle(self, entry: Entry, deliveries: int) -> Verdict:
        """Validate (a PayloadError is poison: dead-lettered), then call the handler."""
        self.call(self.settings, validate_payload(self.stream, entry.original_bytes()))
        return Done()


def consume_round(settings: Settings, plugin: str, stream: str, group: str, handler: str,
                  max_batches: int = 10, loop: bool = False) -> dict[str, Any]:  # fmt: skip
    """One consumer-loop round of ``handler`` on ``stream`` for consumer group ``group``
    (``loop``: ``handler`` builds the loop's own handler, see ``manifest.Consumer``)."""
    target = resolve(handler, plugin)
    loop_handler: Handler = (target(settings) if loop
                             else ManifestHandler(settings, stream, group, target))  # fmt: skip
    if loop_handler.group != group:
        problem = (f"plugins.{plugin}.consumers.{stream}.group",
                   f"{handler} consumes as group {loop_handler.group!r}, not {group!r}")
        raise ConfigurationError([problem])
    with StreamBus(settings) as bus:
        stats = ConsumerLoop(bus, loop_handler).run(stream, max_batches)
    return {"handled": stats.done, "failed": stats.failed, "dead_lettered": stats.dead_lettered}
