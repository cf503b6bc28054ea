"""Consume ``trading_results`` and ``macro_data`` as consumer group ``capital_pool``.

Both are handlers of CoreC's one consumer loop (``corec_tasks.streams.consumer``): the
ledger's database is reached before anything is claimed, and while it is down nothing
is claimed, acknowledged or counted as a delivery (entries wait, uncounted, and are
applied once it is back).

``trading_results``: only entries signed with the stream key reach the handler (the
consumer loop dead-letters the others: ``corec_tasks.streams.signing``). A signature
says a CoreC process published it, not that its profit is real (a forged task, a bug),
so the pool applies a result only against an open allocation it issued and within that
allocation's bound (``accounting.check_result``); a refused one is dead-lettered with
the pool's reason and raises an ``error`` alert (source ``capital_pool.trade_refused``,
once per hour), the NAV unchanged. Each is
validated (the seed's ``{"data": base64(gzip(json))}`` or plain JSON with ``trade_id``,
``profit``, ``quantity``, ``price``; optional ``allocation_id``), applied once per trade
id (the entry's signature stands in for a missing ``trade_id``: a redelivered or copied
entry keeps it), and acknowledged only after the
ledger commit. A malformed entry, or one the pool refuses (a loss above the capital at
risk), goes to ``corec_dead_letter`` with the reason; so does one whose data cannot be
applied (a decimal overflow, a value PostgreSQL rejects), at once; one that raises
anything else is retried and dead-lettered after ``COREC_STREAM_MAX_DELIVERIES``
deliveries. Entries behind a bad one are applied meanwhile.

``capital_data``: signed contributions and withdrawals are not consumed here: block
``capital_intake`` applies them (``intake.py``).

``macro_data``: the VIX sizes every trade's risk, so the stream is signed like the
others (``channels.signed``): the consumer loop dead-letters unsigned entries with its
``stream.signature`` alert. The newest valid VIX is remembered for the allocation rule. Entries
that fail the schema are skipped here; the persister's group dead-letters them (one
dead letter per bad message, not one per consumer). One that passes the schema but
still cannot be read as a number is dead-lettered here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import psycopg
import pybreaker

from corec_tasks.settings import Settings
from corec_tasks.streams.bus import Entry, StreamBus
from corec_tasks.streams.consumer import (
    Batch,
    ConsumerLoop,
    Dead,
    Done,
    EntryHandler,
    Handler,
    Later,
    Result,
    RoundStats,
    Unavailable,
    Verdict,
)
from corec_tasks.streams.schemas import PayloadError, validate_payload
from corec_tasks.streams.signing import entry_signature
from plugins.capital_pool.service import CapitalPool
from plugins.trading import channels
from plugins.trading.channels import (
    MACRO_DATA,
    TRADING_RESULTS,
    TradingResults,
    trade_result,
)

log = logging.getLogger(__name__)

GROUP = "capital_pool"


@dataclass
class ConsumeStats:
    applied: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    #: Entries left waiting (uncounted) because the database went down mid-round.
    deferred: int = 0
    #: Entries that raised and will be retried (counted deliveries).
    failed: int = 0
    macro: int = 0
    #: Why a round claimed nothing or stopped early; None if the database was up.
    unavailable: str | None = None

    def add(self, s: RoundStats) -> None:
        self.dead_lettered += s.dead_lettered
        self.deferred += s.deferred
        self.failed += s.failed
        self.unavailable = self.unavailable or s.unavailable


class _LedgerHandler(EntryHandler):
    """A handler that writes the ledger: ready once the ledger's database answers."""

    group = GROUP

    def __init__(self, pool: CapitalPool) -> None:
        self.pool = pool

    @contextmanager
    def ready(self) -> Iterator[None]:
        """The ledger's connection answers (through the pool's circuit breaker)."""
        try:
            self.pool.db.call(lambda: self.pool.ledger.conn.execute("SELECT 1"))
        except pybreaker.CircuitBreakerError as exc:
            raise Unavailable(f"the capital database is unavailable (circuit open): {exc}") from exc
        except psycopg.OperationalError as exc:
            self.pool.ledger.close()  # a broken connection is replaced on next use
            raise Unavailable(f"the capital database is unreachable: {exc}") from exc
        yield


