"""The daily settlement (seed 000's ``daily_settlement``): each member's statement and
the pool's NAV for one UTC day, computed from the ledger alone and written once.

A day ``D`` holds the ledger entries whose ``created_at`` falls in ``[D 00:00, D+1
00:00)`` UTC; as ``seq`` and ``created_at`` grow together under the pool lock, the day
ends at ``seq_end``, the last entry before midnight, and everything is read up to it.
A day is settled only once it has been over for ``GRACE`` (an action that began
before midnight has committed by then). Rows are inserted ``ON CONFLICT DO NOTHING``
and a table trigger refuses UPDATE and DELETE, so a rerun, a second beat or two
workers at once write nothing twice and change nothing written.

Time is an input: every function here takes ``now`` (an aware datetime) and never asks
the wall clock, and the edges (the task, ``corec capital settle``) ask their
:data:`Clock` once per run. So one run cannot see two different days (a clock read per
day could settle a day its own check just refused), and a test fixes its day instead
of depending on when it runs (three tests once failed because a run crossed midnight).

Rules (README, "Statements and statistics"):

- ``value`` is the member's units at the day's closing NAV, rounded down to the cent
  (as ``accounting.Pool.value_of``); ``value_start`` is the previous day's ``value``.
- ``profit_day = value - value_start - contributed_day + withdrawn_day``.
- ``roi_day = profit_day / (value_start + contributed_day)`` (money in during the day
  counts from the day's start); none when that is zero.
- ``roi_to_date = (value + withdrawn - contributed) / contributed`` (as ``status``).
- ROI is rounded half-even to 8 decimals; money is ``Decimal`` throughout.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import psycopg

from plugins.capital_pool.accounting import INITIAL_NAV, Pool
from plugins.capital_pool.money import CTX, NAV_SHOWN, div, money_str, units_str

Conn = psycopg.Connection[tuple[Any, ...]]
#: What the settlement asks for "now": the system's UTC clock, or a test's fixed one.
Clock = Callable[[], datetime]

#: How long after midnight UTC a day may be settled.
GRACE = timedelta(minutes=5)
#: How many past days each beat run looks back for a day not yet settled.
BACKFILL_DAYS = 7
RATIO = Decimal("0.00000001")
#: First key of the per-day advisory lock (the second is the day's ordinal).
LOCK_CLASS = 0x63617053

_DAY_END = "SELECT max(seq) FROM capital_ledger WHERE created_at < %s"
_POOL_AT = (
    "SELECT equity_after, cash_after, active_after, units_after FROM capital_ledger WHERE seq = %s"
)
_MEMBERS = """
SELECT user_id,
       coalesce(sum(units_delta) FILTER (WHERE seq <= %(start)s), 0),
       sum(units_delta),
       coalesce(sum(cash_delta) FILTER (WHERE kind = 'contribute'), 0),
       coalesce(-sum(cash_delta) FILTER (WHERE kind = 'withdraw'), 0),
       coalesce(sum(cash_delta) FILTER (WHERE kind = 'contribute' AND seq > %(start)s), 0),
       coalesce(-sum(cash_delta) FILTER (WHERE kind = 'withdraw' AND seq > %(start)s), 0)
FROM capital_ledger WHERE user_id IS NOT NULL AND seq <= %(end)s
GROUP BY user_id ORDER BY user_id
"""
_INSERT_STATEMENT = """
INSERT INTO capital_statements (user_id, day, units, nav, value_start, value,
    contributed_day, withdrawn_day, contributed, withdrawn, profit_day, roi_day, roi_to_date)
VALUES (%(user_id)s, %(day)s, %(units)s, %(nav)s, %(value_start)s, %(value)s,
    %(contributed_day)s, %(withdrawn_day)s, %(contributed)s, %(withdrawn)s, %(profit_day)s,
    %(roi_day)s, %(roi_to_date)s)
