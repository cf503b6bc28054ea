"""Strict input: the one set of rules for numbers, money and identifiers.

Used by the stream schemas, the capital tasks, the CLI and the HTTP API, so that an
input accepted on one path is accepted on every path (DESIGN.md, "Input is strict"):

- a number is a JSON number (int or float, never a boolean, never NaN/Infinity) or a
  string of ASCII decimal digits matching ``DECIMAL`` in full: an optional ``-``,
  digits (no leading zero: ``"0100"`` and ``"00.5"`` fail, ``"0.5"`` passes, as in JSON),
  optionally ``.`` and digits. No ``_``, exponent, whitespace, ``+``, lookalike
  digits (fullwidth, Arabic-Indic, ...) or trailing newline: Python's ``Decimal`` and
  ``float`` accept all of those, which is why nothing here calls them on raw text;
- money has at most 2 decimals and at most ``MONEY_DIGITS`` integer digits;
- an identifier matches its pattern in full (pydantic's patterns run on the Rust regex
  engine, where ``$`` is the end of the text, never "before a final newline") and has a
  length bound; NUL and control characters are never part of one;
- an error message shows at most ``SHOWN`` characters of the input.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BeforeValidator, GetPydanticSchema, StringConstraints, ValidationError
from pydantic_core import core_schema as cs

from corec_tasks.errors import CorecError

#: Most integer and fraction digits a decimal string may have (a DoS bound, not money's).
MAX_INT_DIGITS = 30
MAX_FRAC_DIGITS = 30
#: A decimal string, matched with ``fullmatch`` (ASCII digits only: no ``\d``). The
#: integer part is ``0`` or starts with 1-9, as in a JSON number: ``"0100"`` and
#: ``"00.5"`` are refused (some readers take a leading zero for octal, and two spellings
#: of one amount must not pass as different inputs).
DECIMAL = re.compile(
    rf"-?(?:0|[1-9][0-9]{{0,{MAX_INT_DIGITS - 1}}})(?:\.[0-9]{{1,{MAX_FRAC_DIGITS}}})?"
)
#: The same digits with leading zeros allowed: only to say why a string was refused.
_LEADING_ZERO = re.compile(rf"-?0[0-9]{{1,{MAX_INT_DIGITS}}}(?:\.[0-9]{{1,{MAX_FRAC_DIGITS}}})?")
#: Money: up to 10^15 - 0.01 (inside ``NUMERIC(20, 2)``), cents at most, no leading zero.
MONEY_DIGITS = 15
MONEY_TEXT = rf"^(?:0|[1-9][0-9]{{0,{MONEY_DIGITS - 1}}})(?:\.[0-9]{{1,2}})?$"
#: How much of a bad input an error message shows.
SHOWN = 40
#: How many validation problems a reason lists before "and N more", and its length cap.
MAX_REASONS = 3
MAX_REASON_CHARS = 500

# The patterns below are for pydantic (Rust regex: ``$`` is the very end of the text) or
# ``re.fullmatch``; never use them with ``re.match``, where ``$`` also matches before a
# final newline ("alice\n").

#: Characters of a user id (the ledger's ``capital_members.user_id``, 128 wide).
USER_ID_PATTERN = r"^[A-Za-z0-9_.@:-]+$"
USER_ID_MAX = 128
#: Characters of keys, ids and names that travel between systems (idempotency keys,
#: trade ids, command ids, symbols): ASCII letters, digits and ``_.:@/+=#~-``.
ID_PATTERN = r"^[A-Za-z0-9_.:@/+=#~-]+$"
KEY_MAX = 200
NAME_MAX = 64
#: Free text (an alert message, an error sentence).
TEXT_MAX = 10_000


class StrictInputError(CorecError, ValueError):
    """An input is not acceptable; the message says why, in one sentence."""


def shown(value: object, limit: int = SHOWN) -> str:
    """``repr(value)`` cut to ``limit`` characters: errors never echo a whole input."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def kind_of(value: object) -> str:
    """The JSON name of ``value``'s type, for messages."""
    names = {bool: "a boolean", str: "a string", list: "an array", dict: "an object",
             type(None): "null", int: "a number", float: "a number"}  # fmt: skip
    return names.get(type(value), type(value).__name__)


def _got(value: object, echo: bool) -> str:
    return f", got {shown(value)}" if echo else ""


