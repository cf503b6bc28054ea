"""The trading system's channels (seed 000): their names and payload models.

``market_data`` and ``macro_data`` (published by ``feeds``), ``capital_data``
(``capital_pool``'s allocations, and capital actions sent to it), ``trading_results``
(``pipeline``'s fills, applied by ``capital_pool``) and ``predictions`` (``feeds``'
predictor). The plugins that publish or consume a channel declare its model in their
``plugin.json`` (``"schemas"``); the framework validates by that table and knows none
of these streams by name.

Every field follows the strict rules of ``corec_tasks.strict`` (README, "Strict
input"). Money in ``capital_data`` travels as decimal strings, never JSON numbers
(DESIGN.md, "Money is Decimal"). ``trading_results`` also accepts numbers, because
the seed's producer sends ``{"data": base64(gzip(json))}`` with float
``profit``/``price``; a result is bounded by its capital at risk
(``MAX_PROFIT_MULTIPLE``).
"""

from __future__ import annotations

import base64
import binascii
import zlib
from collections.abc import Mapping
from decimal import Decimal
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from corec_tasks.streams.schemas import StreamPayload
from corec_tasks.strict import (
    MONEY_DIGITS,
    DecimalNumber,
    DecimalString,
    Key,
    Name,
    NonNegativeNumber,
    PositiveNumber,
    UserId,
    reason,
)

MARKET_DATA = "market_data"
MACRO_DATA = "macro_data"
CAPITAL_DATA = "capital_data"
TRADING_RESULTS = "trading_results"
#: Per-symbol return forecasts of predictor_temporal (plugins/feeds).
PREDICTIONS = "predictions"

#: A compressed trading result may not inflate beyond this (a gzip bomb stops here).
MAX_INFLATED_BYTES = 1 << 20

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
#: ``payload_checker(stream, context={"max_profit_multiple": ...})``, ``trade_result``.
MAX_PROFIT_MULTIPLE = Decimal(10)


# -- models --------------------------------------------------------------------------


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
