"""Consume ``trading_results`` and ``macro_data`` as consumer group ``capital_pool``.

``trading_results``: each entry is validated (the seed's ``{"data": base64(gzip(json))}``
or plain JSON with ``trade_id``, ``profit``, ``quantity``, ``price``; optional
``allocation_id``), applied once per trade id (the entry id stands in for a missing
``trade_id``: a redelivered entry keeps its id), and acknowledged only after the
ledger commit. A malformed entry, or one the pool refuses (a loss above the capital at
risk), goes to ``corec_dead_letter`` with the reason; one that keeps failing for other
reasons is dead-lettered after ``COREC_STREAM_MAX_DELIVERIES`` deliveries. While the
database is down nothing is acknowledged: the entries wait and are reclaimed.

``macro_data``: the newest valid VIX is remembered for the allocation rule. Invalid
entries are skipped here; the persister's group dead-letters them (one dead letter per
bad message, not one per consumer).
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from corec_tasks.streams.bus import Entry, StreamBus
from corec_tasks.streams.names import MACRO_DATA, TRADING_RESULTS
from corec_tasks.streams.schemas import PayloadError, trade_result, validate_payload
from plugins.capital_pool.service import CapitalPool

log = logging.getLogger(__name__)

GROUP = "capital_pool"


@dataclass
class ConsumeStats:
    applied: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    deferred: int = 0
    macro: int = 0


def consume_once(pool: CapitalPool, count: int = 500) -> ConsumeStats:
    """One round over both streams; safe to run concurrently on many workers."""
    stats = ConsumeStats()
    env = pool.settings.env
    consumer = f"{socket.gethostname()}-{os.getpid()}"
    with StreamBus(pool.settings) as bus:
        for stream in (TRADING_RESULTS, MACRO_DATA):
            bus.ensure_group(stream, GROUP, "0")
        # trading results: stale entries of dead consumers first, then new ones.
        stale = bus.reclaim(TRADING_RESULTS, GROUP, consumer, env.stream_claim_idle_ms, count)
        counts = bus.delivery_counts(TRADING_RESULTS, GROUP, [e.id for e in stale])
        for batch, redelivered in ((stale, True), (None, False)):
            entries = batch if batch is not None else bus.read(TRADING_RESULTS, GROUP,
                                                                consumer, count)  # fmt: skip
            for entry in entries:
                deliveries = counts.get(entry.id, 1) if redelivered else 1
                if not _trade(pool, bus, entry, deliveries, env.stream_max_deliveries, stats):
                    return stats  # database unavailable: stop, leave the rest pending
        _macro(pool, bus, consumer, count, stats)
    return stats


def _trade(pool: CapitalPool, bus: StreamBus, entry: Entry, deliveries: int,
           max_deliveries: int, stats: ConsumeStats) -> bool:  # fmt: skip
    """Apply one entry; False if the database is unavailable (entry left pending)."""
    raw = entry.original_bytes()
    try:
        payload = validate_payload(TRADING_RESULTS, raw)
        trade = trade_result(payload)
    except (PayloadError, ValueError) as exc:
        reason = exc.reason if isinstance(exc, PayloadError) else str(exc)
        bus.dead_letter(TRADING_RESULTS, entry, f"{GROUP}: {reason}", deliveries, group=GROUP)
        stats.dead_lettered += 1
        return True
    extra: dict[str, Any] = trade.model_extra or {}
    allocation_id = payload.get("allocation_id") or extra.get("allocation_id")
    trade_id = trade.trade_id or payload.get("trade_id") or f"{TRADING_RESULTS}:{entry.id}"
    result = pool.apply_trade(str(trade_id), Decimal(trade.profit), Decimal(trade.quantity),
                              Decimal(trade.price), allocation_id and str(allocation_id),
                              entry.id)  # fmt: skip
    if result.get("ok"):
        bus.ack(TRADING_RESULTS, GROUP, [entry.id])
        if result.get("duplicate"):
            stats.duplicates += 1
        else:
            stats.applied += 1
        return True
    if result.get("retry"):
        if deliveries >= max_deliveries:
            bus.dead_letter(TRADING_RESULTS, entry, f"{GROUP}: {result['error']}", deliveries,
                            group=GROUP)  # fmt: skip
            stats.dead_lettered += 1
            return True
        stats.deferred += 1
        log.warning("capital_pool: trading result %s deferred: %s", entry.id, result["error"])
        return False
    bus.dead_letter(TRADING_RESULTS, entry, f"{GROUP}: {result['error']}", deliveries,
                    group=GROUP)  # fmt: skip
    stats.dead_lettered += 1
    return True


def _macro(pool: CapitalPool, bus: StreamBus, consumer: str, count: int,
           stats: ConsumeStats) -> None:  # fmt: skip
    env = pool.settings.env
    entries = bus.reclaim(MACRO_DATA, GROUP, consumer, env.stream_claim_idle_ms, count)
    entries += bus.read(MACRO_DATA, GROUP, consumer, count)
    newest: tuple[int, Decimal, Decimal | None] | None = None
    for entry in entries:
        try:
            payload = validate_payload(MACRO_DATA, entry.original_bytes())
        except PayloadError as exc:
            log.info("capital_pool: skipping invalid macro_data %s: %s", entry.id, exc.reason)
            continue
        vix = Decimal(str(payload["vix_price"]))
        sp500 = Decimal(str(payload["sp500_price"]))
        if newest is None or entry.millis >= newest[0]:
            newest = (entry.millis, vix, sp500)
        stats.macro += 1
    if newest is not None:
        pool.record_macro(newest[1], newest[2], newest[0] / 1000)
    bus.ack(MACRO_DATA, GROUP, [e.id for e in entries])
