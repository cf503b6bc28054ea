"""Move ``block_results`` entries into ``bloques``: a handler of the one consumer loop.

Consumer group ``corec_bloques``. PostgreSQL is connected before anything is claimed;
a batch is COPYed and committed, then acked; a malformed entry goes to
``corec_dead_letter`` with its reason, and a row PostgreSQL rejects is isolated by the
loop and dead-lettered alone. ``bloques``' primary key (id, ciclo, timestamp) makes a
redelivery insert nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import redis

from corec_tasks.db import libpq_url
from corec_tasks.settings import Settings
from corec_tasks.storage.writer import BlockRow, write_blocks
from corec_tasks.streams.bus import F_DATA, F_INSTANCE, StreamBus
from corec_tasks.streams.consumer import Batch, ConsumerLoop, Handler, Result, Unavailable
from corec_tasks.streams.names import BLOCK_RESULTS

#: Consumer group that moves block results into ``bloques``.
RESULTS_GROUP = "corec_bloques"
#: The block engine's extra field: the block's messages (zstd), stored as they are.
F_MESSAGES = b"m"


def block_row(fields: dict[bytes, bytes], default_instance: str) -> BlockRow:
    """The ``bloques`` row of a block result entry; KeyError/ValueError/TypeError if bad."""
    r = json.loads(fields[F_DATA])
    return BlockRow(
        id=str(r["block_id"]),
        ciclo=int(r["cycle"]),
        canal=int(r["canal"]),
        num_entidades=int(r["num_entidades"]),
        fitness=float(r["fitness"]),
        carga=float(r["carga"]),
        errores=int(r["errors"]),
        timestamp=float(r["timestamp"]),
        instance_id=(fields.get(F_INSTANCE) or default_instance.encode()).decode(),
        mensajes=fields.get(F_MESSAGES) or None,
    )


class BlockResultsHandler(Handler):
    """COPY a batch of block results into ``bloques``, commit, then let the loop ack."""

    group = RESULTS_GROUP

    def __init__(self, settings: Settings) -> None:
        self.url = libpq_url(settings.database_url)
        self.instance = settings.instance_id
        self.conn: psycopg.Connection[Any] | None = None

    @contextmanager
    def ready(self) -> Iterator[None]:
        """A PostgreSQL connection for the round, opened before anything is claimed."""
        try:
            self.conn = psycopg.connect(self.url, autocommit=True, connect_timeout=10)
        except psycopg.OperationalError as exc:
            raise Unavailable(f"cannot connect to PostgreSQL for bloques: {exc}") from exc
        try:
            yield
        finally:
            self.conn.close()
            self.conn = None

    def apply(self, prepared: Any) -> Result:
        batch: Batch = prepared
        assert self.conn is not None, "apply runs inside ready()"
        out = Result()
        rows = []
        for entry in batch.all():
            try:
                rows.append(block_row(dict(entry.fields), self.instance))
                out.done.append(entry.id)
            except (KeyError, ValueError, TypeError) as exc:
                out.dead.append((entry, f"malformed block result: {exc!r}"))
        with self.conn.transaction():
            out.counts["inserted"] = write_blocks(self.conn, rows)
        return out


def persist_block_results(
    settings: Settings,
    client: redis.Redis,
    *,
    consumer: str | None = None,
    batch: int = 1000,
    max_batches: int = 100,
    claim_idle_ms: int | None = None,
) -> dict[str, int]:
    """Move ``block_results`` entries into ``bloques``: COPY, COMMIT, then XACK.

    Stale pending entries (a consumer died) are reclaimed first; a malformed entry
    goes to ``corec_dead_letter`` with its reason. Safe to run concurrently. Returns
    ``read``, ``inserted``, ``dead_lettered`` (and ``deferred``: entries left for a
    PostgreSQL that is down, not counted as deliveries).
    """
    bus = StreamBus(settings, client)
    try:
        loop = ConsumerLoop(bus, BlockResultsHandler(settings), consumer, batch=batch,
                            claim_idle_ms=claim_idle_ms)  # fmt: skip
        s = loop.run(BLOCK_RESULTS, max_batches)
    finally:
        bus.close()
    return {"read": s.read, "inserted": s.counts["inserted"], "dead_lettered": s.dead_lettered,
            "deferred": s.deferred, "failed": s.failed}  # fmt: skip
