"""Issue 19, part 2: no money decision from state a Redis-password holder can write.

Each test replays a measured attack with redis-py alone (no CoreC key) on real Redis
and PostgreSQL, and runs the trading task's function in-process as if a forged
``trading.process_assets`` message had reached a worker: the forged input is skipped
or dead-lettered with its reason, an alert is raised, and the NAV, the equity and every
member's value are unchanged.
"""

from __future__ import annotations

import json
import time
from decimal import Decimal as D
from typing import Any

import pytest
import redis

from corec_tasks.settings import Settings
from corec_tasks.streams.bus import StreamBus
from corec_tasks.streams.names import ALERTS
from plugins.capital_pool.consumer import consume_once
from plugins.capital_pool.service import CapitalPool
from plugins.pipeline.config import TradingConfig
from plugins.pipeline.cycle import Trading
from plugins.trading.channels import MACRO_DATA, TRADING_RESULTS

pytestmark = pytest.mark.integration
OP = "operator:tests"
#: Eager, and a broker without fees or slippage: a round trip at one price makes 0.00.
EAGER = TradingConfig(strategy={"prediction_threshold": "0.00001", "exit_band": "0.000001"},
                      broker={"name": "paper", "fee_bps": "0", "slippage_bps": "0"})  # fmt: skip


def _money(pool: CapitalPool) -> tuple[str, str, dict[str, str]]:
    """NAV, equity and every member's value, from the ledger (no cache)."""
    s = pool.status(use_cache=False)
    return s["nav"], s["equity"], {u: m["value"] for u, m in s["members"].items()}


def _alerts(settings: Settings, source: str) -> list[dict[str, Any]]:
    with StreamBus(settings) as bus:
        return [a["payload"] for a in bus.tail(ALERTS, 200)
                if a["payload"].get("source") == source]  # fmt: skip


def _forged_job(t: Trading, symbol: str, cycle: str, prediction: float) -> dict[str, Any]:
    """What an attacker puts in a forged ``trading.process_assets`` message."""
    portfolio_id, assets = t.ensure_portfolio()
    asset_id = dict((s, a) for a, s in assets)[symbol]
    return {"portfolio_id": portfolio_id, "asset_id": asset_id, "symbol": symbol,
            "cycle": cycle, "prediction": prediction, "equity": "1000000000", "vix": "9",
            "cap": "1000000000", "rebalance": False}  # fmt: skip


@pytest.fixture()
def members(pool: CapitalPool) -> CapitalPool:
    assert pool.contribute("alice", "10000", "a-1", principal=OP)["ok"]
    assert pool.contribute("bob", "500", "b-1", principal=OP)["ok"]
    return pool


def test_forged_prices_and_forged_tasks_create_no_money(
    capital_settings: Settings, members: CapitalPool
) -> None:
    """The measured attack: a price pushed onto feeds:history:BTCUSDT, a forged task
    (prediction 0.9), a second price, a second forged task (-0.9). The broker fills
    only at the authenticated price, so the round trip makes exactly 0.00."""
    pool = members
    t = Trading(capital_settings, EAGER)
    client: Any = redis.Redis.from_url(capital_settings.redis_url)
    history = capital_settings.key("feeds:history:BTCUSDT")
    try:
        t.prepare("c0")  # allocations in the book, the market ticked
        real = t.history.latest("BTCUSDT")
        assert real is not None
        before = _money(pool)
        client.lpush(history, "1.00")  # the attacker's price, as measured
        client.lpush(history, "0" * 64 + "." + json.dumps(
            {"p": "1.00", "at": time.time() + 60, "tick": "x"}))  # a made-up seal
        eth = client.lindex(capital_settings.key("feeds:history:ETHUSDT"), 0)
        client.lpush(history, eth)  # a genuine element of another symbol's list
        old = client.lindex(history, 5)
        client.lpush(history, old)  # an older genuine BTC element, replayed as newest
        opened = t.process_asset(_forged_job(t, "BTCUSDT", "forged-1", 0.9))
        assert opened["action"] == "open" and opened["ok"], opened
        assert D(opened["price"]) == real.price.quantize(D("0.00000001"))
        client.lpush(history, "1000000.00")  # the second forged price
        closed = t.process_asset(_forged_job(t, "BTCUSDT", "forged-2", -0.9))
        assert closed["action"] == "close" and closed["ok"], closed
        assert D(closed["price"]) == D(opened["price"]) and closed["profit"] == "0.00"
        assert t.history.seals.rejected["feeds:history"] >= 3
    finally:
        t.close()
        client.close()
    stats = consume_once(pool)
    assert stats.applied == 1 and stats.dead_lettered == 0  # the real 0.00 result
    assert _money(pool) == before
    assert [a for a in _alerts(capital_settings, "redis.signature")
            if a["subject"] == "feeds:history"], "no alert for the forged prices"
    assert pool.verify()["ok"]


