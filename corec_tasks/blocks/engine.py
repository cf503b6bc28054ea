"""The block engine: run blocks for a cycle against their Redis state, publish each
result on the ``block_results`` stream, and move those results into ``bloques``.

Idempotent per (block, cycle): a block records the last cycle it ran and what that
run published, in the same compare-and-set write as its new state. A redelivered
run of the same cycle therefore republishes the identical result instead of
running again, and ``bloques`` (primary key id, ciclo, timestamp) keeps one row.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
import redis

from corec_tasks.alerts import check_runs
from corec_tasks.blocks import feed
from corec_tasks.blocks.processors import ProcessorRegistry
from corec_tasks.blocks.store import BlockStore, StoredBlock, VersionConflict
from corec_tasks.db import libpq_url
from corec_tasks.metrics.counters import count_repairs
from corec_tasks.settings import Settings
from corec_tasks.streams.block_results import RESULTS_GROUP, persist_block_results
from corec_tasks.streams.names import BLOCK_RESULTS

log = logging.getLogger(__name__)

__all__ = ["RESULTS_GROUP", "Engine", "landed_stats", "persist_block_results"]
#: A run that loses its compare-and-set (a redirection moved entities meanwhile)
#: re-reads and runs again, at most this many times, then Celery retries the task.
CAS_ATTEMPTS = 10

F_DATA, F_INSTANCE, F_TIME, F_MESSAGES = b"d", b"i", b"t", b"m"


@dataclass
class Engine:
    """What a worker process needs to run blocks: settings, store, processors."""

    settings: Settings
    store: BlockStore
    registry: ProcessorRegistry

    @property
    def redis(self) -> redis.Redis:
        return self.store.r

    def run_blocks(self, block_ids: Sequence[str], cycle: int, ts: float) -> list[dict[str, Any]]:
        """Run ``block_ids`` for ``cycle`` (timestamp ``ts``); return their summaries."""
        pending = list(block_ids)
        summaries: list[dict[str, Any]] = []
        for attempt in range(CAS_ATTEMPTS):
            pending = self._attempt(pending, cycle, ts, summaries)
            if not pending:
                return summaries
            # Lost to a concurrent writer: back off a little, with jitter, and re-read.
            time.sleep(random.uniform(0, 0.002 * (attempt + 1)))
        raise VersionConflict(f"cycle {cycle}: blocks kept changing under the run: {pending}")

    def _attempt(
        self, block_ids: list[str], cycle: int, ts: float, summaries: list[dict[str, Any]]
    ) -> list[str]:
        # A block merged away since the cycle was dispatched has nothing left to run.
        loaded = self.store.load_many(block_ids, model=True, missing_ok=True)
        found = {s.block.id for s in loaded}
        summaries += [{"block_id": b, "cycle": cycle, "skipped": "merged"}
                      for b in block_ids if b not in found]  # fmt: skip
        ran: list[StoredBlock] = []
        republish: list[StoredBlock] = []
        fresh_models: set[str] = set()
        for stored in loaded:
            if stored.last_cycle == cycle:
                # Already run for this cycle (a redelivery): publish the same result again.
                # No result: split off in this cycle, its entities ran in their parent's.
                if stored.last_result is not None:
                    republish.append(stored)
                continue
            if stored.last_cycle > cycle:
                # A later cycle ran it first (this task came back late): running it now
                # would rewind the block, so it is not run, but it is said, not hidden.
                summaries.append({"block_id": stored.block.id, "cycle": cycle,
                                  "skipped": "overtaken",
                                  "overtaken_by": stored.last_cycle})  # fmt: skip
                continue
            block = stored.block
            had_model = bool(block.state)
            if block.spec.stream:
                # Payload entities: one stream entry each, from the round-robin cursor.
                got = feed.take(self.settings, self.store, stored)
                cursor = int(stored.feed.get("cursor", 0))
                result = block.run(cycle, self.registry, payloads=got.payloads, now=ts,
                                   window=(cursor, len(got.payloads)),
                                   entries=got.meta)  # fmt: skip
                n = len(block.entities)
                stored.feed = {"cursor": (cursor + len(got.ids)) % n if n else 0,
                               "entries": got.ids}  # fmt: skip
            else:
                result = block.run(cycle, self.registry, now=ts)
            fold_history(stored)  # the previous run joins the audit's baseline
            stored.last_cycle = cycle
            stored.last_result = result.to_dict()
            stored.last_messages = result.messages
            update_load(stored, result.load)
            ran.append(stored)
            if block.state and not had_model:
                fresh_models.add(block.id)
        won = self.store.write_many_pipelined(ran)
        lost = [s.block.id for s, ok in zip(ran, won, strict=True) if not ok]
        done = [s for s, ok in zip(ran, won, strict=True) if ok] + republish
        count_repairs(self.store, [s for s, ok in zip(ran, won, strict=True) if ok])
        for stored in done:
            if stored.block.id in fresh_models:
                self.store.save_model(stored.block.id, stored.block.state)
        # After the write that recorded them: an entry is acked once its run is durable.
        feed.ack(self.settings, self.redis, done)
        self.publish(done)
        written = [s for s, ok in zip(ran, won, strict=True) if ok]
        check_runs(self.settings, self.redis,
                   [(s.last_result or {}, s.block.spec.to_dict()) for s in written])  # fmt: skip
        summaries += [_summary(s) for s in done]
        return lost

    def publish(self, blocks: Sequence[StoredBlock]) -> None:
        """Append each block's last result to ``block_results`` (one round trip)."""
        if not blocks:
            return
        key = self.settings.key(BLOCK_RESULTS)
        instance = self.settings.instance_id.encode()
        now = b"%d" % (time.time() * 1000)
        pipe = self.redis.pipeline(transaction=False)
        for stored in blocks:
            data = json.dumps(stored.last_result, separators=(",", ":")).encode()
            fields: Any = {F_DATA: data, F_INSTANCE: instance, F_TIME: now,
                           F_MESSAGES: stored.last_messages}  # fmt: skip
            pipe.xadd(key, fields)  # no blind MAXLEN: the consumer round trims (StreamBus.trim)
        pipe.execute()


