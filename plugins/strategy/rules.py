"""The prediction-threshold rules and fixed-fractional sizing: pure ``Decimal`` functions.

Signal, for a predicted return ``p``, threshold ``t`` and exit band ``b`` (``0 <= b < t``):

- flat: open long when ``p > t``; open short when ``p < -t`` (if shorts are allowed);
- long: close when ``p <= b`` (inside the band, or reversed); hold otherwise;
- short: close when ``p >= -b``; hold otherwise.

A reversal beyond ``-t`` closes first; the opposite position opens on the next call,
when the book is flat (one action per call, so a failed close never leaves two legs).

Sizing (fixed-fractional risk): ``quantity = equity × risk / |price − stop_loss|``,
capped so ``quantity × price <= allocation``, rounded **down** to the lot step. The
stop is rounded to the tick away from the price (a wider stop, never a larger size).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Context, Decimal
from typing import Any, Literal

from corec_tasks.errors import CorecError

ZERO = Decimal(0)
#: Intermediate arithmetic: 40 significant digits, so no rounding before the final one.
CTX = Context(prec=40)

Side = Literal["long", "short"]


class StrategyInputError(CorecError, ValueError):
    """An input to the strategy is missing or not acceptable; the message names it."""


def to_decimal(value: Any, name: str, *, allow_float: bool = False) -> Decimal:
    """A finite Decimal from a Decimal, an int or a decimal string. Money never comes
    as a float; a ratio (a prediction, VIX) may, through its shortest repr."""
    if isinstance(value, bool) or value is None:
        raise StrategyInputError(f"{name} is required (a decimal string, int or Decimal)")
    if isinstance(value, float):
        if not allow_float:
            raise StrategyInputError(f"{name} must be a Decimal, int or string, not a float")
        value = repr(value)
    if isinstance(value, int):
        value = Decimal(value)
    if isinstance(value, str):
        try:
            value = Decimal(value.strip())
        except ArithmeticError:
            raise StrategyInputError(f"{name} {value!r} is not a number") from None
    if not isinstance(value, Decimal):
        raise StrategyInputError(f"{name} must be a decimal number, not {type(value).__name__}")
    if not value.is_finite():
        raise StrategyInputError(f"{name} must be finite, got {value}")
    return value


@dataclass(frozen=True, slots=True)
class Position:
    """An open position: its side and (positive) quantity."""

    side: Side
    quantity: Decimal


def signal(
    prediction: Decimal,
    position: Position | None,
    threshold: Decimal,
    exit_band: Decimal,
    allow_short: bool,
) -> tuple[Literal["open", "close", "none"], Side | None, str]:
    """The action, the side it concerns and why (see the module docstring)."""
    if position is None:
        if prediction > threshold:
            return "open", "long", f"prediction {prediction} > threshold {threshold}"
        if prediction < -threshold:
            if allow_short:
                return "open", "short", f"prediction {prediction} < -threshold {threshold}"
            return "none", None, f"prediction {prediction} < -threshold but shorts are off"
        return "none", None, f"prediction {prediction} within ±{threshold}"
    if position.side == "long" and prediction <= exit_band:
        why = "inside exit band" if prediction >= -exit_band else "signal reversed"
        return "close", "long", f"prediction {prediction}: {why}"
    if position.side == "short" and prediction >= -exit_band:
        why = "inside exit band" if prediction <= exit_band else "signal reversed"
        return "close", "short", f"prediction {prediction}: {why}"
    return "none", None, f"holding {position.side}: prediction {prediction}"


def quantize(x: Decimal, step: Decimal, up: bool) -> Decimal:
    """``x`` rounded to a multiple of ``step``, up or down."""
    units = CTX.divide(x, step).to_integral_value(rounding=ROUND_CEILING if up else ROUND_FLOOR)
    # Shown with the step's decimals: 25.0000 for a 0.0001 lot, not 25.0 or 2.5E+1.
    exponent = step.as_tuple().exponent
    assert isinstance(exponent, int), "a lot or tick step is finite"
    return CTX.multiply(units, step).quantize(Decimal(1).scaleb(exponent))


def stop_loss(price: Decimal, distance: Decimal, side: Side, tick: Decimal) -> Decimal:
    """The stop ``distance`` away from ``price`` on the losing side, widened to the tick."""
    if distance <= 0:
        raise StrategyInputError(f"stop distance must be positive, got {distance}")
    if side == "long":
        stop = quantize(price - distance, tick, up=False)
        if stop <= 0:
            raise StrategyInputError(f"stop {stop} for a long at {price} is not above zero")
        return stop
    return quantize(price + distance, tick, up=True)


def take_profit(
    price: Decimal, stop: Decimal, ratio: Decimal, side: Side, tick: Decimal
) -> Decimal | None:
    """``ratio`` × the stop distance on the winning side (None when ``ratio`` is 0)."""
    if ratio <= 0:
        return None
    reward = CTX.multiply(abs(price - stop), ratio)
    if side == "long":
        return quantize(price + reward, tick, up=False)
    target = quantize(price - reward, tick, up=True)
    return target if target > 0 else None


def position_size(
    equity: Decimal,
    risk: Decimal,
    price: Decimal,
    stop: Decimal,
    allocation: Decimal,
    lot_step: Decimal,
) -> Decimal:
    """``min(equity × risk / |price − stop|, allocation / price)`` rounded down to the lot."""
    distance = abs(price - stop)
    if price <= 0 or distance <= 0:
        raise StrategyInputError(f"price {price} and stop {stop} give no risk distance")
    if equity <= 0 or risk <= 0 or allocation <= 0:
        return ZERO
    by_risk = CTX.divide(CTX.multiply(equity, risk), distance)
    by_allocation = CTX.divide(allocation, price)
    quantity = quantize(min(by_risk, by_allocation), lot_step, up=False)
    # A 40-digit quotient could round up onto a lot boundary; the cap is a guarantee.
    while quantity > 0 and CTX.multiply(quantity, price) > allocation:
        quantity -= lot_step
    return max(quantity, ZERO)


__all__ = [
    "Position",
    "Side",
    "StrategyInputError",
    "position_size",
    "quantize",
    "signal",
    "stop_loss",
    "take_profit",
    "to_decimal",
]
