"""Stream payload schemas: good payloads pass, bad ones fail naming the key."""

from __future__ import annotations

import base64
import gzip
import json
from decimal import Decimal
from typing import Any

import pytest

from corec_tasks.errors import StreamError
from corec_tasks.streams import names
from corec_tasks.streams.schemas import (
    AnyObject,
    PayloadError,
    check_payload,
    schema_for,
    validate_payload,
)
from plugins.trading import channels as ch
from plugins.trading.channels import MAX_INFLATED_BYTES, MarketData, trade_result


def raw(payload: Any) -> bytes:
    return json.dumps(payload).encode()


def packed(body: Any, *, wrap: bool = False) -> str:
    """The seed's form: ``echo '<json>' | gzip | base64`` (wrapped at 76 like base64(1))."""
    text = base64.b64encode(gzip.compress(json.dumps(body).encode() + b"\n")).decode()
    return "\n".join(text[i : i + 76] for i in range(0, len(text), 76)) if wrap else text


GOOD: list[tuple[str, dict[str, Any]]] = [
    (ch.MARKET_DATA, {"symbol": "BTCUSDT", "price": 35000.5}),
    (
        ch.MARKET_DATA,
        {
            "symbol": "ETHUSDT",
            "price": 2000,
            "volume": 0,
            "timestamp": 1714000000.5,
            "ohlc": {"open": 1990, "high": 2010, "low": 1985, "close": 2000},
            "exchange": "binance",
        },
    ),
    (ch.MACRO_DATA, {"sp500_price": 4500.0, "vix_price": 18.0}),
    (ch.MACRO_DATA, {"sp500_price": 4500, "vix_price": 18, "gold_price": 2300, "x": 1}),
    (ch.CAPITAL_DATA, {"user_id": "user1", "action": "contribute", "amount": "500.00"}),
    (ch.CAPITAL_DATA, {"kind": "allocation", "amount": "120.50", "symbol": "BTCUSDT"}),
    (ch.TRADING_RESULTS, {"data": packed({"profit": 50.0, "quantity": 0.001, "price": 3.5e4})}),
    (ch.TRADING_RESULTS, {"trade_id": "t-1", "profit": "-12.5", "quantity": 1, "price": 100}),
    (names.ALERTS, {"level": "WARNING", "source": "audit", "message": "block b1 anomalous"}),
    (names.COMMANDS, {"id": "c1", "command": "status", "args": {"verbose": True}}),
    (names.RESPONSES, {"id": "c1", "response": {"ok": True}}),
    (names.RESPONSES, {"id": "c1", "error": "unknown command"}),
    ("some_plugin_stream", {"anything": [1, 2, 3]}),
]


@pytest.mark.parametrize(("stream", "payload"), GOOD)
def test_good_payloads_pass_and_come_back_as_sent(stream: str, payload: dict[str, Any]) -> None:
    assert validate_payload(stream, raw(payload)) == payload


BAD: list[tuple[str, Any, str]] = [
    (ch.MARKET_DATA, {"price": 1.0}, "symbol: Field required"),
    (ch.MARKET_DATA, {"symbol": "BTC", "price": -5}, "price: Input should be greater than 0"),
    (ch.MARKET_DATA, {"symbol": "BTC", "price": "cheap"}, "price:"),
    (ch.MARKET_DATA, {"symbol": "", "price": 1}, "symbol:"),
    (ch.MARKET_DATA, {"symbol": "B", "price": 1, "volume": -1}, "volume:"),
    (
        ch.MARKET_DATA,
        {"symbol": "B", "price": 1, "ohlc": {"open": 1, "high": 1, "low": 2, "close": 1}},
        "ohlc: high (1.0) is below low (2.0)",
    ),
    (ch.MARKET_DATA, {"symbol": "B", "price": 1, "ohlc": {"open": 1}}, "ohlc.high"),
    (ch.MACRO_DATA, {"sp500_price": 4500.0}, "vix_price: Field required"),
    (ch.MACRO_DATA, {"vix_price": 0, "sp500_price": 1}, "vix_price:"),
    (ch.CAPITAL_DATA, {"user_id": "u1", "amount": "5"}, "action: Field required"),
    (ch.CAPITAL_DATA, {"action": "contribute", "amount": 500.0}, "amount: must be a decimal"),
    (ch.CAPITAL_DATA, {"action": "contribute", "amount": "lots"}, "amount:"),
    (ch.CAPITAL_DATA, {"action": "contribute", "amount": "NaN"}, "amount:"),
    (ch.TRADING_RESULTS, {"data": "not-base64-gzip!"}, "data: not base64"),
    (ch.TRADING_RESULTS, {"data": base64.b64encode(b"plain").decode()}, "not to gzip"),
    (ch.TRADING_RESULTS, {"data": packed({"profit": 1, "price": 2})}, "quantity: Field"),
    (ch.TRADING_RESULTS, {"profit": 1, "quantity": 1, "price": 1}, "trade_id"),
    (ch.TRADING_RESULTS, {"trade_id": "t", "profit": 1, "quantity": 0, "price": 1}, "quantity:"),
    (names.ALERTS, {"level": "loud", "source": "s", "message": "m"}, "level:"),
    (names.ALERTS, {"level": "info", "source": "s"}, "message: Field required"),
    (names.COMMANDS, {"command": "status"}, "id: Field required"),
    (names.COMMANDS, {"id": "c1"}, "command: Field required"),
    (names.RESPONSES, {"id": "c1"}, "response: Field required"),
    ("some_plugin_stream", [1, 2], "must be a JSON object, got an array"),
    (ch.MARKET_DATA, "BTC", "must be a JSON object, got a string"),
]


