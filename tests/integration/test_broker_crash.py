"""The crash test of issue #5: the order path is SIGKILLed after the exchange took the
order and before the database heard back; a restart finds the order once, the position
right, and running the same intent again places nothing new.

The paper exchange keeps its orders in a Redis hash, so they outlive the killed
process as a real exchange's would. Runs on PostgreSQL and on SQLite.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, select

from corec_tasks.settings import Settings, load_settings
from plugins.broker.paper import RedisOrderStore
from plugins.trading.db import make_trading_engine, prepare, session_factory
from plugins.trading.models import Asset, Order, OrderStatus, Portfolio, Position, Role, User
from plugins.trading.sealed import Seals
from tests.conftest import ROOT

pytestmark = pytest.mark.integration

D = Decimal


@pytest.fixture()
def engine(trading_url: str) -> Iterator[Engine]:
    eng = make_trading_engine(trading_url)
    prepare(eng)
    yield eng
    eng.dispose()


@pytest.fixture()
def exchange(
    servers: dict[str, str], redis_prefix: str, settings: Settings
) -> Iterator[tuple[redis.Redis, str]]:
    """A Redis client and the hash the paper exchange keeps its orders in; ``settings``
    gives this test (and the children it starts) a data folder with the node's keys."""
    client = redis.Redis.from_url(servers["redis_url"])
    key = f"{redis_prefix}broker:paper:{uuid.uuid4().hex[:8]}"
    yield client, key
    client.delete(key)
    client.close()


def _record(client: redis.Redis, key: str, cid: str) -> dict[str, Any] | None:
    """The exchange's record of ``cid`` (sealed in Redis), as the paper broker reads it."""
    return RedisOrderStore(client, key, Seals(load_settings(), client)).get(cid)


def _child(mode: str, *args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.integration.broker_child", mode, *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("restart", ["restart", "resubmit"])
def test_kill_after_submit_then_restart_loses_and_doubles_nothing(
    engine: Engine,
    trading_url: str,
    servers: dict[str, str],
    exchange: tuple[redis.Redis, str],
    restart: str,
) -> None:
    client, key = exchange
    tag = uuid.uuid4().hex[:10]
    sessions = session_factory(engine)
    with sessions.begin() as db:
        user = User(username=f"k{tag}", password_hash="x", role=Role.MEMBER)
        portfolio = Portfolio(user=user, name="main", capital=D(10000))
        asset = Asset(portfolio=portfolio, symbol="ETH-USD")
        db.add_all([user, portfolio, asset])
        db.flush()
        pid, aid = portfolio.id, asset.id
    args = (trading_url, servers["redis_url"], key, pid, aid, "cycle-42", "2000")

    crashed = _child("crash", *args)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert crashed.stdout == ""

    # After the crash: the intent is in the database, the order is at the exchange,
    # the database never heard back.
    (cid,) = (c.decode() for c in client.hkeys(key))  # type: ignore[union-attr]
    at_exchange = _record(client, key, cid)
    assert at_exchange is not None
    assert at_exchange["status"] == "filled" and D(at_exchange["filled_quantity"]) == D("1.5")
    with sessions() as db:
        (order,) = db.scalars(select(Order).where(Order.portfolio_id == pid)).all()
        assert order.client_order_id == cid and order.status == OrderStatus.NEW
        assert order.broker_order_id is None
        assert db.scalars(select(Position).where(Position.portfolio_id == pid)).all() == []

    restarted = _child(restart, *args)
    assert restarted.returncode == 0, restarted.stderr
    out: dict[str, Any] = json.loads(restarted.stdout.strip().splitlines()[-1])
    if restart == "restart":
        (mine,) = [r for r in out["reconciled"] if r["client_order_id"] == cid]
        assert mine["status"] == "filled"
        assert out["execute"]["replayed"] is True  # the intent, already done
    assert out["execute"]["status"] == "filled"
    assert out["execute"]["broker_order_id"] == at_exchange["exchange_order_id"]

    # Once at the exchange, once in the database, the position as filled.
    assert client.hlen(key) == 1
    after = _record(client, key, cid)
    assert after is not None and after["fills"] == at_exchange["fills"]
    with sessions() as db:
        (order,) = db.scalars(select(Order).where(Order.portfolio_id == pid)).all()
        assert order.status == OrderStatus.FILLED and order.filled_quantity == D("1.5")
        assert order.broker_order_id == at_exchange["exchange_order_id"]
        (position,) = db.scalars(select(Position).where(Position.portfolio_id == pid)).all()
        assert position.side == "long" and position.quantity == D("1.5")
        assert position.entry_price == D("2002")  # 2000 + 10 bps

    # And a third run of the same intent still changes nothing.
    third = _child("resubmit", *args)
    assert json.loads(third.stdout)["execute"]["replayed"] is True
    assert client.hlen(key) == 1
    with sessions() as db:
        (position,) = db.scalars(select(Position).where(Position.portfolio_id == pid)).all()
        assert position.quantity == D("1.5")
