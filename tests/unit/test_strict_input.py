"""The strict input rules (corec_tasks.strict) on every path that names money, numbers or
identity: parse_amount (ledger, tasks, CLI), the stream schemas, the task argument
models and the CLI. Each odd notation is refused with a clear error; the valid forms
pass."""

from __future__ import annotations

import base64
import gzip
import json
from decimal import Decimal
from typing import Any

import pytest
from click.testing import CliRunner
from pydantic import TypeAdapter, ValidationError

from corec_tasks.streams import names
from corec_tasks.streams.schemas import (
    PayloadError,
    check_payload,
    payload_checker,
    validate_payload,
)
from corec_tasks.strict import (
    DecimalNumber,
    Key,
    MoneyText,
    Number,
    StrictInputError,
    UserId,
    reason,
    to_decimal,
)
from plugins.capital_pool.money import AmountError, parse_amount
from plugins.trading import channels
from plugins.trading.channels import trade_result

D = Decimal

#: Every odd notation measured on main, and more: (input, what the error says).
ODD: list[tuple[Any, str]] = [
    ("1_000", "not a number in plain decimal digits"),
    ("１００", "not a number in plain decimal digits"),  # fullwidth
    ("١٠٠", "not a number in plain decimal digits"),  # Arabic-Indic
    ("१००", "not a number in plain decimal digits"),  # Devanagari
    (" 100", "not a number in plain decimal digits"),
    ("100 ", "not a number in plain decimal digits"),
    ("100\n", "not a number in plain decimal digits"),
    ("\t100", "not a number in plain decimal digits"),
    ("1e2", "not a number in plain decimal digits"),
    ("1E2", "not a number in plain decimal digits"),
    ("+100", "not a number in plain decimal digits"),
    ("100.", "not a number in plain decimal digits"),
    (".5", "not a number in plain decimal digits"),
    ("0x64", "not a number in plain decimal digits"),
    ("0100", "leading zero"),
    ("00.5", "leading zero"),
    ("-007", "leading zero"),
    ("00", "leading zero"),
    ("0100.00", "leading zero"),
    ("NaN", "not a number in plain decimal digits"),
    ("Infinity", "not a number in plain decimal digits"),
    ("-inf", "not a number in plain decimal digits"),
    ("", "not a number in plain decimal digits"),
    ("10\x000", "not a number in plain decimal digits"),
    ("1" * 100, "not a number in plain decimal digits"),
    (True, "boolean"),
    (False, "boolean"),
    (float("nan"), "finite"),
    (float("inf"), "finite"),
    (None, "got null"),
    ([100], "got an array"),
    ({"v": 1}, "got an object"),
]
VALID: list[tuple[Any, Decimal]] = [
    ("100", D("100")), ("100.5", D("100.5")), ("100.50", D("100.50")), (100, D(100)),
    (100.5, D("100.5")), ("-12.25", D("-12.25")), ("0.001", D("0.001")),
    ("0", D("0")), ("0.5", D("0.5")), ("-0.5", D("-0.5")), ("10", D("10")),
]  # fmt: skip


@pytest.mark.parametrize(("value", "message"), ODD)
def test_to_decimal_refuses_odd_notations(value: Any, message: str) -> None:
    with pytest.raises(StrictInputError, match=message) as info:
        to_decimal(value, "price")
    assert len(str(info.value)) < 250  # the input is cut, never echoed whole


@pytest.mark.parametrize(("value", "expected"), VALID)
def test_to_decimal_accepts_plain_forms(value: Any, expected: Decimal) -> None:
    assert to_decimal(value) == expected


@pytest.mark.parametrize(("value", "message"), ODD)
def test_parse_amount_refuses_odd_notations(value: Any, message: str) -> None:
    message = {"got null": "required", "boolean": "required", "got an array": "not an array",
               "got an object": "not an object"}.get(message, message)  # fmt: skip
    with pytest.raises(AmountError, match=message):
        parse_amount(value)


def test_parse_amount_accepts_the_valid_forms_and_bounds_money() -> None:
    for value in ("100", "100.5", "100.50", 100, 100.5):
        assert parse_amount(value) in (D("100.00"), D("100.50"))
    assert str(parse_amount("100.5")) == "100.50"
    with pytest.raises(AmountError, match="more than 2 decimal places"):
        parse_amount("100.001")
    with pytest.raises(AmountError, match="must be positive"):
        parse_amount("-100")
    with pytest.raises(AmountError, match="too large"):
        parse_amount("1" + "0" * 15)
    assert parse_amount("9" * 15 + ".99") == D("999999999999999.99")


