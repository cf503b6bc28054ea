"""Celery tasks of the block engine. Each is idempotent per (block, cycle) or per slot."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
import redis
from celery.exceptions import Reject

from corec_tasks.blocks.cycle import (
    DEFAULT_CHUNK,
    FINISH_CYCLE,
    RUN_CHUNK,
    close_cycle,
    rescue_stalled,
)
from corec_tasks.blocks.engine import landed_stats, persist_block_results
from corec_tasks.blocks.processors import ProcessorUnavailable
from corec_tasks.blocks.store import VersionConflict
from corec_tasks.celery import app
from corec_tasks.commands import drain, registry_for
from corec_tasks.metrics.counters import TOTALS
from corec_tasks.nucleus import worker_nucleus
from corec_tasks.streams.bus import StreamBus
from corec_tasks.streams.names import ALERTS

log = logging.getLogger(__name__)
T = TypeVar("T")

#: A server that is down or unreachable: the task is retried later, not failed, since
#: a failed chunk would fail the whole cycle's chord and lose its blocks.
CONNECTION_ERRORS: tuple[type[Exception], ...] = (
    redis.ConnectionError, redis.TimeoutError, psycopg.OperationalError,
    ProcessorUnavailable)  # fmt: skip
#: Retries on a connection error, with backoff 1, 2, 4 ... capped at 30 s (~6 minutes).
CONNECTION_RETRIES = 15


def with_retry(task: Any, fn: Callable[[], T]) -> T:
    """Run ``fn``; on a connection error, have Celery retry ``task`` with backoff.

    If the retry cannot be published either (the broker is the Redis that is down),
    the message is requeued rather than dropped: failing that too, it stays
    unacknowledged, no longer refreshed, and a live worker's sweep requeues it.
    """
    try:
        return fn()
    except CONNECTION_ERRORS as exc:
        countdown = min(30.0, 2.0 ** task.request.retries)
        log.warning("%s: %r; retry %d in %.0fs", task.name, exc, task.request.retries + 1,
                    countdown)  # fmt: skip
        try:
            raise task.retry(exc=exc, countdown=countdown, max_retries=CONNECTION_RETRIES)
        except Reject as rejected:
            raise Reject(rejected.reason, requeue=True) from exc


@app.task(
    name=RUN_CHUNK,
    bind=True,
    autoretry_for=(VersionConflict,),
    retry_backoff=0.2,
    max_retries=8,
)
def run_chunk(self: Any, block_ids: list[str], cycle: int, ts: float) -> list[dict[str, Any]]:
    """Run several blocks for one cycle; a redelivery republishes, never reruns."""
    return with_retry(self, lambda: worker_nucleus().engine.run_blocks(block_ids, cycle, ts))


#: How long the chord callback waits for results another persister holds in flight.
LAND_WAIT_S = 10.0


@app.task(name=FINISH_CYCLE, bind=True)
def finish_cycle(
    self: Any, results: list[list[dict[str, Any]]], cycle: int, blocks: int, started: float,
    ts: float, rescue: dict[str, Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Chord callback: land the cycle's results in ``bloques`` and record the cycle.

    Beat's persister shares the consumer group, so some results may be in its hands;
    the callback waits (briefly) until every result of the cycle is in ``bloques``.
    A cycle whose blocks did not all land (a task came back after later cycles had
    run its blocks) is recorded ``complete: false`` and raises one alert.

    ``rescue`` (from :func:`corec_tasks.blocks.cycle.rescue_stalled`): ``results`` are only the
    blocks sent again, so the record counts what landed in ``bloques`` instead.
    """
    return with_retry(self, lambda: _finish(results, cycle, blocks, started, ts, rescue))


