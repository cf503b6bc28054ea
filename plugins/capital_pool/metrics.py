"""The capital pool's Prometheus metrics, and its breakers' states shared in Redis.

``metrics_collectors`` (the hook in main.py) gives the exporter two collectors:

* the pool, read from ``pool_state`` at scrape time: NAV per unit, equity, cash,
  active capital and its share of equity, units, members, open allocations, and the
  phase (by equity, from the plugin's rules). Money is Decimal in the ledger; a
  Prometheus sample is a float, so these are for dashboards, never for accounting.
* the circuit breakers: a pybreaker breaker lives in one process, so each process
  writes its breakers' non-closed states to Redis (:class:`RedisBreakerListener`),
  one key per process with a TTL, and the exporter counts them. A dead process's
  record expires; a closed breaker has no record.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from typing import Any

import pybreaker
import redis
from prometheus_client.core import GaugeMetricFamily, Metric

from corec_tasks.alerts import alert
from corec_tasks.metrics.pg import ScrapeConnection
from corec_tasks.redis_conn import redis_client
from corec_tasks.settings import Settings
from plugins.capital_pool import accounting as acc
from plugins.capital_pool.config import CapitalConfig
from plugins.capital_pool.settings import capital_config

log = logging.getLogger(__name__)

#: Set of ``breaker|process`` members; each has a key ``corec:breaker:<member>``.
BREAKERS = "corec:breakers"
#: Breaker states a record can hold (closed ones are deleted).
STATES = ("open", "half-open")
#: A record lives at least this long, or four reset timeouts if longer.
MIN_TTL_S = 300


class RedisBreakerListener(pybreaker.CircuitBreakerListener):
    """Writes this process's breaker state to Redis on every change (never raises)."""

    def __init__(self, settings: Settings, ttl_s: int) -> None:
        self.settings = settings
        self.ttl_s = ttl_s
        self.process = f"{socket.gethostname()}-{os.getpid()}"
        self.r = redis_client(settings, socket_timeout=1.0, socket_connect_timeout=1.0)

    def state_change(self, cb: pybreaker.CircuitBreaker, old_state: Any, new_state: Any) -> None:
        member = f"{cb.name}|{self.process}"
        key = self.settings.key(f"corec:breaker:{member}")
        try:
            pipe = self.r.pipeline(transaction=False)
            if new_state.name == "closed":
                pipe.delete(key)
                pipe.srem(self.settings.key(BREAKERS), member)
            else:
                pipe.set(key, new_state.name, ex=self.ttl_s)
                pipe.sadd(self.settings.key(BREAKERS), member)
            pipe.execute()
            if new_state.name == "open":  # one alert per breaker and hour, whichever process
                alert(self.settings, self.r, "error", "breaker", str(cb.name),
                      f"circuit breaker {cb.name} opened in {self.process} after "
                      f"{cb.fail_max} consecutive failures; calls fail fast for "
                      f"{cb.reset_timeout:g} s")  # fmt: skip
        except redis.RedisError as exc:  # the breaker may be open because Redis is down
            log.warning("breaker %s is %s; could not record it: %r", cb.name, new_state.name,
                        exc)  # fmt: skip


def watch_breakers(settings: Settings, *breakers: pybreaker.CircuitBreaker) -> None:
    """Have ``breakers`` report their state to Redis: one listener per breaker and
    process, moved to ``settings`` if an earlier pool in this process had others (the
    breakers are per process, a pool per settings)."""
    for cb in breakers:
        for old in [x for x in cb.listeners if isinstance(x, RedisBreakerListener)]:
            if (old.settings.redis_url, old.settings.redis_prefix) == (
                    settings.redis_url, settings.redis_prefix):  # fmt: skip
                break
            cb.remove_listener(old)
            old.r.close()
        else:
            cb.add_listener(RedisBreakerListener(settings, max(MIN_TTL_S,
                                                               4 * int(cb.reset_timeout))))


class BreakerMetrics:
    """``corec_breaker_processes{breaker,state}`` and ``corec_breaker_open{breaker}``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.r = redis_client(settings, socket_timeout=5.0)

    def collect(self) -> Iterator[Metric]:
        index = self.settings.key(BREAKERS)
        raw: Any = self.r.smembers(index)
        members = sorted(m.decode() for m in raw)
        states = self.r.mget([self.settings.key(f"corec:breaker:{m}") for m in members]) \
            if members else []  # fmt: skip
        counts: dict[tuple[str, str], int] = {}
        gone = []
        for member, state in zip(members, states, strict=True):
            if state is None:
                gone.append(member)
                continue
            state_name = state.decode() if isinstance(state, bytes) else str(state)
            key = (member.split("|", 1)[0], state_name)
            counts[key] = counts.get(key, 0) + 1
        if gone:
            self.r.srem(index, *gone)
        procs = GaugeMetricFamily("corec_breaker_processes",
                                  "Processes whose circuit breaker is open or half-open.",
                                  labels=["breaker", "state"])  # fmt: skip
        opened = GaugeMetricFamily("corec_breaker_open",
                                   "1 if the breaker is open in at least one process.",
                                   labels=["breaker"])  # fmt: skip
        names = {"capital_pool.db", "capital_pool.macro"} | {b for b, _ in counts}
        for name in sorted(names):
            for state in STATES:
                procs.add_metric([name, state], counts.get((name, state), 0))
            opened.add_metric([name], int(counts.get((name, "open"), 0) > 0))
        yield procs
        yield opened


class PoolMetrics:
    """The pool's balances and phase, from ``pool_state`` (one query per scrape)."""

    def __init__(self, settings: Settings, config: CapitalConfig) -> None:
        self.db = ScrapeConnection(settings.database_url)
        self.rules = config.capital_config

    def collect(self) -> Iterator[Metric]:
        rows = self.db.rows(
            "SELECT equity, cash, active, units, "
            "(SELECT count(*) FROM capital_members WHERE units > 0), "
            "(SELECT count(*) FROM capital_allocations WHERE status = 'open') "
            "FROM pool_state"
        )
        if not rows:
            return
        row = rows[0]
        pool = acc.Pool(*row[:4])
        for name, doc, value in (
            ("corec_capital_nav_per_unit_usd", "NAV per unit of the pool.", pool.nav),
            ("corec_capital_equity_usd", "The pool's equity.", pool.equity),
            ("corec_capital_cash_usd", "The pool's cash.", pool.cash),
            ("corec_capital_active_usd", "Capital allocated to open trades.", pool.active),
            ("corec_capital_units", "Units issued to members.", pool.units),
            ("corec_capital_members", "Members holding units.", row[4]),
            ("corec_capital_open_allocations", "Open trade allocations.", row[5]),
        ):  # fmt: skip
            yield GaugeMetricFamily(name, doc, value=float(value))
        ratio = float(pool.active / pool.equity) if pool.equity > 0 else 0.0
        yield GaugeMetricFamily("corec_capital_active_ratio",
                                f"Active capital over equity (cap {self.rules.max_active_ratio}).",
                                value=ratio)  # fmt: skip
        current = acc.phase_for(pool.equity, self.rules.phases)
        phase = GaugeMetricFamily("corec_capital_phase",
                                  "1 for the pool's current phase (by equity), else 0.",
                                  labels=["phase"])  # fmt: skip
        for p in self.rules.phases:
            phase.add_metric([p.name], int(current is not None and current.name == p.name))
        yield phase


def metrics_collectors(settings: Settings, config: dict[str, Any]) -> list[Any]:
    """The plugin's collectors (the exporter's hook)."""
    return [PoolMetrics(settings, capital_config(settings)), BreakerMetrics(settings)]
