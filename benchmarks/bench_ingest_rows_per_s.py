"""Stream -> PostgreSQL ingest: ``persist_once`` with the COPY writer vs row-by-row inserts.

Each run publishes ``N`` market_data messages to a fresh stream, then times the whole
persister path, which runs on the one consumer loop (``corec_tasks.streams.consumer``):
connect, XAUTOCLAIM, XREADGROUP, schema validation, ``write_events`` (the storage
layer's idempotent COPY writer), COMMIT, XACK, trim. The baseline is the same path
with ``executemany_events`` as the writer. ``eventos`` is emptied before each timed
pass. Both use the same batch size (``BENCH_INGEST_BATCH``, default 5,000).

Two lines: ``ingest_rows_per_s`` (rows/s) and ``ingest_cpu_us_per_row`` (this
process's CPU time per row, all threads; Redis and PostgreSQL excluded), each with
the executemany baseline beside it.
"""

from __future__ import annotations

import os
import time

import psycopg

from benchmarks._common import RUNS, bench_env, emit, sized
from corec_tasks.db import libpq_url
from corec_tasks.settings import Settings, load_settings
from corec_tasks.storage.migrate import upgrade
from corec_tasks.storage.writer import executemany_events, write_events
from corec_tasks.streams.bus import StreamBus
from corec_tasks.streams.persister import Writer, persist_once
from plugins.trading.channels import MARKET_DATA

N = sized("BENCH_INGEST_N", 100_000, 5_000)
#: Entries per XREADGROUP and per transaction. Larger batches amortise the commit
#: (a WAL flush) and the round trips; 5,000 measured best here (1,000: ~25% slower).
BATCH = os.environ.get("BENCH_INGEST_BATCH", "5000")


def _payloads(n: int) -> list[dict[str, object]]:
    return [
        {"symbol": "BTCUSDT", "price": 35_000.0 + (i % 1000) / 100, "volume": 1.5, "seq": i}
        for i in range(n)
    ]


def _pass(
    settings: Settings, payloads: list[dict[str, object]], writer: Writer
) -> tuple[float, float]:
    """Publish, then time stream -> eventos; return (rows/s, CPU us per row)."""
    with psycopg.connect(libpq_url(settings.database_url), autocommit=True) as conn:
        conn.execute("TRUNCATE eventos")
    with StreamBus(settings) as bus:
        bus.publish_many(MARKET_DATA, payloads)
    t0, c0 = time.perf_counter(), time.process_time()
    stats = persist_once(
        settings, streams=[MARKET_DATA], consumer="bench", max_batches=1_000_000, writer=writer
    )
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    if stats.inserted != len(payloads):
        raise RuntimeError(f"expected {len(payloads)} rows, inserted {stats.inserted}: {stats}")
    return stats.inserted / elapsed, cpu * 1e6 / stats.inserted


def main() -> None:
    """Median rows/s of the COPY path and of the executemany baseline."""
    old_batch = os.environ.get("COREC_STREAM_BATCH")
    os.environ["COREC_STREAM_BATCH"] = BATCH
    try:
        with bench_env() as env:
            upgrade(env.database_url)
            payloads = _payloads(N)
            copy: list[tuple[float, float]] = []
            many: list[tuple[float, float]] = []
            for run in range(RUNS):
                # Fresh stream keys for every pass (the prefix is cleaned by bench_env).
                os.environ["COREC_REDIS_PREFIX"] = f"{env.prefix}copy{run}:"
                copy.append(_pass(load_settings(), payloads, write_events))
                os.environ["COREC_REDIS_PREFIX"] = f"{env.prefix}many{run}:"
                many.append(_pass(load_settings(), payloads, executemany_events))
            emit("ingest_rows_per_s", [c[0] for c in copy], "rows/s", [m[0] for m in many])
            emit("ingest_cpu_us_per_row", [c[1] for c in copy], "us/row", [m[1] for m in many])
    finally:
        if old_batch is None:
            os.environ.pop("COREC_STREAM_BATCH", None)
        else:
            os.environ["COREC_STREAM_BATCH"] = old_batch


if __name__ == "__main__":
    main()
