"""Block-cycle statistics: ``trading.block_stats`` (beat, every minute) writes each
finished block cycle's figures to ``statistics``, stamped with the cycle's timestamp.

The framework records each cycle in Redis (``corec:cycle:<n>``: blocks, ran, persisted,
wall time) and lands its blocks in ``bloques``; this task reads both (the framework
imports no plugin, so the plugin comes to it). It looks at the last ``WINDOW`` cycles
and skips those already written, so a cycle finishing late is still counted and a
rerun writes nothing twice (``statistics.record``).

Keys: ``block.blocks``, ``block.ran``, ``block.persisted``, ``block.fitness`` (mean),
``block.load`` (mean ``carga``), ``block.errors`` (sum), ``block.redirected`` (entity
redirections sync made since the cycle before finished: each cycle's record keeps the
running total; 0 when that cycle's record is gone or predates the total), ``block.wall_s``.
"""

from __future__ import annotations

from typing import Any

import redis
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from corec_tasks.celery import app
from corec_tasks.redis_conn import redis_client
from corec_tasks.runtime import Runtime, get_settings, runtime
from corec_tasks.settings import Settings
from plugins.trading import statistics
from plugins.trading.db import make_trading_engine, session_factory
from plugins.trading.models import Statistics

#: How many of the latest cycles each run looks at.
WINDOW = 20

# One index probe per channel (ix_bloques_canal_timestamp), in the cycle's partition.
_ROWS = text("""
SELECT b.id, b.num_entidades, b.fitness, b.carga, b.errores
FROM generate_series(0, 255) AS c(canal)
CROSS JOIN LATERAL (
    SELECT id, num_entidades, fitness, carga, errores FROM bloques
    WHERE bloques.canal = c.canal AND bloques.timestamp = :ts AND bloques.ciclo = :n
) AS b
""")


def _db() -> tuple[Engine, sessionmaker[Session]]:
    return runtime().service("pipeline.block_stats_db", _new_db)


def _new_db(rt: Runtime) -> tuple[Engine, sessionmaker[Session]]:
    engine = make_trading_engine(rt.settings.database_url)
    return engine, session_factory(engine)


def _rows(sessions: sessionmaker[Session], cycle: int, ts: float) -> list[Any]:
    with sessions() as s:
        return list(s.execute(_ROWS, {"ts": ts, "n": cycle}).all())


def cycle_values(
    record: dict[str, str], rows: list[Any], previous: dict[str, str] | None
) -> dict[str, float]:
    """One cycle's figures from its Redis record and its ``bloques`` rows (and the
    previous cycle's record, for redirections)."""
    fitness = [float(r[2]) for r in rows if r[2] is not None]
    load = [float(r[3]) for r in rows if r[3] is not None]
    moved = 0
    if previous and "redirections" in previous and "redirections" in record:
        moved = max(0, int(record["redirections"]) - int(previous["redirections"]))
    return {
        "block.blocks": float(record.get("blocks", 0)),
        "block.ran": float(record.get("ran", 0)),
        "block.persisted": float(len(rows)),
        "block.fitness": sum(fitness) / len(fitness) if fitness else 0.0,
        "block.load": sum(load) / len(load) if load else 0.0,
        "block.errors": float(sum(int(r[4] or 0) for r in rows)),
        "block.redirected": float(moved),
        "block.wall_s": float(record.get("wall_s", 0.0)),
    }


def _s(x: bytes | str) -> str:
    return x.decode() if isinstance(x, bytes) else x


def write_block_stats(settings: Settings, r: redis.Redis,
                      sessions: sessionmaker[Session]) -> dict[str, int]:  # fmt: skip
    """Write the figures of every recent finished cycle not yet written."""
    last = r.get(settings.key("corec:cycle:last"))
    if last is None:
        return {"cycles": 0, "rows": 0}
    written = cycles = 0
    for n in range(max(1, int(last) - WINDOW + 1), int(last) + 1):
        raw = r.hgetall(settings.key(f"corec:cycle:{n}"))
        ts = r.get(settings.key(f"corec:cycle:ts:{n}"))
        if not raw or ts is None:
            continue  # not finished (yet), or forgotten
        at = statistics.stamp(float(ts))
        with sessions() as s:
            if s.query(Statistics.id).filter(Statistics.key == "block.wall_s",
                                             Statistics.timestamp == at).first():  # fmt: skip
                continue
        record = {_s(k): _s(v) for k, v in raw.items()}
        before: Any = r.hgetall(settings.key(f"corec:cycle:{n - 1}"))
        previous = {_s(k): _s(v) for k, v in before.items()}
        values = cycle_values(record, _rows(sessions, n, float(ts)), previous)
        written += statistics.record(sessions, at, values)
        cycles += 1
    return {"cycles": cycles, "rows": written}


@app.task(name="trading.block_stats", ignore_result=True)
def block_stats() -> dict[str, int]:
    """Beat: the latest block cycles' statistics, once each."""
    settings = get_settings()
    client = redis_client(settings)
    try:
        return write_block_stats(settings, client, _db()[1])
    finally:
        client.close()
