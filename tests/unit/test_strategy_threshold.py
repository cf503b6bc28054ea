"""The prediction-threshold strategy: signals, exit band, shorts, sizing, Decimal only."""

from __future__ import annotations

import random
from decimal import Decimal as D
from typing import Any

import pytest

from corec_tasks.errors import ConfigurationError
from plugins.strategy.plugin import PredictionThresholdStrategy
from plugins.strategy.rules import StrategyInputError, position_size
from plugins.trading.base import safe_call

FLAT: dict[str, Any] = {"equity": "5000", "allocation": "10000"}
CALM = {"price": "100", "vix": "15"}


def strategy(**config: Any) -> PredictionThresholdStrategy:
    return PredictionThresholdStrategy(config)


def long_of(quantity: str) -> dict[str, Any]:
    return {"position": {"side": "long", "quantity": quantity}}


def short_of(quantity: str) -> dict[str, Any]:
    return {"position": {"side": "short", "quantity": quantity}}


# -- thresholds, exit band, shorts ------------------------------------------------------------


@pytest.mark.parametrize(
    ("prediction", "action", "side"),
    [
        (0.0051, "open", "buy"),
        (0.005, "none", None),  # at the threshold: not beyond it
        (0.0, "none", None),
        (-0.02, "none", None),  # shorts are off by default
    ],
)
def test_flat_book(prediction: float, action: str, side: str | None) -> None:
    result = strategy().process(FLAT, CALM, {"expected_return": prediction})
    assert result["action"] == action
    assert result["parameters"].get("side") == side


def test_short_toggle() -> None:
    off = strategy().process(FLAT, CALM, -0.02)
    assert off["action"] == "none" and "shorts are off" in off["reason"]
    on = strategy(allow_short=True).process(FLAT, CALM, -0.02)
    assert on["action"] == "open"
    assert on["parameters"]["side"] == "sell"
    assert on["parameters"]["stop_loss"] == D("102.00")
    assert on["parameters"]["take_profit"] == D("96.00")
    assert on["parameters"]["quantity"] == D("50.0000")


@pytest.mark.parametrize(
    ("prediction", "action"),
    [
        (0.02, "none"),  # still bullish: hold, no pyramiding
        (0.003, "none"),  # below the threshold but above the band: hold
        (0.001, "close"),  # at the band's edge
        (-0.0005, "close"),  # inside the band
        (-0.02, "close"),  # reversed: close now, a short may open next call
    ],
)
def test_long_exits(prediction: float, action: str) -> None:
    result = strategy(allow_short=True).process(long_of("7"), CALM, prediction)
    assert result["action"] == action
    if action == "close":
        assert result["parameters"] == {
            "order_type": "market",
            "side": "sell",
            "quantity": D("7"),
            "price": D("100"),
            "stop_loss": None,
            "take_profit": None,
        }


@pytest.mark.parametrize(
    ("prediction", "action"),
    [(-0.02, "none"), (-0.003, "none"), (-0.001, "close"), (0.0005, "close"), (0.02, "close")],
)
def test_short_exits(prediction: float, action: str) -> None:
    result = strategy(allow_short=True).process(short_of("3"), CALM, prediction)
    assert result["action"] == action
    if action == "close":
        assert result["parameters"]["side"] == "buy"
        assert result["parameters"]["quantity"] == D("3")


def test_zero_position_counts_as_flat() -> None:
    assert strategy().process({**FLAT, **long_of("0")}, CALM, 0.02)["action"] == "open"


# -- sizing -------------------------------------------------------------------------------


def test_worked_example_fixed_fractional_risk() -> None:
    # Equity 5000 is the capital pool's "growth" phase: 2% risk per trade; VIX 15 is
    # below the threshold of 20, so no cut. Stop 2% under 100 = 98.00, distance 2.
    # quantity = 5000 x 0.02 / |100 - 98| = 100 / 2 = 50; 50 x 100 = 5000 <= 10000.
    result = strategy().process(FLAT, CALM, 0.02)
    assert result == {
        "action": "open",
        "parameters": {
            "order_type": "market",
            "side": "buy",
            "quantity": D("50.0000"),
            "price": D("100"),
            "stop_loss": D("98.00"),
            "take_profit": D("104.00"),  # 2 x the stop distance
        },
        "reason": "prediction 0.02 > threshold 0.005; risk 0.02 of equity 5000",
    }


def test_vix_cut_and_unknown_vix_halve_the_risk() -> None:
    high = strategy().process(FLAT, {"price": "100", "vix": "25"}, 0.02)
    assert high["parameters"]["quantity"] == D("25.0000")  # 5000 x 0.01 / 2
    unknown = strategy().process(FLAT, {"price": "100"}, 0.02)
    assert unknown["parameters"]["quantity"] == D("25.0000")  # no VIX: the conservative side


