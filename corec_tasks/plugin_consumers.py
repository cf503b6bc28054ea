"""A consumer declared in a plugin's manifest, run for one round of the one loop.

``consumers: [{"stream", "group", "handler"}]`` in plugin.json becomes a beat entry
calling ``corec.plugins.consume`` with the plugin, stream and group (the worker finds
the handler in its own reading of the manifests; no message names code): one round of
the consumer loop (``corec_tasks.streams.consumer``) whose handler validates each entry against the
stream's schema (an invalid one is dead-lettered with its reason) and hands the payload
to ``handler(settings, payload)``. The loop reclaims, isolates a poison entry, counts
deliveries and acks after the handler returned, as for every other consumer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from corec_tasks.discovery import enabled, resolve
from corec_tasks.errors import ConfigurationError
from corec_tasks.manifest import Consumer
from corec_tasks.runtime import runtime
from corec_tasks.settings import Settings
from corec_tasks.streams.bus import Entry, StreamBus
from corec_tasks.streams.consumer import ConsumerLoop
from corec_tasks.streams.handler import Done, EntryHandler, Handler, Verdict
from corec_tasks.streams.schemas import validate_payload
from corec_tasks.strict import StrictInputError, shown

#: Batches one round may read: a message cannot keep a worker in one round for ever.
MAX_BATCHES = 100


class ManifestHandler(EntryHandler):
    """A manifest's ``handler(settings, payload)`` as a handler of the consumer loop."""

    def __init__(self, settings: Settings, stream: str, group: str,
                 call: Callable[[Settings, dict[str, Any]], object]) -> None:  # fmt: skip
        self.settings, self.stream, self.group, self.call = settings, stream, group, call

    def handle(self, entry: Entry, deliveries: int) -> Verdict:
        """Validate (a PayloadError is poison: dead-lettered), then call the handler."""
        self.call(self.settings, validate_payload(self.stream, entry.original_bytes()))
        return Done()


def declared_consumer(settings: Settings, plugin: str, stream: str, group: str) -> Consumer:
    """The consumer the enabled plugin ``plugin`` declares on ``stream`` for ``group``,
    from this process's own reading of the manifests; a ConfigurationError otherwise.

    A task message names a consumer, never its code: whoever can write to the broker
    could otherwise have a worker import and call any ``module:attr`` (``sys:exit``
    killed a worker on every delivery)."""
    specs = runtime().per_config(settings, "enabled", enabled)
    for spec in specs:
        if spec.name == plugin:
            for consumer in spec.manifest.consumers:
                if consumer.stream == stream and consumer.group == group:
                    return consumer
    known = sorted(f"{s.name}/{c.stream}/{c.group}" for s in specs for c in s.manifest.consumers)
    raise ConfigurationError([(f"plugins.{plugin}.consumers",
                               f"no enabled plugin declares a consumer {plugin}/{stream}/{group} "
                               f"(declared: {', '.join(known) or 'none'})")])  # fmt: skip


def consume_round(settings: Settings, plugin: str, stream: str, group: str,
                  max_batches: int = 10) -> dict[str, Any]:  # fmt: skip
    """One consumer-loop round of the consumer ``plugin`` declares on ``stream`` for
    consumer group ``group`` (with ``loop``, its handler builds the loop's own handler,
    see ``manifest.Consumer``)."""
    if type(max_batches) is not int or not 1 <= max_batches <= MAX_BATCHES:
        raise StrictInputError(f"max_batches must be a whole number from 1 to {MAX_BATCHES}, "
                               f"got {shown(max_batches)}")  # fmt: skip
    consumer = declared_consumer(settings, plugin, stream, group)
    target = resolve(consumer.handler, plugin)
    loop_handler: Handler = (target(settings) if consumer.loop
                             else ManifestHandler(settings, stream, group, target))  # fmt: skip
    if loop_handler.group != group:
        problem = (f"plugins.{plugin}.consumers.{stream}.group",
                   f"{consumer.handler} consumes as group {loop_handler.group!r}, not {group!r}")
        raise ConfigurationError([problem])
    with StreamBus(settings) as bus:
        stats = ConsumerLoop(bus, loop_handler).run(stream, max_batches)
    return {"handled": stats.done, "failed": stats.failed, "dead_lettered": stats.dead_lettered}