ON CONFLICT (user_id, day) DO NOTHING
"""
_INSERT_DAY = """
INSERT INTO capital_pool_days (day, seq, nav, equity, units, members)
VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (day) DO NOTHING
"""
_COLUMNS = ("user_id", "day", "units", "nav", "value_start", "value", "contributed_day",
            "withdrawn_day", "contributed", "withdrawn", "profit_day", "roi_day",
            "roi_to_date")  # fmt: skip


@dataclass(frozen=True, slots=True)
class Statement:
    """One member's day, as stored."""

    user_id: str
    day: date
    units: Decimal
    nav: Decimal
    value_start: Decimal
    value: Decimal
    contributed_day: Decimal
    withdrawn_day: Decimal
    contributed: Decimal
    withdrawn: Decimal
    profit_day: Decimal
    roi_day: Decimal | None
    roi_to_date: Decimal | None

    def to_json(self) -> dict[str, Any]:
        """Money and ratios as strings (they travel as strings)."""

        def ratio(x: Decimal | None) -> str | None:
            return None if x is None else f"{x.quantize(RATIO):f}"

        return {
            "user_id": self.user_id, "day": self.day.isoformat(),
            "units": units_str(self.units), "nav": f"{self.nav.quantize(NAV_SHOWN):f}",
            "value_start": money_str(self.value_start), "value": money_str(self.value),
            "contributed_day": money_str(self.contributed_day),
            "withdrawn_day": money_str(self.withdrawn_day),
            "contributed": money_str(self.contributed), "withdrawn": money_str(self.withdrawn),
            "profit_day": money_str(self.profit_day),
            "roi_day": ratio(self.roi_day), "roi_to_date": ratio(self.roi_to_date),
        }  # fmt: skip


def utcnow() -> datetime:
    """The system clock, in UTC: the default :data:`Clock` of the task and the CLI."""
    return datetime.now(UTC)


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


