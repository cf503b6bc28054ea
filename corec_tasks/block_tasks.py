"""Celery tasks of the block engine. Each is idempotent per (block, cycle) or per slot."""

from __future__ import annotations

import time
from typing import Any

from corec_tasks.block_store import VersionConflict
from corec_tasks.celery import app
from corec_tasks.cycle import DEFAULT_CHUNK
from corec_tasks.engine import landed, persist_block_results
from corec_tasks.nucleus import worker_nucleus


@app.task(
    name="corec.blocks.run_chunk",
    autoretry_for=(VersionConflict,),
    retry_backoff=0.2,
    max_retries=8,
)
def run_chunk(block_ids: list[str], cycle: int, ts: float) -> list[dict[str, Any]]:
    """Run several blocks for one cycle; a redelivery republishes, never reruns."""
    return worker_nucleus().engine.run_blocks(block_ids, cycle, ts)


#: How long the chord callback waits for results another persister holds in flight.
LAND_WAIT_S = 10.0


@app.task(name="corec.blocks.finish_cycle")
def finish_cycle(
    results: list[list[dict[str, Any]]], cycle: int, blocks: int, started: float, ts: float
) -> dict[str, Any]:
    """Chord callback: land the cycle's results in ``bloques`` and record the cycle.

    Beat's persister shares the consumer group, so some results may be in its hands;
    the callback waits (briefly) until every result of the cycle is in ``bloques``.
    """
    n = worker_nucleus()
    summaries = [s for chunk in results for s in chunk]
    deadline = time.monotonic() + LAND_WAIT_S
    while True:
        persist_block_results(n.settings, n.store.r)
        rows = landed(n.settings, cycle, ts)
        if rows >= len(summaries) or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    fitness = [float(s["fitness"]) for s in summaries if s.get("fitness") is not None]
    record = {
        "cycle": cycle,
        "blocks": blocks,
        "ran": len(summaries),
        "persisted": rows,
        "mean_fitness": round(sum(fitness) / len(fitness), 4) if fitness else None,
        "wall_s": round(time.time() - started, 4),
    }
    n.store.r.hset(n.settings.key(f"corec:cycle:{cycle}"), mapping={
        k: str(v) for k, v in record.items()})  # fmt: skip
    n.store.r.expire(n.settings.key(f"corec:cycle:{cycle}"), 7 * 86400)
    n.store.r.set(n.settings.key("corec:cycle:last"), cycle)
    return record


@app.task(name="corec.blocks.cycle", bind=True)
def cycle(self: Any, interval: float | None = None, chunk: int = DEFAULT_CHUNK) -> dict[str, Any]:
    """Register blocks if needed and dispatch one cycle (beat calls this per interval)."""
    n = worker_nucleus()
    if n.store.count() == 0:
        n.modules["registry"].run()
    result: dict[str, Any] = n.modules["execution"].run(
        dispatch_id=self.request.id, chunk=chunk, interval=interval
    )
    return result


@app.task(name="corec.blocks.persist", ignore_result=True)
def persist() -> dict[str, int]:
    """Safety net on beat: land any block result a chord callback did not."""
    n = worker_nucleus()
    return persist_block_results(n.settings, n.store.r)


def _exclusive(module: str) -> dict[str, Any]:
    """Run a module with a cluster-wide lock: two overlapping sync passes would stay
    correct but move twice as much."""
    n = worker_nucleus()
    lock = n.store.r.lock(n.settings.key(f"corec:lock:{module}"), timeout=600,
                          blocking=False)  # fmt: skip
    if not lock.acquire():
        return {"skipped": f"another {module} pass is running"}
    try:
        report: dict[str, Any] = n.modules[module].run()
        return report
    finally:
        lock.release()


@app.task(name="corec.blocks.redirect")
def redirect() -> dict[str, Any]:
    """The sync module: split, merge and redirect entities (every 5 minutes)."""
    return _exclusive("sync")


@app.task(name="corec.blocks.audit")
def audit() -> dict[str, Any]:
    """The audit module: IsolationForest over block metrics, alerts on corec_alerts."""
    return _exclusive("audit")
