"""The ccxt adapter against a fake of Binance's HTTP API (never a real exchange):
fills, idempotent client order ids, status mapping, a dead or silent exchange, and
BrokerService end to end on SQLite."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from corec_tasks.errors import ConfigurationError
from plugins.broker.ccxt_adapter import CcxtBroker, ExchangeBrokerError
from plugins.broker.service import BrokerService, client_order_id, reconcile
from plugins.trading.db import make_trading_engine, prepare, session_factory
from plugins.trading.models import Asset, Order, OrderStatus, Portfolio, Position, Role, User
from tests.integration.fake_binance import API_KEY, SECRET, FakeBinance

pytestmark = pytest.mark.integration

D = Decimal
ENV = {"COREC_EXCHANGE_API_KEY": API_KEY, "COREC_EXCHANGE_SECRET": SECRET}
SYMBOLS = {"BTC-USD": "BTC/USDT", "ETH-USD": "ETH/USDT"}


@pytest.fixture()
def fake() -> Iterator[FakeBinance]:
    exchange = FakeBinance().start()
    yield exchange
    exchange.stop()


def _broker(url: str, **extra: Any) -> CcxtBroker:
    return CcxtBroker(
        {"api_url": url, "symbols": SYMBOLS, "timeout_ms": 2000, **extra}, environ=ENV
    )


@pytest.fixture()
def broker(fake: FakeBinance) -> Iterator[CcxtBroker]:
    b = _broker(fake.url)
    yield b
    b.close()


def test_market_order_fills_through_the_exchange(fake: FakeBinance, broker: CcxtBroker) -> None:
    rec = broker.submit_order("m-1", "BTC-USD", "buy", "market", D("0.25"), D(1))
    assert rec["status"] == "filled" and rec["duplicate"] is False
    assert D(rec["filled_quantity"]) == D("0.25") and D(rec["average_price"]) == 50000
    assert D(rec["fee"]) == D("12.5")  # 0.1% of 12,500 USDT
    assert rec["exchange_order_id"] == str(fake.orders["m-1"]["orderId"])
    assert rec["symbol"] == "BTC-USD" and rec["side"] == "buy" and rec["type"] == "market"
    assert fake.orders["m-1"]["origQty"] == "0.25000000" and fake.placed == 1


@pytest.mark.parametrize("lookup", [True, False], ids=["lookup-first", "duplicate-error"])
def test_the_same_client_order_id_twice_is_one_exchange_order(
    fake: FakeBinance, lookup: bool
) -> None:
    broker = _broker(fake.url, lookup_before_submit=lookup)
    try:
        first = broker.submit_order("dup-1", "BTC-USD", "buy", "market", D(1), D(1))
        # A restarted process (no memory of the first) retries the same intent.
        again = _broker(fake.url, lookup_before_submit=lookup).submit_order(
            "dup-1", "BTC-USD", "buy", "market", D(1), D(1)
        )
    finally:
        broker.close()
    assert fake.placed == 1
    assert again["duplicate"] is True
    assert again["exchange_order_id"] == first["exchange_order_id"]
    assert again["filled_quantity"] == first["filled_quantity"]
    posts = [r for r in fake.requests if r == ("POST", "/api/v3/order")]
    assert len(posts) == (1 if lookup else 2)  # the second refused with -2010


@pytest.mark.parametrize(
    ("binance", "executed", "status", "filled"),
    [
        ("NEW", None, "open", "0"),
        ("PARTIALLY_FILLED", "0.4", "partially_filled", "0.4"),
        ("FILLED", "1", "filled", "1"),
        ("CANCELED", "0.4", "cancelled", "0.4"),
        ("EXPIRED", None, "cancelled", "0"),
        ("REJECTED", None, "rejected", "0"),
    ],
)
def test_fetch_by_client_order_id_maps_statuses(
    fake: FakeBinance,
    broker: CcxtBroker,
    binance: str,
    executed: str | None,
    status: str,
    filled: str,
) -> None:
    rec = broker.submit_order("l-1", "ETH-USD", "sell", "limit", D(1), D(1), D("3100"))
    assert rec["status"] == "open" and rec["limit_price"] is not None
    assert D(rec["limit_price"]) == 3100
    fake.set_order("l-1", binance, executed)
    got = broker.fetch_order("l-1")
    assert got is not None and got["status"] == status
    assert D(got["filled_quantity"]) == D(filled)
    if D(filled):
        assert D(got["average_price"]) == 3100
    if status == "rejected":
        assert got["reject_reason"]
    assert broker.fetch_order("never-sent") is None


def test_a_restarted_process_finds_the_order_through_the_configured_markets(
    fake: FakeBinance, broker: CcxtBroker
) -> None:
    broker.submit_order("r-1", "ETH-USD", "buy", "market", D(2), D(1))
    fresh = _broker(fake.url)
    try:
        rec = fresh.fetch_order("r-1")
    finally:
        fresh.close()
    assert rec is not None and rec["status"] == "filled" and rec["symbol"] == "ETH-USD"


def test_an_exchange_that_is_down_is_a_retryable_broker_error_at_once(fake: FakeBinance) -> None:
    url = fake.url
    fake.stop()  # the port is closed now
    broker = _broker(url)
    try:
        started = time.monotonic()
        with pytest.raises(ExchangeBrokerError, match="unreachable") as err:
            broker.submit_order("down-1", "BTC-USD", "buy", "market", D(1), D(1))
        assert err.value.retryable is True
        assert time.monotonic() - started < 2
    finally:
        broker.close()


def test_a_silent_exchange_times_out_instead_of_hanging() -> None:
    # A socket that listens but never answers: the connection opens, no reply comes.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        port = sock.getsockname()[1]
        broker = _broker(f"http://127.0.0.1:{port}", timeout_ms=300)
        try:
            started = time.monotonic()
            with pytest.raises(ExchangeBrokerError) as err:
                broker.fetch_order("quiet-1")
            assert err.value.retryable is True
            assert time.monotonic() - started < 3
        finally:
            broker.close()


def test_refused_credentials_are_not_retryable(fake: FakeBinance) -> None:
    broker = CcxtBroker(
        {"api_url": fake.url, "symbols": SYMBOLS},
        environ={"COREC_EXCHANGE_API_KEY": API_KEY, "COREC_EXCHANGE_SECRET": "wrong"},
    )
    try:
        with pytest.raises(ExchangeBrokerError) as err:
            broker.submit_order("auth-1", "BTC-USD", "buy", "market", D(1), D(1))
    finally:
        broker.close()
    assert err.value.retryable is False and "Signature" in str(err.value)
    assert fake.placed == 0


def test_an_order_the_exchange_refuses_is_a_rejected_record(
    fake: FakeBinance, broker: CcxtBroker, sessions: sessionmaker[Session], ids: tuple[int, int]
) -> None:
    rec = broker.submit_order("poor-1", "BTC-USD", "buy", "market", D(100), D(1))  # 5M USDT
    assert rec["status"] == "rejected" and "insufficient balance" in rec["reject_reason"]
    assert fake.placed == 0
    res = BrokerService(sessions, broker).execute(_open("100"), ids[0], ids[1], D(1), cycle=3)
    assert res["success"] is False and res["status"] == "rejected"
    assert "insufficient balance" in res["error_message"]


def test_missing_credentials_and_unknown_options_name_the_key() -> None:
    with pytest.raises(ConfigurationError, match="COREC_EXCHANGE_SECRET"):
        CcxtBroker({}, environ={"COREC_EXCHANGE_API_KEY": "k"})
    with pytest.raises(ConfigurationError, match=r"plugins\.broker\.api_key"):
        CcxtBroker({"api_key": "inline secrets are refused"}, environ=ENV)
    with pytest.raises(ConfigurationError, match="no exchange"):
        CcxtBroker({"exchange": "nonexistent"}, environ=ENV)


def test_a_missing_ccxt_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from plugins.broker.paper import BrokerError

    monkeypatch.setitem(sys.modules, "ccxt", None)  # import ccxt -> ImportError
    with pytest.raises(BrokerError, match=r"pip install corec-tasks\[exchange\]"):
        CcxtBroker({}, environ=ENV)


def test_sandbox_points_at_the_testnet_unless_overridden() -> None:
    broker = CcxtBroker({"sandbox": True}, environ=ENV)
    try:
        assert broker.exchange.urls["api"]["private"].startswith("https://testnet.binance")
    finally:
        broker.close()


# -- BrokerService end to end, on SQLite ---------------------------------------------------


@pytest.fixture()
def sessions(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    engine = make_trading_engine(f"sqlite:///{tmp_path / 'ccxt.db'}")
    prepare(engine)
    yield session_factory(engine)
    engine.dispose()


@pytest.fixture()
def ids(sessions: sessionmaker[Session]) -> tuple[int, int]:
    tag = uuid.uuid4().hex[:10]
    with sessions.begin() as db:
        user = User(username=f"x{tag}", password_hash="x", role=Role.MEMBER)
        portfolio = Portfolio(user=user, name="main", capital=D(100000))
        asset = Asset(portfolio=portfolio, symbol="BTC-USD")
        db.add_all([user, portfolio, asset])
        db.flush()
        return portfolio.id, asset.id


def _open(qty: str, **extra: Any) -> dict[str, Any]:
    return {"action": "open", "parameters": {"side": "buy", "quantity": qty, **extra}}


def test_broker_service_end_to_end_on_sqlite(
    fake: FakeBinance, broker: CcxtBroker, sessions: sessionmaker[Session], ids: tuple[int, int]
) -> None:
    svc = BrokerService(sessions, broker)
    res = svc.execute(_open("0.2", order_type="market"), ids[0], ids[1], D(49000), cycle=1)
    assert res["success"] and res["status"] == "filled", res
    cid = client_order_id(ids[0], ids[1], 1)
    assert res["client_order_id"] == cid and fake.orders[cid]["status"] == "FILLED"
    assert res["broker_order_id"] == str(fake.orders[cid]["orderId"])
    assert D(res["average_price"]) == 50000 and D(res["fee"]) == 10  # the exchange's price
    with sessions() as db:
        order = db.scalars(select(Order).where(Order.client_order_id == cid)).one()
        assert order.status == OrderStatus.FILLED and order.filled_quantity == D("0.2")
        (pos,) = db.scalars(select(Position).where(Position.asset_id == ids[1])).all()
        assert pos.side == "long" and pos.quantity == D("0.2") and pos.entry_price == 50000

    # The same intent again: replayed from the database, nothing new at the exchange.
    again = svc.execute(_open("0.2"), ids[0], ids[1], D(49000), cycle=1)
    assert again["replayed"] is True and fake.placed == 1

    # A limit close rests, then fills at the exchange; reconcile (a fresh adapter, as
    # after a restart) brings Order and Position in line.
    close = {"action": "close", "parameters": {"order_type": "limit", "price": "51000"}}
    res = svc.execute(close, ids[0], ids[1], D(50500), cycle=2)
    assert res["success"] and res["status"] == "submitted", res
    fake.set_order(client_order_id(ids[0], ids[1], 2), "FILLED", "0.2")
    fresh = _broker(fake.url)
    try:
        with sessions() as db:
            out = reconcile(db, fresh, min_age=timedelta(0))
    finally:
        fresh.close()
    assert [r["status"] for r in out] == ["filled"]
    with sessions() as db:
        (pos,) = db.scalars(select(Position).where(Position.asset_id == ids[1])).all()
        assert pos.quantity == 0 and pos.closed_at is not None
        assert pos.realized_pnl == D(200)  # (51000 - 50000) x 0.2
    assert fake.placed == 2


def test_broker_service_reports_a_down_exchange_and_keeps_the_intent(
    fake: FakeBinance, sessions: sessionmaker[Session], ids: tuple[int, int]
) -> None:
    url = fake.url
    fake.stop()
    broker = _broker(url)
    try:
        res = BrokerService(sessions, broker).execute(
            _open("0.1"), ids[0], ids[1], D(50000), cycle=9
        )
    finally:
        broker.close()
    assert res["success"] is False and res["status"] == "error"
    assert "unreachable" in res["error_message"]
    with sessions() as db:
        assert db.get_one(Order, res["order_id"]).status == OrderStatus.NEW  # to retry