@pytest.mark.parametrize(("value", "message"), [v for v in ODD if v[0] is not None])
def test_stream_numbers_refuse_odd_notations(value: Any, message: str) -> None:
    for kind in (Number, DecimalNumber):
        with pytest.raises(ValidationError):
            TypeAdapter(kind).validate_python(value)
    payload = {"symbol": "BTC", "price": value}
    with pytest.raises(PayloadError, match="price: "):
        check_payload(channels.MARKET_DATA, json.dumps(payload).encode())


def test_stream_numbers_accept_plain_forms() -> None:
    for value in ("100", "100.5", "100.50", 100, 100.5):
        assert TypeAdapter(Number).validate_python(value) in (100.0, 100.5)
        check_payload(channels.MARKET_DATA, json.dumps({"symbol": "BTC", "price": value}).encode())


def test_booleans_never_pass_as_numbers_on_any_stream() -> None:
    """Measured on main: {"vix_price": true, "sp500_price": true} landed in eventos."""
    cases = [
        (channels.MACRO_DATA, {"vix_price": True, "sp500_price": True}, "vix_price"),
        (channels.MARKET_DATA, {"symbol": "B", "price": True}, "price"),
        (channels.MARKET_DATA, {"symbol": "B", "price": 1, "volume": False}, "volume"),
        (channels.TRADING_RESULTS, {"trade_id": "t", "profit": True, "quantity": 1, "price": 1},
         "profit"),
        (channels.CAPITAL_DATA, {"action": "contribute", "amount": True}, "amount"),
    ]  # fmt: skip
    for stream, payload, key in cases:
        with pytest.raises(PayloadError, match=f"{key}: ") as info:
            check_payload(stream, json.dumps(payload).encode())
        assert any(w in info.value.reason for w in ("(got True)", "(got False)", "boolean"))


def test_money_on_capital_data_is_a_string_with_cents_at_most() -> None:
    ok = {"action": "contribute", "user_id": "alice", "amount": "100.50"}
    assert validate_payload(channels.CAPITAL_DATA, json.dumps(ok).encode()) == ok
    for amount in ("100.001", "1_000", " 100", "1e2", 100, "1" * 20):
        with pytest.raises(PayloadError, match="amount: "):
            check_payload(channels.CAPITAL_DATA, json.dumps({**ok, "amount": amount}).encode())


@pytest.mark.parametrize(
    "user_id",
    ["alice\n", "alice ", " alice", "al ice", "a\x00b", "alïce", "a" * 129, "", "a/b", 7, None],
)
def test_user_ids_match_in_full(user_id: Any) -> None:
    with pytest.raises(ValidationError):
        TypeAdapter(UserId).validate_python(user_id)
    if user_id is not None:
        payload = {"action": "contribute", "user_id": user_id}
        with pytest.raises(PayloadError, match="user_id: "):
            check_payload(channels.CAPITAL_DATA, json.dumps(payload).encode())


def test_valid_identifiers_pass() -> None:
    for user in ("alice", "a", "bob.smith@example.com", "u_1:x-2", "a" * 128):
        assert TypeAdapter(UserId).validate_python(user) == user
    for key in ("k-1", "cli-0123abcdef", "task-6f1c/2#3", "k" * 200):
        assert TypeAdapter(Key).validate_python(key) == key
    for bad in ("k\n", "k 1", "k" * 201, "", "kéy", 1):
        with pytest.raises(ValidationError):
            TypeAdapter(Key).validate_python(bad)


def test_money_text_is_the_api_form() -> None:
    for ok in ("100", "100.5", "100.50", "0.01", "0.5", "10", "999999999999999.99"):
        assert TypeAdapter(MoneyText).validate_python(ok) == ok
    for bad in ("100.001", "-1", "1_000", "１００", " 100", "100\n", "1e2", 100, "1" * 16,
                "0100", "00.5", "00", "0100.00", "01"):
        with pytest.raises(ValidationError):
            TypeAdapter(MoneyText).validate_python(bad)


