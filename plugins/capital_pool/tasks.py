"""Celery tasks of the capital pool: ``celery -A corec_tasks call capital_pool.<name>``.

Every task returns JSON: ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``.
Money actions take an ``idempotency_key``: a repeat (a client retry, or Celery's own
redelivery after a worker died) returns the first result and changes nothing.

    celery -A corec_tasks call capital_pool.contribute --args '["alice", "500.00", "k-1"]'
    celery -A corec_tasks call capital_pool.status
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from corec_tasks.celery import app
from corec_tasks.settings import get_settings
from plugins.capital_pool.service import CapitalPool
from plugins.capital_pool.settings import capital_config


@lru_cache(maxsize=1)
def pool() -> CapitalPool:
    """This worker process's capital pool (its own connections)."""
    settings = get_settings()
    return CapitalPool(settings, capital_config(settings))


@lru_cache(maxsize=1)
def _aaa() -> Any:
    from plugins.aaa.service import AAAPlugin

    return AAAPlugin.from_url(get_settings().database_url)


def refused(action: str, user_id: object, token: str | None) -> dict[str, Any] | None:
    """With ``auth.require_token``, an error unless ``token`` may do ``action``."""
    if not pool().config.auth.require_token:
        return None
    from plugins.capital_pool.auth import check_token

    return check_token(_aaa(), action, user_id, token)


@app.task(name="capital_pool.contribute")
def contribute(
    user_id: str, amount: str, idempotency_key: str | None = None, token: str | None = None
) -> dict[str, Any]:
    """Buy units for ``amount`` (a decimal string, minimum 100.00) at the current NAV."""
    return refused("capital.contribute", user_id, token) or pool().contribute(
        user_id, amount, idempotency_key
    )


@app.task(name="capital_pool.withdraw")
def withdraw(
    user_id: str, amount: str, idempotency_key: str | None = None, token: str | None = None
) -> dict[str, Any]:
    """Redeem units worth ``amount``, within the member's value and the free cash."""
    return refused("capital.withdraw", user_id, token) or pool().withdraw(
        user_id, amount, idempotency_key
    )


@app.task(name="capital_pool.status")
def status() -> dict[str, Any]:
    """Equity, cash, active, units, NAV, phase, risk per trade, VIX and every member."""
    return pool().status()


@app.task(name="capital_pool.member")
def member(user_id: str, token: str | None = None) -> dict[str, Any]:
    """One member's units, value, contributed, withdrawn and ROI."""
    return refused("capital.view", user_id, token) or pool().member(user_id)


@app.task(bind=True, name="capital_pool.allocate")
def allocate(self: Any, key: str | None = None) -> dict[str, Any]:
    """Allocate free per-trade slots and publish them on ``capital_data``.

    Beat calls it every 5 minutes; without ``key`` the task id is the key, so a
    redelivered run allocates nothing twice.
    """
    return pool().allocate(key or f"task-{self.request.id}")


@app.task(name="capital_pool.consume", ignore_result=True)
def consume(count: int = 500) -> dict[str, Any]:
    """Apply new trading results and record the newest VIX."""
    from dataclasses import asdict

    from plugins.capital_pool.consumer import consume_once

    return {"ok": True, **asdict(consume_once(pool(), count))}


@app.task(name="capital_pool.verify")
def verify() -> dict[str, Any]:
    """Check pool state and members against the ledger and the invariants."""
    return pool().verify()