@pytest.mark.parametrize(("stream", "payload", "reason"), BAD)
def test_bad_payloads_fail_naming_the_key(stream: str, payload: Any, reason: str) -> None:
    with pytest.raises(PayloadError) as info:
        validate_payload(stream, raw(payload))
    assert reason in info.value.reason
    assert isinstance(info.value, StreamError)
    assert stream in str(info.value)


def test_reason_shows_the_bad_value() -> None:
    with pytest.raises(PayloadError, match=r"price: .*\(got -5\)"):
        check_payload(ch.MARKET_DATA, raw({"symbol": "BTC", "price": -5}))


def test_not_json_and_not_utf8() -> None:
    with pytest.raises(PayloadError, match="not valid JSON"):
        check_payload(ch.MARKET_DATA, b'{"symbol": "BTC",')
    with pytest.raises(PayloadError, match="not valid JSON"):
        check_payload("any", b'{"k": "\xff"}')
    with pytest.raises(PayloadError, match="not valid JSON"):
        check_payload("any", b"")


def test_nul_escape_is_rejected_for_jsonb_but_an_escaped_backslash_is_fine() -> None:
    with pytest.raises(PayloadError, match="u0000"):
        check_payload("any", b'{"k": "a\\u0000b"}')
    check_payload("any", b'{"k": "a\\\\u0000b"}')  # a literal backslash, then "u0000"


def test_many_problems_are_summarised() -> None:
    with pytest.raises(PayloadError) as info:
        check_payload(ch.MACRO_DATA, raw({"vix_price": -1, "sp500_price": -1, "gold_price": -1,
                                               "oil_price": -1, "dxy_price": -1}))  # fmt: skip
    assert info.value.reason.endswith("and 2 more")


def test_seed_trading_result_decodes_including_line_wrapped_base64() -> None:
    body = {"profit": 50.0, "quantity": 0.001, "price": 35000.0}
    for wrap in (False, True):
        payload = validate_payload(ch.TRADING_RESULTS, raw({"data": packed(body, wrap=wrap)}))
        result = trade_result(payload)
        assert (result.profit, result.quantity, result.price) == (
            Decimal("50.0"),
            Decimal("0.001"),
            Decimal("35000.0"),
        )
        assert result.trade_id is None


def test_plain_trading_result_decodes() -> None:
    payload = {"trade_id": "t-9", "profit": "-1.25", "quantity": "2", "price": "3.5"}
    result = trade_result(validate_payload(ch.TRADING_RESULTS, raw(payload)))
    assert result.trade_id == "t-9"
    assert result.profit == Decimal("-1.25")


def test_gzip_bomb_is_refused() -> None:
    bomb = base64.b64encode(gzip.compress(b" " * (MAX_INFLATED_BYTES + 10))).decode()
    with pytest.raises(PayloadError, match="inflates beyond"):
        check_payload(ch.TRADING_RESULTS, raw({"data": bomb}))


def test_registry() -> None:
    assert schema_for(ch.MARKET_DATA) is MarketData
    assert schema_for("unknown_stream") is None
    assert schema_for(names.DEAD_LETTER) is None
    for stream in names.PERSISTED:
        assert stream in (names.ALL)
    assert names.DEAD_LETTER not in names.PERSISTED
    assert names.BLOCK_RESULTS not in names.PERSISTED
    assert AnyObject.model_validate_json(b'{"a": 1}').model_extra == {"a": 1}