def test_risk_passed_in_or_configured_wins_over_the_pool_rule() -> None:
    passed = strategy().process({**FLAT, "risk_per_trade": "0.01"}, CALM, 0.02)
    assert passed["parameters"]["quantity"] == D("25.0000")
    configured = strategy(risk_per_trade="0.03").process(FLAT, CALM, 0.02)
    assert configured["parameters"]["quantity"] == D("75.0000")


def test_allocation_caps_the_quantity() -> None:
    result = strategy().process({"equity": "5000", "allocation": "3000"}, CALM, 0.02)
    assert result["parameters"]["quantity"] == D("30.0000")  # 3000 / 100, not 50


@pytest.mark.parametrize(
    ("lot", "quantity"), [("1", "111"), ("0.5", "111.0"), ("0.01", "111.11"), ("10", "110")]
)
def test_lot_rounding_is_down(lot: str, quantity: str) -> None:
    # 5000 x 0.02 = 100 at risk; stop 3% under 30 = 29.10, distance 0.90: 111.11...
    result = strategy(stop_pct="0.03", lot_step=lot).process(
        FLAT, {"price": "30", "vix": "15"}, 0.02
    )
    assert result["parameters"]["stop_loss"] == D("29.10")
    assert result["parameters"]["quantity"] == D(quantity)
    assert str(result["parameters"]["quantity"]) == quantity


def test_atr_stop() -> None:
    s = strategy(stop_mode="atr", atr_multiple="2")
    result = s.process(FLAT, {"price": "100", "vix": "15", "atr": "1.5"}, 0.02)
    assert result["parameters"]["stop_loss"] == D("97.00")
    assert result["parameters"]["quantity"] == D("33.3333")  # 100 / 3, rounded down
    with pytest.raises(StrategyInputError, match=r"market_data\.atr"):
        s.process(FLAT, CALM, 0.02)


def test_no_trade_below_the_first_phase_or_the_minimum_quantity() -> None:
    poor = strategy().process({"equity": "50", "allocation": "50"}, CALM, 0.02)
    assert poor["action"] == "none" and "below the minimum" in poor["reason"]
    small = strategy(min_quantity="60").process(FLAT, CALM, 0.02)
    assert small["action"] == "none"


def test_limit_orders_carry_the_reference_price() -> None:
    result = strategy(order_type="limit").process(FLAT, CALM, 0.02)
    assert result["parameters"]["order_type"] == "limit"
    assert result["parameters"]["price"] == D("100")


def test_cap_and_lot_hold_on_many_random_cases() -> None:
    rng = random.Random(5)
    for _ in range(2000):
        price = D(rng.randint(1, 10**7)) / 100
        stop = price - price * D(rng.randint(1, 500)) / 1000
        stop = stop.quantize(D("0.01")) if stop >= D("0.01") else D("0.01")
        if stop >= price:
            continue
        allocation = D(rng.randint(1, 10**8)) / 100
        lot = rng.choice([D("1"), D("0.1"), D("0.001"), D("0.00000001"), D("5")])
        q = position_size(D(rng.randint(100, 10**9)) / 100, D("0.02"), price, stop, allocation, lot)
        assert q >= 0 and q * price <= allocation
        assert (q / lot) == (q / lot).to_integral_value()


# -- Decimal only, and errors ---------------------------------------------------------------


def test_money_is_decimal_and_floats_are_refused() -> None:
    result = strategy(allow_short=True).process(FLAT, CALM, -0.02)
    for key in ("quantity", "price", "stop_loss", "take_profit"):
        assert isinstance(result["parameters"][key], D), key
    with pytest.raises(StrategyInputError, match=r"market_data\.price must be a Decimal"):
        strategy().process(FLAT, {"price": 100.0}, 0.02)
    with pytest.raises(StrategyInputError, match=r"asset\.allocation must be a Decimal"):
        strategy().process({"equity": "5000", "allocation": 10000.5}, CALM, 0.02)


def test_bad_input_through_safe_call_is_a_structured_error() -> None:
    seen: list[dict[str, Any]] = []
    result = safe_call(strategy(), "process", FLAT, {}, 0.02, audit=lambda e, x: seen.append(e))
    assert result["ok"] is False and result["plugin"] == "prediction_threshold"
    assert "market_data.price is required" in result["error"]
    assert seen == [result]


def test_config_errors_name_the_plugin_and_key() -> None:
    with pytest.raises(ConfigurationError, match="exit_band must be below"):
        strategy(exit_band="0.01")
    with pytest.raises(ConfigurationError, match=r"plugins\.prediction_threshold\.lot_step"):
        strategy(lot_step="0")
    with pytest.raises(ConfigurationError, match=r"plugins\.prediction_threshold\.stop_pct"):
        strategy(stop_pct="1.5")
