"""Writing ``statistics`` rows (seed 003's Statistics), once per ``(key, timestamp)``.

A cycle's metrics are stamped with the cycle's own time (its start), so a redelivered
or repeated callback writes nothing twice: ``record`` skips keys already stored at
that timestamp, under a lock that makes two writers take turns (an advisory lock on
PostgreSQL, SQLite's write lock there). ``value`` is the seed's Float: a measurement
for charts; money stays exact in the ledger (``profit`` here is a figure, not a sum to
reconcile).

Keys (README, "Statements and statistics"): ``block.*`` per block cycle (written by
``plugins.pipeline.block_stats``), ``trading.*`` per trading cycle (below).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from plugins.trading.models import Statistics

#: pg_advisory_xact_lock key of the statistics writers.
LOCK_KEY = 0x636F7265_53544154


def stamp(epoch_s: float) -> datetime:
    """A cycle's time as the row's timestamp, to the microsecond."""
    return datetime.fromtimestamp(round(epoch_s, 6), UTC)


def record(sessions: sessionmaker[Session], at: datetime, values: Mapping[str, float]) -> int:
    """Insert each ``key: value`` at ``at`` unless that key is already there; the count
    written (0 on a repeat)."""
    with sessions.begin() as s:
        if s.get_bind().dialect.name == "postgresql":
            s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": LOCK_KEY})
        have = set(s.scalars(select(Statistics.key).where(
            Statistics.timestamp == at, Statistics.key.in_(list(values)))))  # fmt: skip
        rows = [Statistics(key=k, value=float(v), timestamp=at)
                for k, v in values.items() if k not in have]  # fmt: skip
        s.add_all(rows)
    return len(rows)


def trading_cycle(summary: Mapping[str, Any], results: list[dict[str, Any]]) -> dict[str, float]:
    """A trading cycle's figures: assets, orders (broker calls), fills (orders with a filled
    quantity), errors, realised profit, wall time."""
    orders = [r for r in results if r.get("action") in ("open", "close")]
    return {
        "trading.assets": float(len(results)),
        "trading.orders": float(len(orders)),
        "trading.fills": float(sum(1 for r in orders if Decimal(str(r.get("filled") or 0)) > 0)),
        "trading.errors": float(sum(1 for r in results if not r.get("ok"))),
        "trading.profit": float(Decimal(str(summary.get("profit") or 0))),
        "trading.wall_s": float(summary.get("wall_s") or 0.0),
    }
