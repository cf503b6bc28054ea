"""The paper exchange as plain logic: fills, slippage, fees, limits, partial fills, ids."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from corec_tasks.errors import ConfigurationError
from plugins.broker.paper import BrokerError, PaperBroker, file_config, load_config

D = Decimal


def _broker(**config: object) -> PaperBroker:
    return PaperBroker(config)


def test_market_buy_fills_at_price_plus_slippage_with_fee() -> None:
    b = _broker(slippage_bps="10", fee_bps="25")
    rec = b.submit_order("c1", "BTC-USD", "buy", "market", D("2"), D("100"))
    assert rec["status"] == "filled"
    assert D(rec["filled_quantity"]) == D(2)
    assert D(rec["average_price"]) == D("100.1")  # 100 + 10 bps
    assert D(rec["fee"]) == D("0.5005")  # 25 bps of 2 x 100.1
    assert rec["duplicate"] is False


def test_market_sell_fills_at_price_minus_slippage() -> None:
    b = _broker(slippage_bps="50", fee_bps="0")
    rec = b.submit_order("c1", "BTC-USD", "sell", "market", D("1"), D("200"))
    assert D(rec["average_price"]) == D("199")
    assert D(rec["fee"]) == 0


def test_limit_buy_waits_until_the_price_crosses_and_never_fills_worse() -> None:
    b = _broker(slippage_bps="100", fee_bps="10")
    rec = b.submit_order("c1", "X", "buy", "limit", D("1"), D("101"), limit_price=D("100"))
    assert rec["status"] == "open" and D(rec["filled_quantity"]) == 0
    assert b.fetch_order("c1", D("100.5"))["status"] == "open"  # type: ignore[index]
    rec2 = b.fetch_order("c1", D("99.5"))
    assert rec2 is not None and rec2["status"] == "filled"
    assert D(rec2["average_price"]) == D("99.5")  # market, no slippage: better than limit
    assert D(rec2["fee"]) == D("0.0995")


def test_limit_sell_fills_when_market_at_or_above_limit() -> None:
    b = _broker()
    assert b.submit_order("s", "X", "sell", "limit", D(1), D(99), D(100))["status"] == "open"
    rec = b.fetch_order("s", D(100))
    assert rec is not None and rec["status"] == "filled" and D(rec["average_price"]) == 100


def test_partial_fills_up_to_the_liquidity_per_call_with_exact_average() -> None:
    b = _broker(max_fill_quantity="0.4", fee_bps="10")
    rec = b.submit_order("p", "X", "buy", "market", D("1"), D("100"))
    assert rec["status"] == "partially_filled" and D(rec["filled_quantity"]) == D("0.4")
    rec = b.fetch_order("p", D("110"))  # type: ignore[assignment]
    assert rec["status"] == "partially_filled" and D(rec["filled_quantity"]) == D("0.8")
    rec = b.fetch_order("p", D("130"))  # type: ignore[assignment]
    assert rec["status"] == "filled" and D(rec["filled_quantity"]) == 1
    assert D(rec["average_price"]) == D("110")  # (0.4x100 + 0.4x110 + 0.2x130) / 1
    assert D(rec["fee"]) == D("0.11")  # 10 bps of 110 notional
    assert len(rec["fills"]) == 3
    # A filled order fills no more.
    assert b.fetch_order("p", D(1))["fills"] == rec["fills"]  # type: ignore[index]


def test_same_client_order_id_never_makes_a_second_order() -> None:
    b = _broker()
    first = b.submit_order("dup", "X", "buy", "market", D(1), D(100))
    again = b.submit_order("dup", "X", "buy", "market", D(5), D(50))
    assert again["duplicate"] is True
    assert again["exchange_order_id"] == first["exchange_order_id"]
    assert D(again["filled_quantity"]) == 1 and D(again["average_price"]) == 100


def test_fetch_unknown_is_none_and_cancel_keeps_the_fills() -> None:
    b = _broker(max_fill_quantity="1")
    assert b.fetch_order("nope") is None
    assert b.cancel_order("nope") is None
    b.submit_order("c", "X", "buy", "market", D(3), D(10))
    rec = b.cancel_order("c")
    assert rec is not None and rec["status"] == "cancelled" and D(rec["filled_quantity"]) == 1
    assert b.fetch_order("c", D(10))["filled_quantity"] == rec["filled_quantity"]  # type: ignore[index]


@pytest.mark.parametrize(
    ("side", "kind", "qty", "limit", "reason"),
    [
        ("hold", "market", D(1), None, "side"),
        ("buy", "stop", D(1), None, "order type"),
        ("buy", "market", D(0), None, "positive"),
        ("buy", "limit", D(1), None, "limit price"),
    ],
)
def test_bad_orders_are_rejected_with_a_reason(
    side: str, kind: str, qty: Decimal, limit: Decimal | None, reason: str
) -> None:
    rec = _broker().submit_order("r", "X", side, kind, qty, D(100), limit)
    assert rec["status"] == "rejected" and reason in rec["reject_reason"]


def test_floats_and_empty_ids_are_refused() -> None:
    b = _broker()
    with pytest.raises(BrokerError):
        b.submit_order("", "X", "buy", "market", D(1), D(1))
    rec = b.submit_order("f", "X", "buy", "market", 0.1, D(1))  # type: ignore[arg-type]
    assert rec["status"] == "rejected" and "float" in rec["reject_reason"]


def test_config_errors_name_the_key() -> None:
    assert load_config({"fee_bps": 2.5}).fee_bps == D("2.5")
    with pytest.raises(ConfigurationError, match=r"plugins\.broker\.fee_bps"):
        load_config({"fee_bps": "-1"})
    with pytest.raises(ConfigurationError, match=r"plugins\.broker\.typo"):
        load_config({"typo": 1})


def test_the_shipped_config_file_is_valid(tmp_path: Path) -> None:
    assert file_config().fee_bps == D(10)
    bad = tmp_path / "c.json"
    bad.write_text("{")
    with pytest.raises(ConfigurationError, match=r"c\.json"):
        file_config(bad)