#: Weight of the newest run in a block's measured load (EWMA): an idle block's load
#: falls from 1.0 below sync's 0.2 donor bound in two cycles (1 -> 0.3 -> 0.09).
LOAD_ALPHA = 0.7
#: Weight of the newest run in a block's own fitness history (the audit's baseline).
HIST_ALPHA = 0.2


def update_load(stored: StoredBlock, load: float) -> None:
    """Fold one run's load (share of entities that had input and ran) into the EWMA."""
    prev = stored.load
    stored.load = round(load if prev is None else LOAD_ALPHA * load + (1 - LOAD_ALPHA) * prev, 6)


def fold_history(stored: StoredBlock) -> None:
    """Fold the block's last run (if it had input) into its own history: EWMA mean and
    variance of fitness and error rate. The audit compares the next run against it, so
    a run is never part of its own baseline."""
    r = stored.last_result
    if not r or not int(r.get("selected", 0)):
        return  # never ran, or an idle run: says nothing about how well it computes
    x = {"fit": float(r["fitness"]), "err": int(r["errors"]) / int(r["selected"])}
    h = dict(stored.hist)
    n = int(h.get("n", 0))
    for name, value in x.items():
        if n == 0:
            h[name], h[name + "_var"] = value, 0.0
            continue
        mean, var = float(h[name]), float(h[name + "_var"])
        diff = value - mean
        # West's exponentially weighted mean and variance.
        h[name] = round(mean + HIST_ALPHA * diff, 6)
        h[name + "_var"] = round((1 - HIST_ALPHA) * (var + HIST_ALPHA * diff * diff), 8)
    h["n"] = n + 1
    stored.hist = h


def _summary(stored: StoredBlock) -> dict[str, Any]:
    r = stored.last_result or {}
    return {k: r.get(k) for k in ("block_id", "cycle", "fitness", "errors", "num_entidades",
                                  "inputs")}  # fmt: skip


def landed_stats(settings: Settings, cycle: int, ts: float) -> tuple[int, float | None]:
    """Rows of ``cycle`` (dispatched at ``ts``) now in ``bloques``, and their mean fitness."""
    with psycopg.connect(libpq_url(settings.database_url)) as conn:
        row = conn.execute(
            "SELECT count(*), avg(fitness) FROM bloques WHERE ciclo = %s AND timestamp = %s",
            (cycle, ts),
        ).fetchone()
    if not row:
        return 0, None
    return int(row[0]), None if row[1] is None else float(row[1])
