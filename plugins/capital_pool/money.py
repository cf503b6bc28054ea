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

from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Context, Decimal

from corec_tasks.errors import CorecError
from corec_tasks.strict import MONEY_DIGITS, StrictInputError, kind_of, shown, to_decimal

CENT = Decimal("0.01")
UNIT = Decimal("0.00000001")
NAV_SHOWN = Decimal("0.0000000001")
RATIO_SHOWN = Decimal("0.0001")
ZERO = Decimal(0)
#: Arithmetic context for intermediate products and quotients: no rounding at 28 digits.
CTX = Context(prec=40)


class AmountError(CorecError, ValueError):
    """An amount is not acceptable money; the message says why, in one sentence."""


def parse_amount(value: object, name: str = "amount", maximum: Decimal | None = None) -> Decimal:
    """A positive amount of money with at most 2 decimals, by the strict rules of
    ``corec_tasks.strict``: a decimal string (``"100"``, ``"100.5"``, ``"100.50"``) or a
    JSON number (``100``, ``100.5``), never a boolean, ``"1_000"``, ``"1e2"``, ``" 100"``
    or lookalike digits.

    Floats go through their shortest repr (``100.5`` -> ``"100.5"``), so a float that is
    not a plain decimal (``0.1 + 0.2``) fails the decimals check.
    """
    if value is None or isinstance(value, bool):
        raise AmountError(f'{name} is required and must be a decimal string such as "100.00"')
    if not isinstance(value, str | int | float | Decimal):
        raise AmountError(f'{name} must be a decimal string such as "100.00", not {kind_of(value)}')
    try:
        amount = to_decimal(value, name)
    except StrictInputError as exc:
        raise AmountError(str(exc)) from None
    if amount <= 0:
        raise AmountError(f"{name} must be positive, got {shown(value)}")
    if maximum is not None and amount > maximum:
        raise AmountError(f"{name} {shown(value)} is above the maximum of {money_str(maximum)}")
    if amount.adjusted() >= MONEY_DIGITS:  # inside NUMERIC(20, 2) whatever the maximum
        raise AmountError(f"{name} {shown(value)} is too large (at most {MONEY_DIGITS} digits)")
    cents = amount.quantize(CENT, context=CTX)
    if cents != amount:
        raise AmountError(f"{name} {shown(value)} has more than 2 decimal places (cents)")
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
