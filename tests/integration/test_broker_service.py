"""The broker's order path on PostgreSQL and on SQLite: intent, submit, Order, Position,
replay, reconcile, and broker failures as results."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from corec_tasks.settings import Settings
from plugins.broker.paper import PaperBroker, redis_store
from plugins.broker.service import BrokerService, client_order_id, reconcile
from plugins.trading.db import make_trading_engine, prepare, session_factory
from plugins.trading.models import Asset, Order, OrderStatus, Portfolio, Position, Role, User

pytestmark = pytest.mark.integration

D = Decimal


@pytest.fixture()
def engine(trading_url: str) -> Iterator[Engine]:
    eng = make_trading_engine(trading_url)
    prepare(eng)
    yield eng
    eng.dispose()


@pytest.fixture()
def sessions(engine: Engine) -> sessionmaker[Session]:
    return session_factory(engine)


@pytest.fixture()
def ids(sessions: sessionmaker[Session]) -> tuple[int, int]:
    """A fresh portfolio with one asset: (portfolio id, asset id)."""
    tag = uuid.uuid4().hex[:10]
    with sessions.begin() as db:
        user = User(username=f"b{tag}", password_hash="x", role=Role.MEMBER)
        portfolio = Portfolio(user=user, name="main", capital=D(10000))
        asset = Asset(portfolio=portfolio, symbol="BTC-USD")
        db.add_all([user, portfolio, asset])
        db.flush()
        return portfolio.id, asset.id


def _open(side: str = "buy", qty: object = "2", **extra: Any) -> dict[str, Any]:
    return {
        "action": "open",
        "parameters": {"order_type": "market", "side": side, "quantity": qty, **extra},
    }


def _positions(sessions: sessionmaker[Session], ids: tuple[int, int]) -> list[Position]:
    with sessions() as db:
        return list(
            db.scalars(
                select(Position)
                .where(Position.portfolio_id == ids[0], Position.asset_id == ids[1])
                .order_by(Position.id)
            )
        )


def _orders(sessions: sessionmaker[Session], ids: tuple[int, int]) -> int:
    with sessions() as db:
        return (
            db.scalar(select(func.count()).select_from(Order).where(Order.portfolio_id == ids[0]))
            or 0
        )


def test_open_then_close_moves_order_and_position(
    sessions: sessionmaker[Session], ids: tuple[int, int]
) -> None:
    svc = BrokerService(sessions, PaperBroker({"slippage_bps": "10", "fee_bps": "20"}))
    res = svc.execute(
        _open(qty=2.0, stop_loss=90.5, take_profit=130), ids[0], ids[1], D(100), cycle=1
    )
    assert res["success"] and res["status"] == "filled", res
    assert res["filled_quantity"] == "2.000000000000000000"
    assert D(res["average_price"]) == D("100.1") and D(res["fee"]) == D("0.4004")
    assert res["broker_order_id"].startswith("paper-")
    assert res["client_order_id"] == client_order_id(ids[0], ids[1], 1)
    (pos,) = _positions(sessions, ids)
    assert pos.side == "long" and pos.quantity == 2 and pos.entry_price == D("100.1")
    assert pos.stop_loss == D("90.5") and pos.take_profit == 130

    res = svc.execute({"action": "close", "parameters": {}}, ids[0], ids[1], D(120), cycle=2)
    assert res["success"] and res["status"] == "filled", res
    (pos,) = _positions(sessions, ids)
    assert pos.quantity == 0 and pos.closed_at is not None
    # Sold at 120 - 10 bps = 119.88, bought at 100.1: (19.78) x 2.
    assert pos.realized_pnl == D("39.56")


def test_the_same_intent_twice_is_one_order_and_one_fill(
    sessions: sessionmaker[Session], ids: tuple[int, int]
) -> None:
    svc = BrokerService(sessions, PaperBroker())
    first = svc.execute(_open(), ids[0], ids[1], D(100), cycle="c7")
    again = svc.execute(_open(qty="9"), ids[0], ids[1], D(50), cycle="c7")
    assert again["replayed"] is True and again["order_id"] == first["order_id"]
    assert again["filled_quantity"] == first["filled_quantity"]
    assert _orders(sessions, ids) == 1
    (pos,) = _positions(sessions, ids)
    assert pos.quantity == 2


def test_partial_fills_progress_on_later_calls_and_add_up(
    sessions: sessionmaker[Session], ids: tuple[int, int]
) -> None:
    svc = BrokerService(sessions, PaperBroker({"max_fill_quantity": "0.5"}))
    res = svc.execute(_open(qty="1.2"), ids[0], ids[1], D(100), cycle=1)
    assert res["status"] == "partially_filled" and D(res["filled_quantity"]) == D("0.5")
    res = svc.execute(_open(qty="1.2"), ids[0], ids[1], D(110), cycle=1)
    assert res["status"] == "partially_filled" and D(res["filled_quantity"]) == 1
    res = svc.execute(_open(qty="1.2"), ids[0], ids[1], D(120), cycle=1)
    assert res["status"] == "filled" and D(res["filled_quantity"]) == D("1.2")
    (pos,) = _positions(sessions, ids)
    assert pos.quantity == D("1.2")
    # (0.5x100 + 0.5x110 + 0.2x120) / 1.2
    assert pos.entry_price == (D(129) / D("1.2")).quantize(D("1e-18"))
    assert _orders(sessions, ids) == 1


def test_limit_order_waits_and_reconcile_fills_it(
    sessions: sessionmaker[Session], ids: tuple[int, int]
) -> None:
    svc = BrokerService(sessions, PaperBroker())
    action = {
        "action": "open",
        "parameters": {"order_type": "limit", "side": "sell", "quantity": "1", "price": "105"},
    }
    res = svc.execute(action, ids[0], ids[1], D(100), cycle=1)
    assert res["success"] and res["status"] == "submitted"
    assert _positions(sessions, ids) == []
    with sessions() as db:
        out = reconcile(db, svc.broker, min_age=timedelta(0), market_prices={ids[1]: D(106)})
    mine = [r for r in out if r["client_order_id"] == res["client_order_id"]]
    assert mine and mine[0]["status"] == "filled"
    (pos,) = _positions(sessions, ids)
    assert pos.side == "short" and pos.quantity == 1 and pos.entry_price == 106


@pytest.mark.parametrize(
    ("action", "needle"),
    [
        ({"action": "buy"}, "open, close or none"),
        ({"action": "open", "parameters": {"side": "buy"}}, "quantity is required"),
        ({"action": "open", "parameters": {"side": "up", "quantity": 1}}, "side"),
        (
            {"action": "open", "parameters": {"order_type": "limit", "side": "buy", "quantity": 1}},
            "price is required",
        ),
        ({"action": "open", "parameters": {"side": "buy", "quantity": "-1"}}, "positive"),
        ({"action": "close", "parameters": {}}, "no open position"),
        ("open", "dict"),
    ],
)
def test_bad_actions_are_error_results_and_write_nothing(
    sessions: sessionmaker[Session], ids: tuple[int, int], action: Any, needle: str
) -> None:
    res = BrokerService(sessions, PaperBroker()).execute(action, ids[0], ids[1], D(1), cycle=1)
    assert res["success"] is False and needle in res["error_message"]
    assert _orders(sessions, ids) == 0


def test_none_is_a_successful_no_op(sessions: sessionmaker[Session], ids: tuple[int, int]) -> None:
    res = BrokerService(sessions, PaperBroker()).execute(
        {"action": "none"}, ids[0], ids[1], D(1), cycle=1
    )
    assert res["success"] and res["status"] == "none" and res["order_id"] is None


class _Exploding(PaperBroker):
    name = "exploding"

    def submit_order(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        raise ConnectionError("exchange unreachable")


def test_a_broker_exception_is_a_result_and_reconcile_rejects_the_lost_intent(
    sessions: sessionmaker[Session], ids: tuple[int, int]
) -> None:
    broken = _Exploding()
    res = BrokerService(sessions, broken).execute(_open(), ids[0], ids[1], D(100), cycle=1)
    assert res["success"] is False and "exchange unreachable" in res["error_message"]
    assert res["status"] == "error" and res["order_id"] is not None
    with sessions() as db:
        assert db.get_one(Order, res["order_id"]).status == OrderStatus.NEW
        # By default a young intent may still be in flight elsewhere: left alone.
        assert all(r["order_id"] != res["order_id"] for r in reconcile(db, broken))
        out = reconcile(db, broken, min_age=timedelta(0))  # the exchange never heard of it
    mine = [r for r in out if r["order_id"] == res["order_id"]]
    assert mine[0]["status"] == "rejected" and "never reached" in mine[0]["error_message"]
    assert _positions(sessions, ids) == []


def test_close_of_part_and_flip_through_netting(
    sessions: sessionmaker[Session], ids: tuple[int, int]
) -> None:
    svc = BrokerService(sessions, PaperBroker())
    svc.execute(_open(qty="3"), ids[0], ids[1], D(100), cycle=1)
    res = svc.execute(
        {"action": "close", "parameters": {"quantity": "1"}}, ids[0], ids[1], D(110), cycle=2
    )
    assert res["status"] == "filled"
    (pos,) = _positions(sessions, ids)
    assert pos.quantity == 2 and pos.realized_pnl == 10 and pos.closed_at is None
    # Selling 5 against a long of 2: closes it and opens a short of 3.
    svc.execute(_open(side="sell", qty="5"), ids[0], ids[1], D(90), cycle=3)
    old, new = _positions(sessions, ids)
    assert old.closed_at is not None and old.realized_pnl == D(10) + D(-20)
    assert new.side == "short" and new.quantity == 3 and new.entry_price == 90


def test_redis_store_keeps_orders_under_the_deployment_prefix(settings: Settings) -> None:
    store = redis_store(settings)
    broker = PaperBroker({}, store)
    first = broker.submit_order("rs-1", "X", "buy", "market", D(1), D(10))
    # Another broker on the same store (another process, say) sees it and adds nothing.
    again = PaperBroker({}, redis_store(settings)).submit_order(
        "rs-1", "X", "buy", "market", D(1), D(10)
    )
    assert again["duplicate"] and again["exchange_order_id"] == first["exchange_order_id"]
    client = redis.Redis.from_url(settings.redis_url)
    try:
        key = f"{settings.redis_prefix}broker:paper:orders"
        assert client.hlen(key) == 1
        client.delete(key)
    finally:
        client.close()


def test_a_broker_exception_goes_to_the_audit_hook(
    sessions: sessionmaker[Session], ids: tuple[int, int]
) -> None:
    seen: list[dict[str, Any]] = []
    svc = BrokerService(sessions, _Exploding(), audit=lambda error, exc: seen.append(error))
    res = svc.execute(_open(), ids[0], ids[1], D(100), cycle=7)
    assert res["success"] is False
    assert "ConnectionError: exchange unreachable" in res["error_message"]
    [error] = seen
    assert error["method"] == "submit_order" and error["error_type"] == "ConnectionError"
