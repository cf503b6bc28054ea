"""capital_pool's step of ``corec demo`` (``demo.step`` in its plugin.json): members
contribute through Celery, a retry replays, one contributes over ``capital_data`` (block
``capital_intake``), an allocation, a trading result applied."""

from __future__ import annotations

import base64
import gzip
import json
import time
from decimal import Decimal as D
from typing import Any

from rich.console import Console

from corec_tasks.errors import CorecError
from corec_tasks.settings import Settings
from plugins.capital_pool import grants


def run_demo(settings: Settings, timeout: float, console: Console) -> None:
    """Members contribute through Celery, a retry replays, allocation, a trading result."""
    from uuid import uuid4

    from corec_tasks.celery import app
    from corec_tasks.cli.output import table
    from corec_tasks.streams.bus import StreamBus
    from plugins.trading.channels import TRADING_RESULTS

    console.rule("[bold]9. capital pool (a grant + celery call capital_pool.*)")
    run = uuid4().hex[:8]
    grant_key = grants.load_key(settings)

    def call(task: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        result: dict[str, Any] = app.send_task(
            task, args=list(args), kwargs=kwargs,
            kwargsrepr=grants.kwargs_repr(kwargs)).get(timeout=timeout)  # fmt: skip
        return result

    def contribute(user: str, amount: str, key: str) -> dict[str, Any]:
        """As an operator does with `corec capital grant`: a grant for this one action."""
        grant = grants.mint(user, "capital.contribute", amount, key, user_id=None,
                            username="operator:demo", key=grant_key)  # fmt: skip
        return call("capital_pool.contribute", user, amount, key, grant=grant)

    unsigned = call("capital_pool.contribute", "mallory", "1000000.00", f"demo-{run}-m")
    console.print(f"a task with no grant (a task-key holder without the grant key): "
                  f"refused: {unsigned['error']}")
    for user, amount in (("alice", "4000.00"), ("bob", "1000.00")):
        out = contribute(user, amount, f"demo-{run}-{user}")
        if not out.get("ok"):
            raise CorecError(f"capital_pool.contribute failed: {out.get('error')}")
        console.print(f"{user} contributed ${out['amount']}: {out['units']} units at NAV "
                      f"{out['nav']}")  # fmt: skip
    again = contribute("alice", "4000.00", f"demo-{run}-alice")
    console.print(f"the same key again: replayed={again.get('replayed')}, nothing changed")
    bad = contribute("bob", "99.99", f"demo-{run}-small")
    console.print(f"bob contributes $99.99: refused: {bad.get('error')}")
    _contribute_on_the_channel(settings, f"demo-{run}-carol", timeout, console)
    alloc = call("capital_pool.allocate", f"demo-{run}")
    console.print(f"allocation: phase {alloc['phase']}, risk per trade {alloc['risk_per_trade']}, "
                  f"{len(alloc['allocations'])} slots published on capital_data")  # fmt: skip
    # A result names the allocation it closes; the pool refuses anything else, and a
    # profit above that allocation's amount (x max_profit_ratio).
    first = alloc["allocations"][0] if alloc["allocations"] else None
    if first is None:
        raise CorecError("no allocation was made: nothing for a trading result to close")
    profit = min(D("250.00"), D(first["amount"]))
    body = json.dumps({"trade_id": f"demo-{run}", "profit": str(profit), "quantity": 0.01,
                       "price": 35000.0, "allocation_id": first["allocation_id"]}).encode()
    with StreamBus(settings) as bus:
        bus.publish(TRADING_RESULTS, {"data": base64.b64encode(gzip.compress(body)).decode()})
    deadline = time.monotonic() + timeout
    while not _applied(settings, f"demo-{run}"):  # beat's capital_pool consumers, every second
        if time.monotonic() > deadline:
            raise CorecError("the trading result was not applied in time (is beat running?)")
        time.sleep(0.3)
    verified = call("capital_pool.verify")
    if not verified.get("ok"):
        raise CorecError(f"capital ledger check failed: {verified}")
    status = call("capital_pool.status")
    keys = ("equity", "cash", "active", "units", "nav", "phase", "risk_per_trade", "vix")
    console.print(table(f"capital pool after a +${profit} trading result (allocation "
                        f"{first['allocation_id']})",
                        ["", "value"], [(k, status[k]) for k in keys]))  # fmt: skip
    console.print(table("members", ["user", "units", "value", "contributed", "roi"],
                        [(u, m["units"], m["value"], m["contributed"], m["roi"])
                         for u, m in status["members"].items()]))  # fmt: skip
    console.print("ledger verified: pool state equals the sum of its entries")


def _contribute_on_the_channel(
    settings: Settings, key: str, timeout: float, console: Console
) -> None:
    """Seed 000's channel integration: a signed contribution on ``capital_data``, applied
    by block ``capital_intake`` in beat's 5-second cycle and answered on corec_responses."""
    from corec_tasks.commands import last_response_id, wait_response
    from corec_tasks.streams.bus import StreamBus
    from plugins.trading.channels import CAPITAL_DATA

    with StreamBus(settings) as bus:
        since = last_response_id(settings, bus.client)
        bus.publish(CAPITAL_DATA, {"user_id": "carol", "action": "contribute",
                                   "amount": "500.00", "idempotency_key": key})  # fmt: skip
        got = wait_response(settings, bus.client, f"capital:carol:{key}", since=since,
                            timeout_s=timeout)  # fmt: skip
    if got is None or "response" not in got:
        raise CorecError(f"block capital_intake did not apply carol's contribution: {got}")
    console.print(f"carol contributed $500.00 on capital_data (signed): block capital_intake "
                  f"applied it and answered on corec_responses: {got['response']['units']} "
                  "units")  # fmt: skip


def _applied(settings: Settings, trade_id: str) -> bool:
    import psycopg

    from corec_tasks.db import libpq_url

    with psycopg.connect(libpq_url(settings.database_url)) as conn:
        row = conn.execute("SELECT 1 FROM capital_trade_results WHERE trade_id = %s",
                           (trade_id,)).fetchone()  # fmt: skip
    return row is not None