def _finish(
    results: list[list[dict[str, Any]]], cycle: int, blocks: int, started: float, ts: float,
    rescue: dict[str, Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    n = worker_nucleus()
    summaries = [s for chunk in results for s in chunk]
    done = [s for s in summaries if not s.get("skipped")]
    overtaken = sorted(s["block_id"] for s in summaries if s.get("skipped") == "overtaken")
    merged = sum(1 for s in summaries if s.get("skipped") == "merged")
    if rescue is not None:
        merged += int(rescue.get("merged", 0))
    # Rows to wait for: the chord's own blocks, or (a rescue) every block of the cycle.
    expected = len(done) if rescue is None else blocks - merged - len(overtaken)
    deadline = time.monotonic() + LAND_WAIT_S
    while True:
        persist_block_results(n.settings, n.store.r)
        rows, mean = landed_stats(n.settings, cycle, ts)
        if rows >= expected or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    fitness = [float(s["fitness"]) for s in done if s.get("fitness") is not None]
    # An overtaken block may still have landed, if it ran for this cycle before the
    # later one: complete means every block that still exists is in ``bloques``.
    complete = rows + merged >= blocks
    record: dict[str, Any] = {
        "cycle": cycle,
        "blocks": blocks,
        "ran": len(done) if rescue is None else rows,
        "persisted": rows,
        "overtaken": len(overtaken),
        "complete": complete,
        "mean_fitness": round(sum(fitness) / len(fitness), 4) if fitness else None,
        "wall_s": round(time.time() - started, 4),
        # Entity redirections so far (a running total): the difference between two
        # cycles' records is what sync moved in between (plugins' cycle statistics).
        "redirections": int(n.store.r.hget(n.settings.key(TOTALS), "redirections") or 0),
    }
    if rescue is not None:
        record["rescued"] = int(rescue.get("blocks", 0))
        record["mean_fitness"] = None if mean is None else round(mean, 4)
    key = n.settings.key(f"corec:cycle:{cycle}")
    n.store.r.hset(key, mapping={k: str(v) for k, v in record.items()})
    n.store.r.expire(key, 7 * 86400)
    n.store.r.set(n.settings.key("corec:cycle:last"), cycle)
    close_cycle(n.settings, n.store.r, cycle, complete)
    if not complete:
        _alert_incomplete(n, record, overtaken, (rescue or {}).get("never_ran", []))
    return record


def _alert_incomplete(
    n: Any, record: dict[str, Any], overtaken: list[str], never_ran: list[str]
) -> None:
    """One ``corec_alerts`` error per incomplete cycle (a marker dedups a rerun)."""
    cycle = record["cycle"]
    if not n.store.r.set(n.settings.key(f"corec:cycle:alerted:{cycle}"), 1, nx=True,
                         ex=7 * 86400):  # fmt: skip
        return
    missing = record["blocks"] - record["persisted"]
    shown = ", ".join(overtaken[:10]) + (" ..." if len(overtaken) > 10 else "")
    message = (f"cycle {cycle} incomplete: {missing} of {record['blocks']} blocks not in "
               f"bloques; {len(overtaken)} overtaken by later cycles ({shown})")  # fmt: skip
    if never_ran:
        message += (f"; {len(never_ran)} never ran after every rescue "
                    f"({', '.join(never_ran[:10])}{' ...' if len(never_ran) > 10 else ''})")
    log.error("[cycle] %s", message)
    StreamBus(n.settings, n.store.r).publish(ALERTS, {
        "level": "error", "source": "cycle", "message": message, "cycle": cycle,
        "blocks": record["blocks"], "persisted": record["persisted"],
        "overtaken": overtaken[:100], "never_ran": never_ran[:100]})  # fmt: skip


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
def persist() -> dict[str, Any]:
    """Safety net on beat: land any block result a chord callback did not, and send
    again the blocks of a cycle whose task messages the broker lost."""
    n = worker_nucleus()
    report: dict[str, Any] = dict(persist_block_results(n.settings, n.store.r))
    report["rescue"] = rescue_stalled(n.settings, n.store.r, n.store, n.plugin_groups)
    return report


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


@app.task(name="corec.commands.dispatch", ignore_result=True)
def dispatch_commands() -> dict[str, int]:
    """Answer what arrived on ``corec_commands`` (beat runs this every few seconds)."""
    n = worker_nucleus()
    return drain(n.settings, n.store.r, registry_for(n))