def _utc(now: datetime) -> datetime:
    """``now`` in UTC; a naive datetime is refused (whose midnight would it be?)."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now must be time-zone aware, got {now!r}")
    return now.astimezone(UTC)


def is_over(day: date, now: datetime) -> bool:
    """Whether ``day`` may be settled at ``now``: it ended ``GRACE`` ago or more."""
    return _midnight(day + timedelta(days=1)) + GRACE <= _utc(now)


def last_over(now: datetime) -> date:
    """The latest day :func:`is_over` at ``now`` (the day before yesterday until 00:05
    UTC, yesterday from then on)."""
    return (_utc(now) - GRACE).date() - timedelta(days=1)


def _ratio(num: Decimal, den: Decimal) -> Decimal | None:
    if den <= 0:
        return None
    return div(num, den).quantize(RATIO, rounding=ROUND_HALF_EVEN, context=CTX)


def _pool_at(conn: Conn, seq: int | None) -> Pool:
    if seq is None:
        return Pool()
    row = conn.execute(_POOL_AT, (seq,)).fetchone()
    assert row is not None
    return Pool(row[0], row[1], row[2], row[3])


def statements_for(conn: Conn, day: date) -> tuple[Pool, int, list[Statement]] | None:
    """The pool at the day's close, its last ``seq`` and every member's statement
    (members holding units at the close, or who moved money that day); None when the
    ledger had no entry by then. Reads only; call inside one transaction."""
    end_row = conn.execute(_DAY_END, (_midnight(day + timedelta(days=1)),)).fetchone()
    start_row = conn.execute(_DAY_END, (_midnight(day),)).fetchone()
    seq_end = end_row[0] if end_row else None
    if seq_end is None:
        return None
    seq_start = start_row[0] if start_row else None
    close, opening = _pool_at(conn, seq_end), _pool_at(conn, seq_start)
    out = []
    rows = conn.execute(_MEMBERS, {"start": seq_start or 0, "end": seq_end}).fetchall()
    for user, units_start, units, contributed, withdrawn, c_day, w_day in rows:
        if units <= 0 and c_day == 0 and w_day == 0:
            continue
        value, value_start = close.value_of(units), opening.value_of(units_start)
        profit = value - value_start - c_day + w_day
        out.append(Statement(
            user, day, units, close.nav, value_start, value, c_day, w_day, contributed,
            withdrawn, profit, _ratio(profit, value_start + c_day),
            _ratio(value + withdrawn - contributed, contributed)))  # fmt: skip
    return close, seq_end, out


def settle_day(conn: Conn, day: date, now: datetime) -> dict[str, Any]:
    """Write ``day``'s statements and pool row, once; a rerun inserts nothing.

    Refuses a day not yet over by ``GRACE`` at ``now``. Returns what it inserted.
    """
    if not is_over(day, now):
        return {
            "ok": False,
            "day": day.isoformat(),
            "error": f"{day} is not over (days settle {GRACE} after midnight UTC)",
        }
    with conn.transaction():
        # Settlers of one day take turns (READ COMMITTED, so the second sees the first's
        # rows); every row read is an old, append-only ledger entry, so reads agree.
        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_CLASS, day.toordinal()))
        if conn.execute("SELECT 1 FROM capital_pool_days WHERE day = %s", (day,)).fetchone():
            return {"ok": True, "day": day.isoformat(), "statements": 0, "pool": 0,
                    "skipped": "already settled"}  # fmt: skip
        found = statements_for(conn, day)
        if found is None:
            return {"ok": True, "day": day.isoformat(), "statements": 0, "pool": 0,
                    "skipped": "no ledger entry by the end of that day"}  # fmt: skip
        close, seq_end, statements = found
        with conn.cursor() as cur:
            written = 0
            for s in statements:
                cur.execute(_INSERT_STATEMENT, {c: getattr(s, c) for c in _COLUMNS})
                written += cur.rowcount
            cur.execute(_INSERT_DAY, (day, seq_end, close.nav if close.units > 0
                                      else INITIAL_NAV, close.equity, close.units,
                                      len(statements)))  # fmt: skip
            pool_written = cur.rowcount
    return {"ok": True, "day": day.isoformat(), "statements": written, "pool": pool_written,
            "nav": f"{(close.nav if close.units > 0 else INITIAL_NAV).quantize(NAV_SHOWN):f}",
            "equity": money_str(close.equity)}  # fmt: skip


def settle_missing(conn: Conn, now: datetime,
                   days: int = BACKFILL_DAYS) -> list[dict[str, Any]]:  # fmt: skip
    """Settle every day of the last ``days`` over at ``now`` that has no pool row yet and
    is not before the ledger's first entry, oldest first (what beat runs)."""
    last = last_over(now)
    wanted = [last - timedelta(days=i) for i in range(days - 1, -1, -1)]
    done = {r[0] for r in conn.execute(
        "SELECT day FROM capital_pool_days WHERE day >= %s", (wanted[0],)).fetchall()}  # fmt: skip
    first = conn.execute("SELECT min(created_at) FROM capital_ledger").fetchone()
    conn.commit()
    if first is None or first[0] is None:  # no pool yet: nothing to settle
        return []
    opened = first[0].astimezone(UTC).date()
    return [settle_day(conn, d, now) for d in wanted if d not in done and d >= opened]


def statement(conn: Conn, user_id: str, day: date | None = None) -> Statement | None:
    """The member's stored statement for ``day``, or their latest one."""
    cols = ", ".join(_COLUMNS)
    if day is None:
        row = conn.execute(f"SELECT {cols} FROM capital_statements WHERE user_id = %s "
                           "ORDER BY day DESC LIMIT 1", (user_id,)).fetchone()  # fmt: skip
    else:
        row = conn.execute(f"SELECT {cols} FROM capital_statements WHERE user_id = %s "
                           "AND day = %s", (user_id, day)).fetchone()  # fmt: skip
    conn.commit()
    return None if row is None else Statement(*row)


def pool_day(conn: Conn, day: date) -> dict[str, Any] | None:
    """The pool's settled row for ``day``."""
    row = conn.execute("SELECT day, seq, nav, equity, units, members FROM capital_pool_days "
                       "WHERE day = %s", (day,)).fetchone()  # fmt: skip
    conn.commit()
    if row is None:
        return None
    return {
        "day": row[0].isoformat(),
        "seq": row[1],
        "nav": f"{row[2].quantize(NAV_SHOWN):f}",
        "equity": money_str(row[3]),
        "units": units_str(row[4]),
        "members": row[5],
    }


def connect(database_url: str) -> Conn:
    """A connection for the settlement (``postgresql+psycopg://`` accepted)."""
    from corec_tasks.db import libpq_url

    return psycopg.connect(libpq_url(database_url))