def test_a_forged_job_cannot_price_one_asset_at_anothers_price(
    capital_settings: Settings, members: CapitalPool
) -> None:
    """A forged job naming BTC's asset id with symbol ETHUSDT: the symbol is the asset
    row's, so the order fills at BTC's authenticated price."""
    t = Trading(capital_settings, EAGER)
    try:
        t.prepare("c0")
        job = {**_forged_job(t, "BTCUSDT", "forged-1", 0.9), "symbol": "ETHUSDT"}
        out = t.process_asset(job)
        btc = t.history.latest("BTCUSDT")
        assert btc is not None and out["symbol"] == "BTCUSDT"
        assert D(out["price"]) == btc.price.quantize(D("0.00000001"))
    finally:
        t.close()


def test_a_fake_allocation_in_the_book_is_never_traded(
    capital_settings: Settings, members: CapitalPool
) -> None:
    """The measured attack: a fake allocation pushed onto trading:allocations:book. The
    forged task claims past it (reported) and trades a sealed one of the pool's."""
    pool = members
    t = Trading(capital_settings, EAGER)
    client: Any = redis.Redis.from_url(capital_settings.redis_url)
    try:
        t.prepare("c0")
        before = _money(pool)
        issued = {a["allocation_id"]: D(a["amount"]) for a in t.book()}
        fake = {"kind": "allocation", "allocation_id": "fake-1", "amount": "10000000.00",
                "created_at": time.time()}  # fmt: skip
        client.lpush(capital_settings.key("trading:allocations:book"), json.dumps(fake))
        assert "fake-1" not in {a["allocation_id"] for a in t.book()}
        out = t.process_asset(_forged_job(t, "BTCUSDT", "forged-1", 0.9))
        assert out["action"] == "open", out
        held = t._held_allocation(*(_forged_job(t, "BTCUSDT", "x", 0)[k]
                                    for k in ("portfolio_id", "asset_id")))  # fmt: skip
        assert held is not None and held["allocation_id"] in issued
        assert D(out["filled"]) * D(out["price"]) <= issued[held["allocation_id"]]
        assert t.seals.rejected["trading:allocations"] >= 1  # t.book() saw it too
    finally:
        t.close()
        client.close()
    assert _money(pool) == before
    assert [a for a in _alerts(capital_settings, "redis.signature")
            if a["subject"] == "trading:allocations"]  # fmt: skip


def test_the_pool_applies_a_result_only_to_its_open_allocation_within_the_bound(
    capital_settings: Settings, members: CapitalPool
) -> None:
    """Even a *signed* result (a forged task ran, or a bug) moves no money unless it
    names an open allocation the pool issued and stays within its bound: a NULL
    allocation_id (the measured $8,984,505), an id the pool never issued, one above the
    bound, and a second result on a closed allocation are dead-lettered with the pool's
    reason and an error alert; the NAV does not move."""
    pool = members
    allocs = pool.allocate("r1")["allocations"]
    a0, a1 = allocs[0]["allocation_id"], allocs[1]["allocation_id"]
    amount = D(allocs[0]["amount"])
    before = _money(pool)
    forged = [
        ({"trade_id": "t-null", "profit": "8984505.00", "quantity": "1000", "price": "9000"},
         "allocation_id is missing"),
        ({"trade_id": "t-fake", "profit": "100.00", "quantity": "1", "price": "1000",
          "allocation_id": "fake-1"}, "never issued by the pool"),
        ({"trade_id": "t-big", "profit": str(amount + D("0.01")), "quantity": "1",
          "price": "100000", "allocation_id": a0}, "exceeds the bound"),
    ]  # fmt: skip
    with StreamBus(capital_settings) as bus:
        ids = {bus.publish(TRADING_RESULTS, r): why for r, why in forged}
        stats = consume_once(pool)
        assert (stats.applied, stats.dead_lettered) == (0, 3), stats
        dead = {d["id"]: d["reason"] for d in bus.dead_letters(10)}
        for entry_id, why in ids.items():
            assert why in dead[entry_id], dead
        assert _money(pool) == before
        # The same allocation, within its bound, applies once; a second result on it not.
        bus.publish(TRADING_RESULTS, {"trade_id": "t-ok", "profit": "0.00", "quantity": "1",
                                      "price": "100", "allocation_id": a1})  # fmt: skip
        bus.publish(TRADING_RESULTS, {"trade_id": "t-again", "profit": "5.00",
                                      "quantity": "1", "price": "100",
                                      "allocation_id": a1})  # fmt: skip
        stats = consume_once(pool)
        assert (stats.applied, stats.dead_lettered) == (1, 1), stats
        assert "is closed, not open" in bus.dead_letters(1)[0]["reason"]
    assert _money(pool) == before
    refused = _alerts(capital_settings, "capital_pool.trade_refused")
    assert refused and refused[0]["level"] == "error"
    assert pool.verify()["ok"]


