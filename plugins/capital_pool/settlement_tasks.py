"""The settlement's Celery task: ``capital_pool.settle`` (beat, every 15 minutes).

Each run settles the finished UTC days of the last week that have no pool row yet, so
the day just ended is settled within minutes of 00:05 UTC, and days missed while the
cluster was down are caught up. Settling is idempotent per day (``settlement.py``).

The task asks the system clock once and hands ``now`` to :func:`run`, which tests call
with their own clock; the clock is no task argument, so no message can make a day
"over" early and freeze its statements before the day has ended.

    celery -A corec_tasks call capital_pool.settle
    celery -A corec_tasks call capital_pool.settle --args '["2026-11-29"]'
"""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Any

from corec_tasks.celery import app
from corec_tasks.runtime import get_settings
from plugins.capital_pool import settlement

_DAY = re.compile(r"\A\d{4}-\d{2}-\d{2}\Z", re.ASCII)


def parse_day(value: object) -> date:
    """A ``YYYY-MM-DD`` string, strictly (ASCII digits, a real date)."""
    if not isinstance(value, str) or not _DAY.match(value):
        raise ValueError(f"day must be a YYYY-MM-DD string, got {str(value)[:40]!r}")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"day {value!r} is not a date") from None


def run(database_url: str, day: object, now: datetime) -> dict[str, Any]:
    """What the task does at ``now``: settle ``day`` (``YYYY-MM-DD``), or every unsettled
    day of the last week that is over."""
    try:
        wanted = None if day is None else parse_day(day)
    except ValueError as exc:
        return {"ok": False, "error": str(exc)}
    with settlement.connect(database_url) as conn:
        if wanted is not None:
            return settlement.settle_day(conn, wanted, now)
        runs = settlement.settle_missing(conn, now)
    return {"ok": all(r["ok"] for r in runs), "days": runs}


@app.task(name="capital_pool.settle")
def settle(day: object = None) -> dict[str, Any]:
    """Settle ``day`` (``YYYY-MM-DD``), or every unsettled finished day of the last week."""
    return run(get_settings().database_url, day, settlement.utcnow())
