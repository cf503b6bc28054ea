"""Portable column types and the order lifecycle, without a database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from sqlalchemy.dialects import postgresql, sqlite

from plugins.trading.models import TRANSITIONS, Order, OrderStatus
from plugins.trading.types import Money, UTCDateTime, to_money


def test_money_is_exact_at_18_places_and_refuses_floats() -> None:
    assert to_money("12345678901234567890.123456789012345678") == Decimal(
        "12345678901234567890.123456789012345678"
    )
    assert to_money(3) == Decimal("3.000000000000000000")
    # Ties away from zero at the 18th place, as PostgreSQL's NUMERIC(38, 18) stores them.
    assert to_money("0.0000000000000000005") == Decimal("0.000000000000000001")
    assert to_money("-0.0000000000000000005") == Decimal("-0.000000000000000001")
    with pytest.raises(ValueError, match="at most 20 digits before the point"):
        to_money("123456789012345678901")
    with pytest.raises(TypeError, match="not float"):
        to_money(0.1)
    with pytest.raises(TypeError):
        to_money(True)
    with pytest.raises(ValueError, match="finite"):
        to_money("NaN")
    with pytest.raises(ValueError, match="not a decimal"):
        to_money("ten")


def test_money_binds_text_on_sqlite_and_decimal_on_postgresql() -> None:
    money = Money()
    amount = Decimal("0.1")
    assert money.process_bind_param(amount, sqlite.dialect()) == "0.100000000000000000"
    assert money.process_bind_param(amount, postgresql.dialect()) == amount
    assert money.process_result_value("0.100000000000000000", sqlite.dialect()) == amount


def test_datetimes_must_be_aware_and_come_back_in_utc() -> None:
    col = UTCDateTime()
    with pytest.raises(ValueError, match="time-zone aware"):
        col.process_bind_param(datetime(2025, 1, 1), sqlite.dialect())
    paris = datetime(2025, 1, 1, 13, 0, tzinfo=timezone(timedelta(hours=1)))
    stored = col.process_bind_param(paris, sqlite.dialect())
    assert stored == datetime(2025, 1, 1, 12, 0)
    assert col.process_result_value(stored, sqlite.dialect()) == datetime(
        2025, 1, 1, 12, 0, tzinfo=UTC
    )


def test_order_lifecycle() -> None:
    order = Order(client_order_id="c-1", status=OrderStatus.NEW)
    for status in (OrderStatus.SUBMITTED, OrderStatus.PARTIALLY_FILLED, OrderStatus.FILLED):
        order.transition(status)
    assert order.status is OrderStatus.FILLED
    with pytest.raises(ValueError, match="cannot go from filled to cancelled"):
        order.transition(OrderStatus.CANCELLED)
    assert {s for s, nxt in TRANSITIONS.items() if not nxt} == {
        OrderStatus.FILLED,
        OrderStatus.CANCELLED,
        OrderStatus.REJECTED,
    }
    assert [s.value for s in OrderStatus] == [
        "new",
        "submitted",
        "partially_filled",
        "filled",
        "cancelled",
        "rejected",
    ]
