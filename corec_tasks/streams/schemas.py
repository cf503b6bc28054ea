"""One pydantic model per stream, validating the JSON payload of each entry.

The models follow the payloads the seeds publish (000: ``market_data``,
``macro_data``, ``capital_data``, ``trading_results``; 004: ``corec_alerts``,
``corec_commands``, ``corec_responses``). Extra keys are allowed everywhere: producers
add context (a block id, a source timestamp) and the persister keeps the payload as
sent. A stream without a model carries any JSON object.

Every field follows the strict rules of ``corec_tasks.strict`` (README, "Strict
input"): a number is a JSON number or a plain decimal string, never a boolean or an
odd notation; identifiers match in full; every string has a length bound; a bare
NaN/Infinity anywhere and a payload over ``MAX_PAYLOAD_BYTES`` are refused.

Money in ``capital_data`` travels as decimal strings, never JSON numbers (DESIGN.md,
"Money is Decimal"). ``trading_results`` also accepts numbers, because the seed's
producer sends ``{"data": base64(gzip(json))}`` with float ``profit``/``price``; a
result is bounded by its capital at risk (``MAX_PROFIT_MULTIPLE``).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import zlib
from collections.abc import Callable, Mapping
from decimal import Decimal
from functools import lru_cache, partial
from types import MappingProxyType
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from corec_tasks.errors import StreamError
from corec_tasks.streams import names
from corec_tasks.strict import (
    MONEY_DIGITS,
    DecimalNumber,
    DecimalString,
    Key,
    Name,
    NonEmptyText,
    NonNegativeNumber,
    PositiveNumber,
    Text,
    UserId,
    reason,
)

#: A compressed trading result may not inflate beyond this (a gzip bomb stops here).
MAX_INFLATED_BYTES = 1 << 20


class PayloadError(StreamError):
    """A stream payload failed validation; ``reason`` names the bad key."""

    def __init__(self, reason: str, stream: str | None = None) -> None:
        self.reason = reason
        self.stream = stream
        super().__init__(f"invalid {stream} payload: {reason}" if stream else reason)


# -- field types ---------------------------------------------------------------------
# The strict rules of corec_tasks.strict: numbers are JSON numbers or plain decimal
# strings (never booleans, "1_000", "1e2", " 100" or lookalike digits), and every
# string has a length bound.

Positive = PositiveNumber
NonNegative = NonNegativeNumber
#: An amount of money: a JSON string holding a decimal with at most 2 decimals.
MoneyStr = Annotated[DecimalString, Field(max_digits=MONEY_DIGITS + 2, decimal_places=2)]
#: Units, a NAV: a JSON string holding a decimal.
DecimalStr = DecimalString
#: Bound of the seed's packed trading result (base64 of gzip): 1 MiB of text.
MAX_PACKED_CHARS = 1 << 20
#: A price or a quantity of a trade: from 10^-12 (the ledger column's scale, so none
#: rounds to zero) to below 10^15.
TradeAmount = Annotated[DecimalNumber, Field(ge=Decimal("1e-12"), lt=Decimal(10) ** 15)]
#: A profit (or, negative, a loss): below 10^15 in size.
TradeProfit = Annotated[DecimalNumber, Field(gt=-(Decimal(10) ** 15), lt=Decimal(10) ** 15)]
#: A profit may be at most this multiple of the capital at risk (quantity x price); a
#: result claiming more is a bad producer, not a trade. Override per call:
#: ``payload_checker(stream, max_profit_multiple=...)``, ``trade_result(..., ...)``.
MAX_PROFIT_MULTIPLE = Decimal(10)


def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


# -- models --------------------------------------------------------------------------


class StreamPayload(BaseModel):
    """Base of every payload model: a JSON object, extra keys kept."""

    model_config = ConfigDict(extra="allow", frozen=True)


class Ohlc(BaseModel):
    """A candle: open, high, low, close, all positive, high >= low."""

    model_config = ConfigDict(extra="allow", frozen=True)

    open: Positive
    high: Positive
    low: Positive
    close: Positive

    @model_validator(mode="after")
    def _high_above_low(self) -> Ohlc:
        if self.high < self.low:
            raise ValueError(f"high ({self.high}) is below low ({self.low})")
        return self


class MarketData(StreamPayload):
    """``market_data``: one price observation of a symbol."""

    symbol: Name
    price: Positive
    volume: NonNegative | None = None
    #: Source time, epoch seconds (or milliseconds: producers differ; not interpreted here).
    timestamp: Positive | None = None
    ohlc: Ohlc | None = None


class MacroData(StreamPayload):
    """``macro_data``: VIX and S&P 500 levels, plus optional other macro series."""

    vix_price: Positive
    sp500_price: Positive
    gold_price: Positive | None = None
    oil_price: Positive | None = None
    dxy_price: Positive | None = None
    nasdaq_price: Positive | None = None
    altcoins_volume: NonNegative | None = None
    timestamp: Positive | None = None


class CapitalData(StreamPayload):
    """``capital_data``: a capital action or allocation; ``action`` or ``kind`` says which."""

    action: Name | None = None
    kind: Name | None = None
    user_id: UserId | None = None
    amount: MoneyStr | None = None
    units: DecimalStr | None = None
    nav: DecimalStr | None = None
    #: A contribution's or withdrawal's key (default: the entry's signature).
    idempotency_key: Key | None = None

    @model_validator(mode="after")
    def _has_action_or_kind(self) -> CapitalData:
        if self.action is None and self.kind is None:
            raise ValueError("action: Field required (or kind)")
        return self


def _profit_multiple(info: ValidationInfo) -> Decimal:
    context = info.context if isinstance(info.context, Mapping) else {}
    multiple = context.get("max_profit_multiple", MAX_PROFIT_MULTIPLE)
    return multiple if isinstance(multiple, Decimal) else Decimal(str(multiple))


def _check_at_risk(profit: Decimal, quantity: Decimal, price: Decimal, multiple: Decimal) -> None:
    """A loss is at most the capital at risk (quantity x price); a profit at most
    ``multiple`` times it."""
    at_risk = quantity * price
    if -profit > at_risk:
        raise ValueError(f"a loss of {-profit} exceeds the capital at risk "
                         f"(quantity x price = {at_risk})")  # fmt: skip
    if profit > multiple * at_risk:
        raise ValueError(f"a profit of {profit} exceeds {multiple} times the capital at risk "
                         f"(quantity x price = {at_risk})")  # fmt: skip


class TradeResult(BaseModel):
    """The body of a trading result (the seed's gzip payload has no ``trade_id``)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    trade_id: Key | None = None
    profit: TradeProfit
    quantity: TradeAmount
    price: TradeAmount

    @model_validator(mode="after")
    def _bounded_by_risk(self, info: ValidationInfo) -> TradeResult:
        _check_at_risk(self.profit, self.quantity, self.price, _profit_multiple(info))
        return self


class TradingResults(StreamPayload):
    """``trading_results``: ``{"data": base64(gzip(json))}`` or a plain result with trade_id."""

    data: Annotated[str, Field(strict=True, max_length=MAX_PACKED_CHARS)] | None = None
    trade_id: Key | None = None
    profit: TradeProfit | None = None
    quantity: TradeAmount | None = None
    price: TradeAmount | None = None

    @field_validator("data")
    @classmethod
    def _data_decodes(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:
            decode_packed_result(value, _profit_multiple(info))
        return value

    @model_validator(mode="after")
    def _complete(self, info: ValidationInfo) -> TradingResults:
        if self.data is None:
            missing = [
                k for k in ("trade_id", "profit", "quantity", "price") if getattr(self, k) is None
            ]
            if missing:
                raise ValueError(
                    f"{', '.join(missing)}: Field required (or send the seed's form: "
                    '{"data": base64(gzip(json))})'
                )
            assert self.profit is not None and self.quantity is not None
            assert self.price is not None
            _check_at_risk(self.profit, self.quantity, self.price, _profit_multiple(info))
        return self


class Alert(StreamPayload):
    """``corec_alerts``: a leveled message from a named source."""

    level: Annotated[
        Literal["debug", "info", "warning", "error", "critical"], BeforeValidator(_lower)
    ]
    source: Annotated[str, Field(strict=True, min_length=1, max_length=200)]
    message: NonEmptyText


class Command(StreamPayload):
    """``corec_commands``: a command for a plugin, with an ``id`` the response echoes."""

    id: Key
    command: Name
    target: Name | None = None
    args: dict[str, Any] | None = None


class CommandResponse(StreamPayload):
    """``corec_responses``: the answer to command ``id``: a ``response`` or an ``error``."""

    id: Key
    response: Any = None
    error: Text | None = None

    @model_validator(mode="after")
    def _answers(self) -> CommandResponse:
        if "response" not in self.model_fields_set and self.error is None:
            raise ValueError("response: Field required (or error)")
        return self


class AnyObject(StreamPayload):
    """Streams without a model: any JSON object."""


SCHEMAS: Mapping[str, type[StreamPayload]] = MappingProxyType(
    {
        names.MARKET_DATA: MarketData,
        names.MACRO_DATA: MacroData,
        names.CAPITAL_DATA: CapitalData,
        names.TRADING_RESULTS: TradingResults,
        names.ALERTS: Alert,
        names.COMMANDS: Command,
        names.RESPONSES: CommandResponse,
    }
)


def schema_for(stream: str) -> type[BaseModel] | None:
    """The payload model of ``stream`` (unprefixed name): the framework's, else the one
    an enabled plugin declares (``schemas`` in its plugin.json); None: any JSON object."""
    return SCHEMAS.get(stream) or plugin_schemas().get(stream)


def plugin_schemas() -> Mapping[str, type[BaseModel]]:
    """Payload models the enabled plugins declare, for this process's settings."""
    import os

    from corec_tasks.settings import get_settings

    try:
        config = str(get_settings().config_path.resolve())
    except Exception:  # no usable settings: no plugin schema (config check says why)
        return {}
    return _plugin_schemas(config, os.environ.get("COREC_PLUGIN_PATH", ""))


@lru_cache(maxsize=4)
def _plugin_schemas(config: str, plugin_path: str) -> Mapping[str, type[BaseModel]]:
    from corec_tasks.discovery import enabled
    from corec_tasks.errors import CorecError
    from corec_tasks.settings import get_settings
    from corec_tasks.wiring import stream_schemas

    try:
        return MappingProxyType(stream_schemas(enabled(get_settings())))
    except CorecError:
        return MappingProxyType({})


# -- validation ----------------------------------------------------------------------

# PostgreSQL's JSONB cannot hold U+0000; an escaped backslash before "u0000" is harmless.
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


#: A payload larger than this is refused before parsing (a DoS bound; the packed
#: trading result, the largest legitimate payload, is bounded at ``MAX_PACKED_CHARS``).
MAX_PAYLOAD_BYTES = 2 * MAX_PACKED_CHARS


def payload_checker(
    stream: str, *, max_profit_multiple: Decimal = MAX_PROFIT_MULTIPLE
) -> Callable[[bytes], None]:
    """``check_payload`` bound to one stream, for hot loops (the model is looked up once)."""
    validate_json = (schema_for(stream) or AnyObject).__pydantic_validator__.validate_json
    validate: Callable[[bytes], object] = validate_json
    if max_profit_multiple != MAX_PROFIT_MULTIPLE:
        context = {"max_profit_multiple": max_profit_multiple}
        validate = partial(validate_json, context=context)

    def check(raw: bytes) -> None:
        if len(raw) > MAX_PAYLOAD_BYTES:
            raise PayloadError(f"larger than {MAX_PAYLOAD_BYTES} bytes ({len(raw)})", stream)
        try:
            validate(raw)
        except ValidationError as exc:
            raise PayloadError(reason(exc), stream) from None
        if b"\\u0000" in raw and _NUL_ESCAPE.search(raw):
            raise PayloadError(
                "contains the escape \\u0000, which PostgreSQL JSONB cannot store", stream
            )
        if (b"NaN" in raw or b"Infinity" in raw) and _has_non_json_constant(raw):
            raise PayloadError(
                "contains NaN or Infinity, which are not JSON (and JSONB cannot store)", stream
            )

    return check


def _reject_constant(name: str) -> Any:
    raise ValueError(name)


def _has_non_json_constant(raw: bytes) -> bool:
    """Whether ``raw`` holds a bare ``NaN``/``Infinity`` (pydantic's parser accepts them
    anywhere; only typed number fields refuse them). Runs only when the bytes occur."""
    try:
        json.loads(raw, parse_constant=_reject_constant)
    except ValueError:
        return True
    return False


def check_payload(stream: str, raw: bytes) -> None:
    """Validate ``raw`` (JSON bytes) for ``stream``; raise PayloadError naming the bad key.

    The fast path for consumers that keep the raw bytes: nothing is decoded twice.
    """
    payload_checker(stream)(raw)


def validate_payload(stream: str, raw: bytes) -> dict[str, Any]:
    """Validate ``raw`` for ``stream`` and return it as a dict, exactly as sent."""
    check_payload(stream, raw)
    data: dict[str, Any] = json.loads(raw)
    return data


def decode_packed_result(
    data: str, max_profit_multiple: Decimal = MAX_PROFIT_MULTIPLE
) -> TradeResult:
    """Decode the seed's ``base64(gzip(json))`` trading result; ValueError says what broke."""
    if len(data) > MAX_PACKED_CHARS:
        raise ValueError(f"packed result longer than {MAX_PACKED_CHARS} characters")
    try:
        packed = base64.b64decode("".join(data.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not base64 (expected base64(gzip(json)))") from None
    # wbits 16+MAX_WBITS: gzip framing. max_length stops a bomb before it fills memory.
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        body = inflater.decompress(packed, MAX_INFLATED_BYTES)
    except zlib.error:
        raise ValueError("base64 decodes, but not to gzip data") from None
    if inflater.unconsumed_tail:
        raise ValueError(f"inflates beyond {MAX_INFLATED_BYTES} bytes")
    if not inflater.eof:
        raise ValueError("gzip data is truncated")
    try:
        return TradeResult.model_validate_json(
            body, context={"max_profit_multiple": max_profit_multiple}
        )
    except ValidationError as exc:
        raise ValueError(f"decoded trade result: {reason(exc)}") from None


def trade_result(
    payload: Mapping[str, Any], max_profit_multiple: Decimal = MAX_PROFIT_MULTIPLE
) -> TradeResult:
    """The trade result a validated ``trading_results`` payload carries, in either form.

    Bounded (``TradeResult``): a loss at most the capital at risk, a profit at most
    ``max_profit_multiple`` times it (default ``MAX_PROFIT_MULTIPLE``, 10).
    """
    packed = payload.get("data")
    if isinstance(packed, str):
        return decode_packed_result(packed, max_profit_multiple)
    return TradeResult.model_validate(
        payload, context={"max_profit_multiple": max_profit_multiple}
    )
