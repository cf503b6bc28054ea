"""Celery tasks of the trading cycle.

``trading.cycle`` (beat, every ``global_latency`` minutes) prepares the cycle and fans
its assets out as Celery groups of ``trading.process_assets``, ``max_parallel_assets`` at
a time (one chord per wave; the wave's callback sends the next); ``trading.finish_cycle``
gathers every asset's stored result under the fixed task id ``trading-finish-<cycle>``,
so a client can wait for the whole cycle.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import psycopg
import redis
import sqlalchemy.exc
from celery import chord, group

from corec_tasks.celery import app
from corec_tasks.runtime import runtime
from plugins.pipeline.cycle import Trading, summarise
from plugins.trading import statistics

log = logging.getLogger(__name__)

#: Failures worth a retry: the database or Redis went away for a moment.
TRANSIENT = (psycopg.OperationalError, sqlalchemy.exc.OperationalError, redis.ConnectionError,
             redis.TimeoutError)  # fmt: skip


def trading() -> Trading:
    """This worker process's trading layer."""
    return runtime().service("pipeline.trading", lambda rt: Trading(rt.settings))


def finish_id(cycle: str) -> str:
    return f"trading-finish-{cycle}"


def waves(jobs: list[dict[str, Any]], size: int) -> list[list[dict[str, Any]]]:
    return [jobs[i : i + size] for i in range(0, len(jobs), size)]


def dispatch(
    cycle: str, jobs: list[dict[str, Any]], size: int, started: float | None = None
) -> str:
    """Send the first wave; return the id of the task that will hold the cycle's summary
    (its ``wall_s`` counts from ``started``, by default now)."""
    send_wave.apply(args=[cycle, waves(jobs, size), 0, jobs, started or time.time()])
    return finish_id(cycle)


@app.task(name="trading.cycle")
def cycle(key: str | None = None) -> dict[str, Any]:
    """One trading cycle: allocation, prediction, then every asset through the pipeline.

    Beat sends it without ``key``: the cycle is the current ``global_latency`` slot, so
    a second beat or a redelivery in the same slot trades nothing twice.
    """
    t = trading()
    started = time.time()
    slot = key or str(int(started // (60 * t.config.global_latency)))
    prepared = t.prepare(slot)
    dispatch(slot, prepared.jobs, t.config.max_parallel_assets, started)
    return {"ok": True, "cycle": slot, "assets": len(prepared.jobs),
            "predictions": prepared.predictions, "finish": finish_id(slot)}  # fmt: skip


@app.task(name="trading.send_wave")
def send_wave(cycle: str, all_waves: list[list[dict[str, Any]]], index: int,
              jobs: list[dict[str, Any]], started: float) -> None:  # fmt: skip
    """Send wave ``index`` as a group; its callback sends the next wave or finishes."""
    if index >= len(all_waves):
        finish_cycle.apply_async(args=[cycle, jobs, started], task_id=finish_id(cycle))
        return
    per_task = trading().config.assets_per_task
    wave = all_waves[index]
    body = group(process_assets.si(wave[i : i + per_task]) for i in range(0, len(wave), per_task))
    callback = send_wave.si(cycle, all_waves, index + 1, jobs, started)
    chord(body)(callback)


@app.task(bind=True, name="trading.process_assets")
def process_assets(self: Any, jobs: list[dict[str, Any]]) -> int:
    """``Trading.process_asset`` for a few assets in one message (Celery's per-task cost is
    milliseconds, like an asset's own work); a transient failure retries the message,
    and the assets already done replay their stored results."""
    t = trading()
    try:
        for job in jobs:
            t.process_asset(job)
    except TRANSIENT as exc:
        if self.request.retries < t.config.error_retry_count:
            delay = t.config.retry_backoff_s * 2**self.request.retries
            raise self.retry(exc=exc, countdown=delay) from exc
        log.error("trading: gave up on %d assets after %d retries: %s", len(jobs),
                  self.request.retries, exc)  # fmt: skip
    return len(jobs)


@app.task(name="trading.finish_cycle")
def finish_cycle(cycle: str, jobs: list[dict[str, Any]], started: float) -> dict[str, Any]:
    """The cycle's summary, from every asset's stored result."""
    t = trading()
    results = [t.stored(job) for job in jobs]
    summary = summarise(cycle, results, started)
    try:  # once per cycle: the rows are stamped with the cycle's start
        statistics.record(t.sessions, statistics.stamp(started),
                          statistics.trading_cycle(summary, results))  # fmt: skip
    except TRANSIENT as exc:
        log.warning("trading: cycle %s statistics not written: %s", cycle, exc)
    return summary