class TradeResults(_LedgerHandler):
    """Apply each trading result to the ledger, once per trade id. Profits move the
    NAV: only entries signed with the stream key are applied (others are dead-lettered
    by the consumer loop)."""

    signed = True

    def handle(self, entry: Entry, deliveries: int) -> Verdict:
        try:
            payload = validate_payload(TRADING_RESULTS, entry.original_bytes(), TradingResults)
            trade = trade_result(payload)
        except (PayloadError, ValueError) as exc:
            reason = exc.reason if isinstance(exc, PayloadError) else str(exc)
            return Dead(f"{GROUP}: {reason}")
        extra: dict[str, Any] = trade.model_extra or {}
        allocation_id = payload.get("allocation_id") or extra.get("allocation_id")
        # Without a trade id, the signature identifies the result: a copy of the entry
        # (a new entry id, the same signature) is a duplicate, not a second profit.
        stands_in = entry_signature(entry.fields) or entry.id
        trade_id = trade.trade_id or payload.get("trade_id") or f"{TRADING_RESULTS}:{stands_in}"
        result = self.pool.apply_trade(str(trade_id), Decimal(trade.profit),
                                       Decimal(trade.quantity), Decimal(trade.price),
                                       allocation_id and str(allocation_id),
                                       entry.id)  # fmt: skip
        if result.get("ok"):
            return Done("duplicates" if result.get("duplicate") else "applied")
        if result.get("retry"):  # the database went down: wait, uncounted
            return Later(f"{GROUP}: {result['error']}")
        with StreamBus(self.pool.settings) as bus:
            bus.alert("error", "capital_pool.trade_refused", TRADING_RESULTS,
                      f"trading result {trade_id} (entry {entry.id}) refused, NAV unchanged: "
                      f"{result['error']}; see `corec streams dead-letter`")  # fmt: skip
        return Dead(f"{GROUP}: {result['error']}")


class MacroData(Handler):
    """Remember the newest valid VIX of each batch (signed entries only)."""

    group = GROUP
    signed = True

    def __init__(self, pool: CapitalPool) -> None:
        self.pool = pool

    def apply(self, prepared: Any) -> Result:
        batch: Batch = prepared
        out = Result()
        newest: tuple[int, Decimal, Decimal | None] | None = None
        for entry in batch.all():
            try:
                payload = validate_payload(MACRO_DATA, entry.original_bytes(), channels.MacroData)
            except PayloadError as exc:
                log.info("capital_pool: skipping invalid macro_data %s: %s", entry.id, exc.reason)
                out.done.append(entry.id)
                continue
            try:
                vix = _decimal(payload["vix_price"], "vix_price")
                raw = payload.get("sp500_price")
                sp500 = None if raw is None else _decimal(raw, "sp500_price")
            except (KeyError, ValueError, ArithmeticError) as exc:
                out.dead.append((entry, f"{GROUP}: unreadable macro_data: {exc}"))
                continue
            if newest is None or entry.millis >= newest[0]:
                newest = (entry.millis, vix, sp500)
            out.done.append(entry.id)
            out.counts["macro"] += 1
        if newest is not None:
            self.pool.record_macro(newest[1], newest[2], newest[0] / 1000)
        return out


def _decimal(value: object, name: str) -> Decimal:
    # bool is an int: Decimal(str(True)) raised InvalidOperation on every round.
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise ValueError(f"{name} must be a number, got {type(value).__name__}")
    number = Decimal(str(value))
    if not number.is_finite():
        raise ValueError(f"{name} must be finite, got {value!r}")
    return number


# -- the consumers the manifest declares (``consumers`` with ``"loop": true``) ----------
# Beat drives each through ``corec.plugins.consume`` on this worker process's pool.


def _process_pool() -> CapitalPool:
    from plugins.capital_pool.runtime import pool  # runtime imports service, not this

    return pool()


def trade_results(settings: Settings) -> TradeResults:
    """The ``trading_results`` consumer of plugin.json."""
    return TradeResults(_process_pool())


def macro_data(settings: Settings) -> MacroData:
    """The ``macro_data`` consumer of plugin.json."""
    return MacroData(_process_pool())


def consume_once(pool: CapitalPool, count: int = 500, consumer: str | None = None,
                 max_batches: int = 10) -> ConsumeStats:  # fmt: skip
    """One round over both streams; safe to run concurrently on many workers."""
    stats = ConsumeStats()
    with StreamBus(pool.settings) as bus:
        trades = ConsumerLoop(bus, TradeResults(pool), consumer, batch=count)
        t = trades.run(TRADING_RESULTS, max_batches)
        stats.add(t)
        stats.applied, stats.duplicates = t.counts["applied"], t.counts["duplicates"]
        macro = ConsumerLoop(bus, MacroData(pool), consumer, batch=count)
        m = macro.run(MACRO_DATA, max_batches)
        stats.add(m)
        stats.macro = m.counts["macro"]
    return stats
