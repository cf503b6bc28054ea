"""Money parsing and rounding. Money is ``Decimal``, never float.

Precision (written down in the README):

- money (amounts, equity, cash, active, values): 2 decimal places, ``NUMERIC(20, 2)``;
- units: 8 decimal places, ``NUMERIC(28, 8)``;
- NAV per unit is never stored rounded: it is ``equity / units`` computed with 40
  significant digits where used, and shown with 10 decimals.

Rounding favours the pool: units issued are rounded down, units redeemed rounded up,
a member's value is rounded down. Trade profits are rounded half-even to the cent.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Context, Decimal, InvalidOperation

CENT = Decimal("0.01")
UNIT = Decimal("0.00000001")
NAV_SHOWN = Decimal("0.0000000001")
RATIO_SHOWN = Decimal("0.0001")
ZERO = Decimal(0)
#: Arithmetic context for intermediate products and quotients: no rounding at 28 digits.
CTX = Context(prec=40)


class AmountError(ValueError):
    """An amount is not acceptable money; the message says why, in one sentence."""


def parse_amount(value: object, name: str = "amount", maximum: Decimal | None = None) -> Decimal:
    """A positive amount of money with at most 2 decimals, from a string or an int.

    Floats are accepted only through their shortest repr (``100.5`` -> ``"100.5"``), so a
    float that is not a plain decimal (``0.1 + 0.2``) fails the decimals check.
    """
    if isinstance(value, bool) or value is None:
        raise AmountError(f'{name} is required and must be a decimal string such as "100.00"')
    if isinstance(value, float):
        value = repr(value)
    if isinstance(value, int):
        value = str(value)
    if isinstance(value, Decimal):
        value = str(value)
    if not isinstance(value, str):
        raise AmountError(
            f'{name} must be a decimal string such as "100.00", not {type(value).__name__}'
        )
    text = value.strip()
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise AmountError(f"{name} {value!r} is not a number") from None
    if not amount.is_finite():
        raise AmountError(f"{name} must be a finite number, got {value!r}")
    if amount <= 0:
        raise AmountError(f"{name} must be positive, got {value!r}")
    if maximum is not None and amount > maximum:
        raise AmountError(f"{name} {value!r} is above the maximum of {money_str(maximum)}")
    if amount.adjusted() >= 18:  # beyond NUMERIC(20, 2) whatever the configured maximum
        raise AmountError(f"{name} {value!r} is too large")
    cents = amount.quantize(CENT, context=CTX)
    if cents != amount:
        raise AmountError(f"{name} {value!r} has more than 2 decimal places (cents)")
    return cents


def floor_cents(x: Decimal) -> Decimal:
    return x.quantize(CENT, rounding=ROUND_FLOOR, context=CTX)


def round_cents(x: Decimal) -> Decimal:
    return x.quantize(CENT, rounding=ROUND_HALF_EVEN, context=CTX)


def floor_units(x: Decimal) -> Decimal:
    return x.quantize(UNIT, rounding=ROUND_FLOOR, context=CTX)


def ceil_units(x: Decimal) -> Decimal:
    return x.quantize(UNIT, rounding=ROUND_CEILING, context=CTX)


def mul(a: Decimal, b: Decimal) -> Decimal:
    return CTX.multiply(a, b)


def div(a: Decimal, b: Decimal) -> Decimal:
    return CTX.divide(a, b)


def money_str(x: Decimal) -> str:
    """Money as the string it travels as: 2 decimals, no exponent."""
    return f"{x.quantize(CENT, context=CTX):f}"


def units_str(x: Decimal) -> str:
    return f"{x.quantize(UNIT, context=CTX):f}"
