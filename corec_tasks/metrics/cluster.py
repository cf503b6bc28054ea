"""The framework's metrics, read from Redis at scrape time.

Nothing here runs in a worker: each scrape reads what the cluster already keeps in
Redis (block records, cycle records, the unacked index, streams, the beat lock, the
counters of :mod:`corec_tasks.metrics.counters`). Blocks are aggregated per group,
never one series per entity, nor per block (a split can add blocks without bound).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from corec_tasks.blocks.cycle import INCOMPLETE_CYCLES, OPEN_CYCLES
from corec_tasks.blocks.store import BlockStore
from corec_tasks.metrics import counters
from corec_tasks.redis_conn import redis_client
from corec_tasks.settings import Settings
from corec_tasks.streams.names import ALL, DEAD_LETTER
from corec_tasks.unacked import unacked_stats

#: Blocks below this fitness are redirection donors (sync's DONOR_MAX_FITNESS).
LOW_FITNESS = 0.3


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _gauge(name: str, doc: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels)


class ClusterMetrics:
    """Blocks, cycles, unacked tasks, streams, dead letters and the beat leader."""

    def __init__(self, settings: Settings, client: redis.Redis | None = None) -> None:
        self.settings = settings
        self.r = client or redis_client(settings, socket_timeout=5.0, socket_connect_timeout=5.0)
        self.store = BlockStore(settings, self.r)
        # Dead letters per source stream, counted incrementally from the stream's start:
        # the dead-letter stream is never trimmed, so a restart recounts the same totals.
        self._dead_after = "0-0"
        self._dead_by_stream: dict[str, int] = {}

    def collect(self) -> Iterator[Metric]:
        """Every framework family, one Redis pass per part."""
        groups: list[str] = []
        yield from self._blocks(groups)
        yield from self._totals(groups)
        yield from self._cycles()
        yield from self._unacked()
        yield from self._streams()
        yield from self._dead_letters()
        yield from self._beat()

    # -- blocks --------------------------------------------------------------------

    def _blocks(self, seen: list[str]) -> Iterator[Metric]:
        groups: dict[str, dict[str, float]] = {}
        for meta in self.store.metas():
            spec = meta.get("spec") or {}
            g = groups.setdefault(str(spec.get("group", "?")), {
                "blocks": 0, "entities": 0, "fit_sum": 0.0, "fit_min": 1.0, "low": 0,
                "load_sum": 0.0, "errors": 0, "repaired": 0, "selected": 0})  # fmt: skip
            fitness = float(meta.get("fitness", 1.0))
            last = meta.get("last_result") or {}
            g["blocks"] += 1
            g["entities"] += int(meta.get("num_entidades", 0))
            g["fit_sum"] += fitness
            g["fit_min"] = min(g["fit_min"], fitness)
            g["low"] += fitness < LOW_FITNESS
            g["load_sum"] += float(spec.get("carga", 0.0))
            g["errors"] += int(last.get("errors") or 0)
            g["repaired"] += int(last.get("repaired") or 0)
            g["selected"] += int(last.get("selected") or 0)
        fams = {
            "blocks": _gauge("corec_blocks", "Registered blocks per group.", ["group"]),
            "entities": _gauge("corec_block_entities", "Entities per block group.", ["group"]),
            "fit": _gauge("corec_block_fitness_mean_ratio",
                          "Mean block fitness (0..1) per group.", ["group"]),
            "fit_min": _gauge("corec_block_fitness_min_ratio",
                              "Lowest block fitness (0..1) per group.", ["group"]),
            "low": _gauge("corec_blocks_low_fitness",
                          f"Blocks with fitness below {LOW_FITNESS} (redirection donors).",
                          ["group"]),
            "load": _gauge("corec_block_load_ratio",
                           "Mean configured load (carga, share of entities run per cycle).",
                           ["group"]),
            "selected": _gauge("corec_block_last_run_entities",
                               "Entities run in each block's last run, summed per group.",
                               ["group"]),
            "errors": _gauge("corec_block_last_run_errors",
                             "Entity errors in each block's last run, summed per group.",
                             ["group"]),
            "repaired": _gauge("corec_block_last_run_self_repairs",
                               "Entities self-repaired in each block's last run, per group.",
                               ["group"]),
        }  # fmt: skip
        seen += sorted(groups)
        for name, g in sorted(groups.items()):
            n = g["blocks"] or 1
            values = {"blocks": g["blocks"], "entities": g["entities"], "fit": g["fit_sum"] / n,
                      "fit_min": g["fit_min"], "low": g["low"], "load": g["load_sum"] / n,
                      "selected": g["selected"], "errors": g["errors"],
                      "repaired": g["repaired"]}  # fmt: skip
            for key, fam in fams.items():
                fam.add_metric([name], float(values[key]))
        yield from fams.values()

    def _totals(self, groups: list[str]) -> Iterator[Metric]:
        totals = counters.read(self.r, self.settings.key(counters.TOTALS))
        for group in groups:  # a group with no repair yet shows 0, not nothing
            totals.setdefault(counters.REPAIRS + group, 0)
        repairs = CounterMetricFamily("corec_block_self_repairs",
                                      "Entities replaced by self-repair, per group.",
                                      labels=["group"])  # fmt: skip
        for field, n in sorted(totals.items()):
            if field.startswith(counters.REPAIRS):
                repairs.add_metric([field[len(counters.REPAIRS):]], n)
        yield repairs
        for field, name, doc in (
            ("redirections", "corec_redirections", "Entity redirections between blocks."),
            ("redirected_entities", "corec_redirected_entities", "Entities redirected."),
            ("merges", "corec_block_merges", "Blocks merged into another."),
            ("splits", "corec_block_splits", "Blocks split in two."),
        ):
            yield CounterMetricFamily(name, doc, value=totals.get(field, 0))

    # -- cycles and delivery ---------------------------------------------------------

    def _cycles(self) -> Iterator[Metric]:
        k = self.settings.key
        pipe = self.r.pipeline(transaction=False)
        pipe.get(k("corec:cycle:last"))
        pipe.get(k("corec:cycle:seq"))
        pipe.zcard(k(OPEN_CYCLES))
        pipe.zcount(k(OPEN_CYCLES), "-inf", time.time() - self.settings.env.cycle_overdue_s)
        pipe.zcard(k(INCOMPLETE_CYCLES))
        last, seq, open_n, overdue, incomplete = pipe.execute()
        yield CounterMetricFamily("corec_cycles_dispatched", "Cycles dispatched.",
                                  value=int(seq or 0))  # fmt: skip
        yield GaugeMetricFamily("corec_cycles_open", "Cycles dispatched, not yet finished.",
                                value=int(open_n))  # fmt: skip
        yield GaugeMetricFamily(
            "corec_cycles_overdue",
            f"Cycles unfinished after cycle_overdue_s ({self.settings.env.cycle_overdue_s} s).",
            value=int(overdue))  # fmt: skip
        yield GaugeMetricFamily("corec_cycles_incomplete",
                                "Cycles finished without every block in bloques (last 7 days).",
                                value=int(incomplete))  # fmt: skip
        if last is None:
            return
        number = int(last)
        pipe.hgetall(k(f"corec:cycle:{number}"))
        pipe.get(k(f"corec:cycle:ts:{number}"))
        record_raw, ts = pipe.execute()
        record = {_s(a): _s(b) for a, b in record_raw.items()}
        wall = float(record.get("wall_s", 0.0))
        for name, doc, value in (
            ("corec_cycle_last_number", "Number of the last finished cycle.", number),
            ("corec_cycle_last_wall_seconds", "Wall time of the last finished cycle.", wall),
            ("corec_cycle_last_blocks", "Blocks in the last finished cycle.",
             int(record.get("blocks", 0))),
            ("corec_cycle_last_ran_blocks", "Blocks that ran in the last finished cycle.",
             int(record.get("ran", 0))),
            ("corec_cycle_last_persisted_blocks",
             "Blocks of the last finished cycle landed in bloques.",
             int(record.get("persisted", 0))),
            ("corec_cycle_last_complete", "1 if the last finished cycle was complete.",
             int(record.get("complete") == "True")),
            ("corec_cycle_last_finished_timestamp_seconds",
             "When the last cycle finished (its dispatch time plus its wall time).",
             float(ts) + wall if ts is not None else 0.0),
        ):  # fmt: skip
            yield GaugeMetricFamily(name, doc, value=value)

    def _unacked(self) -> Iterator[Metric]:
        if self.settings.env.broker_url:
            return  # another broker (RabbitMQ) keeps its own unacked count
        u = unacked_stats(self.r, self.settings.redis_prefix,
                          self.settings.env.visibility_timeout_s)  # fmt: skip
        yield GaugeMetricFamily("corec_celery_unacked_tasks",
                                "Celery tasks delivered, not acknowledged.",
                                value=u["count"])  # fmt: skip
        yield GaugeMetricFamily("corec_celery_unacked_stale_tasks",
                                "Unacked tasks older than the visibility timeout "
                                "(worker gone; a sweep requeues them).", value=u["stale"])
        yield GaugeMetricFamily("corec_celery_unacked_oldest_age_seconds",
                                "Age of the oldest unacked task.",
                                value=u["oldest_age_s"] or 0.0)  # fmt: skip

    # -- streams -------------------------------------------------------------------

    def _streams(self) -> Iterator[Metric]:
        pipe = self.r.pipeline(transaction=False)
        for stream in ALL:
            pipe.xinfo_stream(self.settings.key(stream))
            pipe.xinfo_groups(self.settings.key(stream))
        replies = pipe.execute(raise_on_error=False)
        length = _gauge("corec_stream_length_entries", "Entries kept in a stream.", ["stream"])
        added = CounterMetricFamily("corec_stream_entries_added",
                                    "Entries ever added to a stream (Redis >= 7).",
                                    labels=["stream"])  # fmt: skip
        pending = _gauge("corec_stream_pending_entries",
                         "Entries delivered to a consumer group, not acknowledged.",
                         ["stream", "group"])  # fmt: skip
        lag = _gauge("corec_stream_lag_entries",
                     "Entries not yet delivered to a consumer group (Redis >= 7).",
                     ["stream", "group"])  # fmt: skip
        for i, stream in enumerate(ALL):
            info, groups = replies[2 * i], replies[2 * i + 1]
            if isinstance(info, Exception):  # no such stream yet
                length.add_metric([stream], 0)
                continue
            length.add_metric([stream], int(info["length"]))
            if info.get("entries-added") is not None:
                added.add_metric([stream], int(info["entries-added"]))
            for g in groups if not isinstance(groups, Exception) else []:
                labels = [stream, _s(g["name"])]
                pending.add_metric(labels, int(g["pending"]))
                if g.get("lag") is not None:
                    lag.add_metric(labels, int(g["lag"]))
        yield from (length, added, pending, lag)
        yield GaugeMetricFamily("corec_stream_maxlen_entries",
                                "The MAXLEN ~ cap streams are trimmed to.",
                                value=self.settings.env.stream_maxlen)  # fmt: skip

    def _dead_letters(self) -> Iterator[Metric]:
        key = self.settings.key(DEAD_LETTER)
        while True:
            start = "-" if self._dead_after == "0-0" else f"({self._dead_after}"
            rows: Any = self.r.xrange(key, start, "+", count=5000)
            if not rows:
                break
            for entry_id, fields in rows:
                src = _s(fields.get(b"stream") or b"?")
                self._dead_by_stream[src] = self._dead_by_stream.get(src, 0) + 1
                self._dead_after = _s(entry_id)
        fam = CounterMetricFamily("corec_dead_letters",
                                  "Messages dead-lettered, by the stream they came from.",
                                  labels=["stream"])  # fmt: skip
        for src, n in sorted(self._dead_by_stream.items()):
            fam.add_metric([src], n)
        yield fam

    def _beat(self) -> Iterator[Metric]:
        key = self.settings.key("corec:beat:leader")
        pipe = self.r.pipeline(transaction=False)
        pipe.exists(key)
        pipe.pttl(key)
        exists, ttl = pipe.execute()
        yield GaugeMetricFamily("corec_beat_leader",
                                "1 while a beat holds the leader lock (corec:beat:leader).",
                                value=int(exists))  # fmt: skip
        yield GaugeMetricFamily("corec_beat_leader_ttl_seconds",
                                "Seconds left on the leader lock (renewed every few seconds).",
                                value=max(0, int(ttl)) / 1000)  # fmt: skip
