"""Foundation tasks: health, stream persistence, partition upkeep.

Each is idempotent: a redelivered or doubled run changes nothing twice.
"""

from __future__ import annotations

import socket
from dataclasses import asdict, is_dataclass
from typing import Any

from corec_tasks.celery import app
from corec_tasks.settings import get_settings


@app.task(name="corec.ping")
def ping() -> dict[str, Any]:
    """Answer with this worker's node name (a cheap end-to-end check)."""
    return {"ok": True, "node": socket.gethostname()}


@app.task(name="corec.streams.persist", ignore_result=True)
def persist_streams(streams: list[str] | None = None, max_batches: int = 20) -> dict[str, Any]:
    """Move stream entries into PostgreSQL ``eventos`` (ack after commit)."""
    from corec_tasks.streams.persister import persist_once

    stats = persist_once(get_settings(), streams=streams, max_batches=max_batches)
    return asdict(stats) if is_dataclass(stats) and not isinstance(stats, type) else dict(stats)


@app.task(name="corec.db.partitions")
def partition_upkeep() -> dict[str, Any]:
    """Create the current month's partitions and the next ones; return what was created."""
    from corec_tasks.db import make_engine
    from corec_tasks.storage.partitions import ensure_partitions

    settings = get_settings()
    engine = make_engine(settings.database_url)
    try:
        created = ensure_partitions(engine, months_ahead=settings.env.partitions_ahead)
    finally:
        engine.dispose()
    return {"ok": True, "created": created}
