"""Redis Streams bus between plugins, and its persistence into PostgreSQL ``eventos``.

``names`` holds the seed's stream names, ``schemas`` one payload model per stream,
``bus`` the wire format and consumer-group plumbing, ``persister`` the
stream -> ``eventos`` mover (imported on demand: it needs PostgreSQL's driver).
"""

from __future__ import annotations

from corec_tasks.streams.bus import Entry, StreamBus
from corec_tasks.streams.names import DEAD_LETTER, PERSISTED
from corec_tasks.streams.schemas import PayloadError, schema_for, validate_payload

__all__ = [
    "DEAD_LETTER",
    "PERSISTED",
    "Entry",
    "PayloadError",
    "StreamBus",
    "schema_for",
    "validate_payload",
]