def test_an_unsigned_vix_changes_no_risk(
    capital_settings: Settings, members: CapitalPool
) -> None:
    """The measured attack: an unsigned macro_data VIX of 95 halved risk per trade. It
    is dead-lettered by the pool's consumer with the stream.signature alert; a forged
    stored VIX is not used either."""
    pool = members
    with StreamBus(capital_settings) as bus:
        assert MACRO_DATA in bus.signed_streams
        bus.publish(MACRO_DATA, {"vix_price": 15.0, "sp500_price": 4500.0})  # CoreC's, signed
        assert consume_once(pool).macro == 1
        risk = pool.status(use_cache=False)["risk_per_trade"]
        bus.client.xadd(bus.key(MACRO_DATA), {b"d": json.dumps(
            {"vix_price": 95.0, "sp500_price": 4500.0, "timestamp": time.time()}).encode(),
            b"i": b"mallory", b"t": b"%d" % (time.time() * 1000)})  # fmt: skip
        stats = consume_once(pool)
        assert (stats.macro, stats.dead_lettered) == (0, 1), stats
        assert bus.dead_letters(1)[0]["reason"] == (
            "capital_pool: unsigned entry on a signed stream")
    assert pool.vix()[0] == D("15.0")
    assert pool.status(use_cache=False)["risk_per_trade"] == risk
    assert [a for a in _alerts(capital_settings, "stream.signature")
            if a["subject"] == MACRO_DATA]  # fmt: skip
    # Written straight to Redis: not sealed, so not a VIX (the pool assumes a high one,
    # the side that only cuts risk, and alerts).
    pool.redis.set(pool.k_macro, json.dumps({"vix": "9", "at": repr(time.time())}))
    assert pool.vix()[0] is None
    assert pool.seals.rejected["capital_pool:macro"] == 1


def test_forged_feed_state_and_a_forged_exchange_order_are_not_used(
    capital_settings: Settings, members: CapitalPool
) -> None:
    """The feed's stored last close (the next price is computed from it) and the paper
    exchange's order record (its fill price) are sealed: written by redis-py alone,
    neither moves a price or fills an order."""
    pool = members
    t = Trading(capital_settings, EAGER)
    client: Any = redis.Redis.from_url(capital_settings.redis_url)
    try:
        t.prepare("c0")
        before = _money(pool)
        last = t.history.latest("BTCUSDT")
        assert last is not None
        client.hset(capital_settings.key("feeds:market:close"), "BTCUSDT", "1000000.0")
        t.feeds.market.tick("c1")
        now = t.history.latest("BTCUSDT")
        assert now is not None and now.tick == "c1"
        assert abs(now.price / last.price - 1) < D("0.05")  # a GBM step, not x28
        assert t.feeds.market.seals.rejected["feeds:market"] == 1
        # The next intent's client order id is deterministic: an exchange record written
        # ahead of it, filled at a price of the attacker's choosing, is refused.
        job = _forged_job(t, "BTCUSDT", "forged-9", 0.9)
        cid = f"corec-{job['portfolio_id']}-{job['asset_id']}-forged-9"
        client.hset(capital_settings.key("broker:paper:orders"), cid, json.dumps({
            "client_order_id": cid, "exchange_order_id": "x", "symbol": "BTCUSDT",
            "side": "buy", "type": "market", "quantity": "1", "limit_price": None,
            "status": "filled", "filled_quantity": "1", "average_price": "1.00", "fee": "0",
            "fills": [], "reject_reason": None}))  # fmt: skip
        out = t.process_asset(job)
        assert out["ok"] is False and "no valid seal" in (out["error"] or ""), out
        assert t._position(job["portfolio_id"], job["asset_id"]) is None
    finally:
        t.close()
        client.close()
    assert _money(pool) == before
    subjects = {a["subject"] for a in _alerts(capital_settings, "redis.signature")}
    assert {"feeds:market", "broker:paper:orders"} <= subjects, subjects