def decimal_text(text: str, name: str = "value", echo: bool = True) -> Decimal:
    """A ``Decimal`` from ``text`` if it is a plain decimal string; else StrictInputError.

    ``echo``: end the message with (a cut of) the input; pydantic errors show it anyway.
    """
    too_long = len(text) > MAX_INT_DIGITS + MAX_FRAC_DIGITS + 2
    if not too_long and _LEADING_ZERO.fullmatch(text):
        raise StrictInputError(
            f'{name} has a leading zero: write "100.50", not "0100.50"{_got(text, echo)}'
        )
    if too_long or not DECIMAL.fullmatch(text):
        raise StrictInputError(
            f'{name} is not a number in plain decimal digits such as "100.50" (ASCII digits, '
            f"optional - and ., no spaces, exponent, '_' or other digit scripts)"
            f"{_got(text, echo)}"
        )
    return Decimal(text)


def to_decimal(value: object, name: str = "value", echo: bool = True) -> Decimal:
    """A finite ``Decimal`` from a JSON number or a decimal string; never from a bool.

    A float goes through its shortest repr (``100.5`` -> ``"100.5"``), so ``0.1 + 0.2``
    stays ``0.30000000000000004`` and fails a decimals check instead of being rounded.
    """
    if isinstance(value, bool):
        raise StrictInputError(f"{name} must be a number, got a boolean")
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise StrictInputError(f"{name} must be a finite number{_got(value, echo)}")
        return value
    if isinstance(value, int):
        if abs(value) >= 10**MAX_INT_DIGITS:
            raise StrictInputError(f"{name} has more than {MAX_INT_DIGITS} digits")
        return Decimal(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise StrictInputError(f"{name} must be a finite number{_got(value, echo)}")
        if abs(value) >= 10.0**MAX_INT_DIGITS:
            raise StrictInputError(f"{name} has more than {MAX_INT_DIGITS} digits")
        return Decimal(repr(value))
    if isinstance(value, str):
        return decimal_text(value, name, echo)
    raise StrictInputError(f"{name} must be a number or a decimal string, got {kind_of(value)}")


def _decimal_string_before(value: Any) -> Any:
    if not isinstance(value, str):
        raise StrictInputError(
            f'must be a decimal string such as "500.00" (money travels as strings, never '
            f"numbers), got {kind_of(value)}"
        )
    return decimal_text(value, "value", echo=False)


# -- pydantic types ----------------------------------------------------------------------
# Numbers are a union run by pydantic-core (no Python call on the hot path of a JSON
# number): a strict JSON number, else a string matching DECIMAL, with one error message.

_NUMBER_ERROR = 'Input should be a number, as a JSON number or a plain decimal string like "100.50"'
_DECIMAL_STR = cs.str_schema(
    strict=True, max_length=MAX_INT_DIGITS + MAX_FRAC_DIGITS + 2, pattern=f"^{DECIMAL.pattern}$"
)


def _float_to_decimal(value: float) -> Decimal:
    return Decimal(repr(value))


def number_schema(gt: float | None = None, ge: float | None = None) -> cs.CoreSchema:
    """A strict number (see ``Number``) with its bound checked in pydantic-core too, so a
    JSON number costs no Python call; the one error sentence names the bound."""
    # pydantic's own wording for the bound, then what a number may look like.
    bound = "Input should be a number"
    if gt is not None:
        bound = f"Input should be greater than {gt:g}"
    elif ge is not None:
        bound = f"Input should be greater than or equal to {ge:g}"
    message = f'{bound}, as a JSON number or a plain decimal string like "100.50"'
    return cs.union_schema(
        [cs.float_schema(strict=True, allow_inf_nan=False, gt=gt, ge=ge),
         cs.chain_schema([_DECIMAL_STR, cs.no_info_plain_validator_function(float),
                          cs.float_schema(gt=gt, ge=ge)])],
        mode="left_to_right", custom_error_type="number", custom_error_message=message,
    )  # fmt: skip


_NUMBER = number_schema()
_DECIMAL_NUMBER = cs.union_schema(
    [cs.no_info_after_validator_function(Decimal, cs.int_schema(strict=True)),
     cs.no_info_after_validator_function(
         _float_to_decimal, cs.float_schema(strict=True, allow_inf_nan=False)),
     cs.no_info_after_validator_function(Decimal, _DECIMAL_STR)],
    mode="left_to_right", custom_error_type="number", custom_error_message=_NUMBER_ERROR,
)  # fmt: skip

#: A finite float from a JSON number or a decimal string; bools and odd notations fail.
Number = Annotated[float, GetPydanticSchema(lambda _t, _h: _NUMBER)]
_POSITIVE, _NON_NEGATIVE = number_schema(gt=0), number_schema(ge=0)
#: ``Number`` > 0, and ``Number`` >= 0.
PositiveNumber = Annotated[float, GetPydanticSchema(lambda _t, _h: _POSITIVE)]
NonNegativeNumber = Annotated[float, GetPydanticSchema(lambda _t, _h: _NON_NEGATIVE)]
#: A finite Decimal from a JSON number (a float through its shortest repr) or a decimal
#: string.
DecimalNumber = Annotated[Decimal, GetPydanticSchema(lambda _t, _h: _DECIMAL_NUMBER)]
#: A finite Decimal from a decimal string only (money on the wire).
DecimalString = Annotated[Decimal, BeforeValidator(_decimal_string_before)]


def _bounded(pattern: str | None, max_length: int, min_length: int = 1) -> StringConstraints:
    return StringConstraints(
        strict=True, min_length=min_length, max_length=max_length, pattern=pattern
    )


#: A member of the capital pool (the ledger's ``user_id``, 128 wide).
UserId = Annotated[str, _bounded(USER_ID_PATTERN, USER_ID_MAX)]
#: An idempotency key, trade id, allocation id or command id (200 wide, as the columns).
Key = Annotated[str, _bounded(ID_PATTERN, KEY_MAX)]
#: A short name: a symbol, an action, a kind, a source.
Name = Annotated[str, _bounded(ID_PATTERN, NAME_MAX)]
#: Free text: an alert message, an error sentence.
Text = Annotated[str, _bounded(None, TEXT_MAX, 0)]
NonEmptyText = Annotated[str, _bounded(None, TEXT_MAX)]
_MONEY_TEXT = cs.custom_error_schema(
    cs.str_schema(strict=True, min_length=1, max_length=MONEY_DIGITS + 3, pattern=MONEY_TEXT),
    custom_error_type="money",
    custom_error_message='Input should be money as a string of ASCII digits with at most 2 '
    'decimals and no leading zero, like "100.50"',
)
#: Money as the API and the tasks take it: a decimal string with at most 2 decimals.
MoneyText = Annotated[str, GetPydanticSchema(lambda _t, _h: _MONEY_TEXT)]


# -- error sentences ---------------------------------------------------------------------


def reason(exc: ValidationError) -> str:
    """One readable line from a ValidationError: ``key: problem (got value)``, cut to
    ``MAX_REASON_CHARS``: a reason never carries a whole hostile input."""
    return reason_of(exc.errors(include_url=False))


def reason_of(errors: Sequence[Any]) -> str:
    """``reason`` for pydantic's error dicts (FastAPI's ``RequestValidationError.errors()``)."""
    parts: list[str] = []
    for err in errors[:MAX_REASONS]:
        loc = ".".join(str(p) if len(str(p)) <= SHOWN else shown(p) for p in err["loc"])
        kind = err["type"]
        msg = str(err["msg"]).removeprefix("Value error, ")
        if kind == "json_invalid":
            parts.append(f"not valid JSON ({err.get('ctx', {}).get('error', msg)})")
        elif kind in ("model_type", "model_attributes_type", "dict_type") and not loc:
            parts.append(f"must be a JSON object, got {kind_of(err['input'])}")
        elif kind == "missing" or (kind == "value_error" and not loc):
            parts.append(f"{loc}: {msg}" if loc else msg)
        elif kind == "extra_forbidden":
            parts.append(f"{loc}: unknown argument")
        elif kind == "value_error" and ", got " in msg:  # our own sentence shows the input
            parts.append(f"{loc}: {msg}")
        else:
            parts.append(f"{loc or 'payload'}: {msg} (got {shown(err['input'])})")
    more = f"; and {len(errors) - MAX_REASONS} more" if len(errors) > MAX_REASONS else ""
    text = "; ".join(parts)
    room = MAX_REASON_CHARS - len(more)
    return (text if len(text) <= room else text[: room - 3] + "...") + more