def test_every_stream_string_is_bounded() -> None:
    huge = "x" * 20_000
    cases = [
        (channels.MARKET_DATA, {"symbol": huge, "price": 1}, "symbol"),
        (channels.CAPITAL_DATA, {"action": huge}, "action"),
        (channels.CAPITAL_DATA, {"kind": huge}, "kind"),
        (channels.CAPITAL_DATA, {"kind": "k", "units": huge}, "units"),
        (channels.TRADING_RESULTS, {"trade_id": huge, "profit": 1, "quantity": 1, "price": 1},
         "trade_id"),
        (names.ALERTS, {"level": "info", "source": huge, "message": "m"}, "source"),
        (names.ALERTS, {"level": "info", "source": "s", "message": huge}, "message"),
        (names.ALERTS, {"level": huge, "source": "s", "message": "m"}, "level"),
        (names.COMMANDS, {"id": huge, "command": "c"}, "id"),
        (names.COMMANDS, {"id": "i", "command": huge}, "command"),
        (names.COMMANDS, {"id": "i", "command": "c", "target": huge}, "target"),
        (names.RESPONSES, {"id": huge, "response": 1}, "id"),
        (names.RESPONSES, {"id": "i", "error": huge}, "error"),
    ]  # fmt: skip
    for stream, payload, key in cases:
        with pytest.raises(PayloadError, match=f"{key}: ") as info:
            check_payload(stream, json.dumps(payload).encode())
        assert len(info.value.reason) <= 500
    with pytest.raises(PayloadError, match="larger than"):
        check_payload("any", json.dumps({"k": "x" * (3 << 20)}).encode())


# -- trading results -----------------------------------------------------------------


def _trade(**fields: Any) -> dict[str, Any]:
    return {"trade_id": "t-1", "profit": "10", "quantity": "2", "price": "50", **fields}


def test_trading_results_are_bounded_by_the_capital_at_risk() -> None:
    at_risk = 100  # 2 x 50
    ok = [_trade(profit=str(-at_risk)), _trade(profit=str(10 * at_risk)), _trade(profit=0)]
    for payload in ok:
        trade_result(validate_payload(channels.TRADING_RESULTS, json.dumps(payload).encode()))
    with pytest.raises(PayloadError, match=r"loss of 100\.01 exceeds the capital at risk"):
        check_payload(channels.TRADING_RESULTS, json.dumps(_trade(profit="-100.01")).encode())
    with pytest.raises(PayloadError, match="exceeds 10 times the capital at risk"):
        check_payload(channels.TRADING_RESULTS, json.dumps(_trade(profit="1000.01")).encode())
    # the multiple is configurable per call
    big = _trade(profit="5000")
    assert trade_result(big, max_profit_multiple=D(100)).profit == D(5000)
    with pytest.raises(ValidationError, match="exceeds 10 times"):
        trade_result(big)
    lenient = payload_checker(channels.TRADING_RESULTS, context={"max_profit_multiple": D(100)})
    lenient(json.dumps(big).encode())
    packed = {"data": base64.b64encode(gzip.compress(json.dumps(big).encode())).decode()}
    lenient(json.dumps(packed).encode())
    with pytest.raises(PayloadError, match="exceeds 10 times"):
        check_payload(channels.TRADING_RESULTS, json.dumps(packed).encode())


@pytest.mark.parametrize(
    ("fields", "key"),
    [({"profit": 1e300}, "profit"), ({"quantity": 1e16}, "quantity"), ({"price": -1}, "price"),
     ({"price": "1e3"}, "price"), ({"quantity": True}, "quantity"), ({"trade_id": "t 1"},
     "trade_id"), ({"trade_id": "t" * 201}, "trade_id"), ({"trade_id": 5}, "trade_id"),
     ({"profit": "0." + "1" * 40}, "profit")],
)  # fmt: skip
def test_trading_result_fields_are_finite_bounded_and_matched(
    fields: dict[str, Any], key: str
) -> None:
    with pytest.raises(PayloadError, match=f"{key}: "):
        check_payload(channels.TRADING_RESULTS, json.dumps(_trade(**fields)).encode())


# -- reasons -------------------------------------------------------------------------


def test_reasons_cut_hostile_input_and_keys() -> None:
    key = "k" * 5_000
    with pytest.raises(ValidationError) as info:
        TypeAdapter(dict[str, int]).validate_python({key: "x" * 5_000})
    text = reason(info.value)
    assert len(text) <= 500 and "..." in text


# -- the CLI -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [["contribute", "alice", "1_000"], ["contribute", "alice", "１００"],
     ["contribute", "alice", "١٠٠"], ["contribute", "alice", " 100"],
     ["contribute", "alice", "100\n"], ["withdraw", "alice", "1e2"],
     ["contribute", "alice\n", "100"], ["contribute", "al ice", "100"],
     ["contribute", "alice", "100", "--key", "k 1"], ["member", "alice\n"],
     ["history", "--user", "x" * 200], ["allocate", "--key", "k" * 201]],
)  # fmt: skip
def test_cli_refuses_odd_input_before_touching_the_pool(argv: list[str]) -> None:
    from plugins.capital_pool.cli import capital

    # No database is configured here: a refusal must come from parsing alone.
    result = CliRunner().invoke(capital, argv, env={"DATABASE_URL": "", "REDIS_URL": ""})
    assert result.exit_code == 2, (argv, result.output)
    assert "Invalid value" in result.output
