"""Column types that behave the same on PostgreSQL and SQLite.

SQLite has no exact decimal and no time zones: its NUMERIC affinity stores a float
(``12345678901234567.1`` comes back as ``...568``) and its DATETIME drops the offset.
So money is exact text there and NUMERIC(38, 18) on PostgreSQL, and datetimes are
stored in UTC and always come back time-zone aware, on both.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Context, Decimal, InvalidOperation
from typing import Any

from sqlalchemy import DateTime, Dialect, Numeric, String
from sqlalchemy.types import TypeDecorator, TypeEngine

#: Digits and decimal places of every amount (price, quantity, capital).
PRECISION, SCALE = 38, 18
_QUANTUM = Decimal(1).scaleb(-SCALE)
_CONTEXT = Context(prec=PRECISION, rounding=ROUND_HALF_UP, traps=[InvalidOperation])


def to_money(value: object) -> Decimal:
    """An exact Decimal at the stored scale; floats are refused (binary error is data loss)."""
    if isinstance(value, (bool, float)):
        raise TypeError(f"money must be Decimal, int or str, not {type(value).__name__}: {value!r}")
    try:
        amount = value if isinstance(value, Decimal) else Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"not a decimal amount: {value!r}") from None
    if not amount.is_finite():
        raise ValueError(f"money must be finite, got {amount}")
    # Rounded to SCALE places, ties away from zero, as PostgreSQL's NUMERIC(38, 18) stores it.
    try:
        return amount.quantize(_QUANTUM, context=_CONTEXT)
    except InvalidOperation:
        raise ValueError(
            f"{amount} does not fit NUMERIC({PRECISION}, {SCALE}) "
            f"(at most {PRECISION - SCALE} digits before the point)"
        ) from None


class Money(TypeDecorator[Decimal]):
    """Exact amounts: NUMERIC(38, 18) on PostgreSQL, decimal text on SQLite."""

    impl = Numeric(PRECISION, SCALE)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            # Text keeps every digit; arithmetic and ordering on it belong in Python there.
            return dialect.type_descriptor(String(PRECISION + 2))
        return dialect.type_descriptor(Numeric(PRECISION, SCALE, asdecimal=True))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        amount = to_money(value)
        return format(amount, "f") if dialect.name == "sqlite" else amount

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return to_money(value)


class UTCDateTime(TypeDecorator[datetime]):
    """TIMESTAMPTZ on PostgreSQL; on every backend aware datetimes in, aware UTC out."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise ValueError(f"datetimes must be time-zone aware (UTC), got {value!r}")
        value = value.astimezone(UTC)
        # SQLite would store the wall-clock digits and drop the offset: store UTC naive.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        stored: datetime = value
        if stored.tzinfo is None:
            return stored.replace(tzinfo=UTC)
        return stored.astimezone(UTC)


def utcnow() -> datetime:
    """Now, time-zone aware in UTC."""
    return datetime.now(UTC)
