"""A live exchange behind the ``Broker`` protocol, through ccxt (Binance by default).

Optional: ccxt comes with the ``exchange`` extra (``pip install corec-tasks[exchange]``)
and is imported only when a ``CcxtBroker`` is built, so the core runs without it.

Idempotency by client order id, the same contract as the paper exchange:

* ``submit_order`` first asks the exchange for the client order id (Binance accepts a
  reused ``newClientOrderId`` once the first order is no longer open, so asking first
  is what keeps a retry after a crash from placing a second order), and only places
  the order when the exchange does not know it;
* if the exchange still answers "duplicate" (-2010 "Duplicate order sent.": another
  worker placed it in between), the existing order is fetched and returned.

Answers are the paper exchange's record format (``plugins.broker.paper``), which is
what ``service.apply_record`` consumes. Exchange failures become ``ExchangeBrokerError``
(a ``BrokerError``) whose ``retryable`` says whether trying again may help (network
errors, timeouts, rate limits) or not (bad credentials, a refused order). Every call
has the configured timeout: nothing hangs.

Credentials come from environment variables named in the config, never from files.
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Mapping
from decimal import Decimal
from types import ModuleType
from typing import Any, ClassVar
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from corec_tasks.contracts import BrokerContract
from corec_tasks.errors import ConfigurationError
from corec_tasks.plugin_base import ConfigLoader
from plugins.broker.paper import (
    CANCELLED,
    FILLED,
    OPEN,
    PARTIALLY_FILLED,
    REJECTED,
    BrokerError,
)
from plugins.trading.types import to_money

PLUGIN = "broker"
INSTALL_HINT = "pip install corec-tasks[exchange]"

#: ccxt's unified order status -> the paper record's status (open splits on the fill).
_STATUSES = {
    "closed": FILLED,
    "canceled": CANCELLED,
    "cancelled": CANCELLED,
    "expired": CANCELLED,  # IOC/FOK remainder dropped by the exchange: it will not fill
    "rejected": REJECTED,
}
_STILL_OPEN = frozenset({"open", "canceling"})

#: Options that keep ccxt's binance on the spot exchangeInfo during load_markets (no
#: futures/options/margin catalogues, no private currencies call).
BINANCE_SPOT_OPTIONS: dict[str, Any] = {
    "fetchMarkets": {"types": ["spot"]},
    "fetchCurrencies": False,
    "fetchMargins": False,
}


class ExchangeBrokerError(BrokerError):
    """The exchange failed a request; ``retryable`` when trying again may succeed,
    ``order_refused`` when the exchange refused the order itself (funds, size, market)."""

    def __init__(self, message: str, *, retryable: bool, order_refused: bool = False) -> None:
        self.retryable = retryable
        self.order_refused = order_refused
        super().__init__(message)


class CcxtConfig(BaseModel):
    """Options of the ccxt adapter (``plugins.broker`` config when ``exchange`` is used)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: A ccxt exchange id (``ccxt.exchanges``).
    exchange: str = "binance"
    #: Names of the environment variables holding the credentials (never the values).
    api_key_env: str = "COREC_EXCHANGE_API_KEY"
    secret_env: str = "COREC_EXCHANGE_SECRET"
    #: The exchange's testnet (ccxt ``set_sandbox_mode``).
    sandbox: bool = False
    #: Per-request timeout, milliseconds (connect and read).
    timeout_ms: int = Field(10000, gt=0, le=120000)
    #: Send every API section to this scheme://host[:port], keeping each one's path
    #: (``/api/v3``, ``/sapi/v1``, ...): a proxy, or a fake exchange in tests.
    api_url: str | None = None
    #: Per-section overrides of ccxt's ``urls["api"]`` (applied after ``api_url``).
    urls: dict[str, str] = Field(default_factory=dict)
    #: ccxt exchange options, merged over ``BINANCE_SPOT_OPTIONS`` for binance.
    options: dict[str, Any] = Field(default_factory=dict)
    #: Asset symbol -> exchange symbol (``{"BTC-USD": "BTC/USDT"}``); unmapped symbols
    #: have ``-`` read as ``/``. Also the markets an order is looked for in when its
    #: symbol is not known to this process (a restart reconciling).
    symbols: dict[str, str] = Field(default_factory=dict)
    #: The order parameters carrying the client order id (Binance's names).
    client_order_id_param: str = "newClientOrderId"
    fetch_client_order_id_param: str = "origClientOrderId"
    #: Ask the exchange before placing (see the module docstring); off saves a request
    #: where the exchange rejects every reused client order id itself.
    lookup_before_submit: bool = True
    enable_rate_limit: bool = True


def load_config(config: Mapping[str, Any] | CcxtConfig | None) -> CcxtConfig:
    """Validate ``config``; errors name the plugin and the key."""
    if isinstance(config, CcxtConfig):
        return config
    try:
        return CcxtConfig.model_validate(dict(config or {}))
    except ValidationError as exc:
        problems = [
            (".".join(["plugins", PLUGIN, *map(str, e["loc"])]), e["msg"]) for e in exc.errors()
        ]
        raise ConfigurationError(problems, f"{PLUGIN} plugin (ccxt) config") from None


def import_ccxt() -> ModuleType:
    """ccxt, or a BrokerError saying how to install it."""
    try:
        return importlib.import_module("ccxt")
    except ImportError as exc:
        raise BrokerError(f"the ccxt exchange adapter needs ccxt: {INSTALL_HINT} ({exc})") from None


def _num(value: object) -> Decimal | None:
    """ccxt's floats as exact decimals, through their shortest repr."""
    if value is None or value == "":
        return None
    return to_money(str(value))


def _s(value: Decimal | None) -> str | None:
    return None if value is None else format(value, "f")


class CcxtBroker(BrokerContract):
    """A ccxt exchange as the broker plugin ``ccxt`` (see the module docstring)."""

    plugin_name = "ccxt"
    Params: ClassVar[type[BaseModel] | None] = CcxtConfig
    #: The validated options (the seed's plugins keep a dict; this one keeps its model).
    config: CcxtConfig  # type: ignore[assignment]

    def __init__(
        self,
        config: Mapping[str, Any] | CcxtConfig | None = None,
        environ: Mapping[str, str] | None = None,
        *,
        loader: ConfigLoader | None = None,
        portfolio_id: int | None = None,
        asset_id: int | None = None,
        settings: Any = None,
    ) -> None:
        checked = load_config(config)  # errors name plugins.broker.<key>
        super().__init__(checked.model_dump(), loader=loader, portfolio_id=portfolio_id,
                         asset_id=asset_id, settings=settings)  # fmt: skip
        assert isinstance(self.params, CcxtConfig)
        self.config = self.params
        self.name = f"ccxt:{self.config.exchange}"
        ccxt = import_ccxt()
        self._errors = ccxt
        env = os.environ if environ is None else environ
        missing = [
            (f"plugins.{PLUGIN}.{key}", f"environment variable {name} is not set")
            for key, name in (
                ("api_key_env", self.config.api_key_env),
                ("secret_env", self.config.secret_env),
            )
            if not env.get(name)
        ]
        if missing:
            raise ConfigurationError(missing, f"{PLUGIN} plugin (ccxt) credentials")
        try:
            exchange_class = getattr(ccxt, self.config.exchange)
        except AttributeError:
            raise ConfigurationError(
                [(f"plugins.{PLUGIN}.exchange", f"ccxt has no exchange {self.config.exchange!r}")]
            ) from None
        options = dict(BINANCE_SPOT_OPTIONS) if self.config.exchange == "binance" else {}
        options.update(self.config.options)
        self.exchange: Any = exchange_class(
            {
                "apiKey": env[self.config.api_key_env],
                "secret": env[self.config.secret_env],
                "timeout": self.config.timeout_ms,
                "enableRateLimit": self.config.enable_rate_limit,
                "options": options,
            }
        )
        if self.config.sandbox:
            self.exchange.set_sandbox_mode(True)
        self._point_urls()
        # The exchange symbol of each order this process placed: Binance queries need it.
        self._symbols: dict[str, str] = {}
        # ccxt's sync exchange (its requests session, its markets cache) is not meant
        # for concurrent calls; one at a time per broker.
        self._lock = threading.Lock()

    def _point_urls(self) -> None:
        api = self.exchange.urls.get("api")
        if self.config.api_url is not None and isinstance(api, dict):
            base = self.config.api_url.rstrip("/")
            api = {k: base + urlsplit(v).path if isinstance(v, str) else v for k, v in api.items()}
        elif self.config.api_url is not None:
            api = self.config.api_url
        if self.config.urls:
            api = {**(api if isinstance(api, dict) else {}), **self.config.urls}
        self.exchange.urls["api"] = api

    def close(self) -> None:
        """Release the HTTP session."""
        self.exchange.close()

    def exchange_symbol(self, symbol: str) -> str:
        """The exchange's symbol for an asset symbol (``BTC-USD`` -> ``BTC/USD``)."""
        mapped = self.config.symbols.get(symbol)
        if mapped is not None:
            return mapped
        return symbol.replace("-", "/") if "/" not in symbol else symbol

    def submit_order(
        self,
        client_order_id: str,
        symbol: str,
        side: str,
        order_type: str,
        quantity: Decimal,
        market_price: Decimal,
        limit_price: Decimal | None = None,
    ) -> dict[str, Any]:
        """Place the order under ``client_order_id``; a known id returns the existing
        order (``"duplicate": true``), never a second one. ``market_price`` is unused:
        the exchange fills at its own prices."""
        if not client_order_id:
            raise BrokerError("client_order_id is required")
        if order_type not in ("market", "limit"):
            raise BrokerError(f"unknown order type {order_type!r}")
        if order_type == "limit" and limit_price is None:
            raise BrokerError("a limit order needs a limit price")
        market = self.exchange_symbol(symbol)
        with self._lock:
            self._symbols[client_order_id] = market
            if self.config.lookup_before_submit:
                known = self._fetch(client_order_id, market)
                if known is not None:
                    return {**self._record(known, client_order_id, symbol), "duplicate": True}
            params = {self.config.client_order_id_param: client_order_id}
            # A market order goes by base quantity: no price, or Binance would turn it
            # into a quote-amount (quoteOrderQty) order.
            price = float(limit_price) if order_type == "limit" and limit_price else None
            try:
                order = self._call(
                    "create_order", market, order_type, side, float(quantity), price, params
                )
            except ExchangeBrokerError as exc:
                if _is_duplicate(exc):
                    found = self._fetch(client_order_id, market)
                    if found is None:
                        raise
                    return {**self._record(found, client_order_id, symbol), "duplicate": True}
                if not exc.order_refused:
                    raise
                # Refused for good (funds, size, market): a rejected order, as the paper
                # exchange answers an invalid one, so the intent can be decided again.
                return {
                    **_rejected(client_order_id, symbol, side, order_type, quantity, limit_price),
                    "reject_reason": str(exc),
                    "duplicate": False,
                }
            return {**self._record(order, client_order_id, symbol), "duplicate": False}

    def fetch_order(
        self, client_order_id: str, market_price: Decimal | None = None
    ) -> dict[str, Any] | None:
        """The order under ``client_order_id``, or None if the exchange never got it.

        Binance looks orders up per market: the symbol is the one this process placed
        it in, else each of ``config.symbols`` in turn. ``market_price`` is unused.
        """
        with self._lock:
            known = self._symbols.get(client_order_id)
            candidates = [known] if known else list(dict.fromkeys(self.config.symbols.values()))
            if not candidates:
                raise BrokerError(
                    f"no market known for {client_order_id!r}: list the traded markets "
                    f"in plugins.{PLUGIN}.symbols"
                )
            for market in candidates:
                order = self._fetch(client_order_id, market)
                if order is not None:
                    self._symbols[client_order_id] = market
                    asset = next((a for a, m in self.config.symbols.items() if m == market), market)
                    return self._record(order, client_order_id, asset)
            return None

    def _fetch(self, client_order_id: str, market: str) -> dict[str, Any] | None:
        params = {self.config.fetch_client_order_id_param: client_order_id}
        try:
            order: dict[str, Any] = self._call("fetch_order", None, market, params)
        except _NotFound:
            return None
        return order

    def _call(self, method: str, *args: Any) -> Any:
        """``exchange.method(*args)`` with ccxt's errors as BrokerErrors."""
        ccxt = self._errors
        try:
            if self.exchange.markets is None:
                self.exchange.load_markets()
            return getattr(self.exchange, method)(*args)
        except ccxt.OrderNotFound as exc:
            raise _NotFound(str(exc)) from exc
        except ccxt.NetworkError as exc:  # timeouts, refused connections, rate limits, 5xx
            raise ExchangeBrokerError(
                f"{self.name} {method}: exchange unreachable ({type(exc).__name__}): {exc}",
                retryable=True,
            ) from exc
        except ccxt.BaseError as exc:  # the exchange answered and refused
            refused = isinstance(exc, (ccxt.InvalidOrder, ccxt.InsufficientFunds, ccxt.BadSymbol))
            raise ExchangeBrokerError(
                f"{self.name} {method}: {type(exc).__name__}: {exc}",
                retryable=False,
                order_refused=refused and method == "create_order",
            ) from exc

    def _record(
        self, order: Mapping[str, Any], client_order_id: str, symbol: str
    ) -> dict[str, Any]:
        """A ccxt order structure as the paper exchange's record."""
        raw = str(order.get("status") or "")
        filled = _num(order.get("filled")) or Decimal(0)
        if raw in _STILL_OPEN:
            status = PARTIALLY_FILLED if filled > 0 else OPEN
        elif raw in _STATUSES:
            status = _STATUSES[raw]
        else:
            raise ExchangeBrokerError(
                f"{self.name}: order {client_order_id!r} has unknown status {raw!r}",
                retryable=False,
            )
        average = _num(order.get("average"))
        if average is None and filled > 0:
            cost = _num(order.get("cost"))
            average = None if cost is None else to_money(cost / filled)
        fills = []
        for trade in order.get("trades") or []:
            trade_fee = (trade.get("fee") or {}).get("cost")
            fills.append(
                {
                    "quantity": _s(_num(trade.get("amount"))),
                    "price": _s(_num(trade.get("price"))),
                    "fee": _s(_num(trade_fee) or Decimal(0)),
                }
            )
        fee = _num((order.get("fee") or {}).get("cost"))
        if fee is None:
            costs = [_num(f.get("cost")) for f in order.get("fees") or []]
            fee = sum((c for c in costs if c is not None), Decimal(0))
        info = order.get("info") or {}
        return {
            "client_order_id": order.get("clientOrderId") or client_order_id,
            "exchange_order_id": None if order.get("id") is None else str(order["id"]),
            "symbol": symbol,
            "side": order.get("side"),
            "type": order.get("type"),
            "quantity": _s(_num(order.get("amount"))),
            "limit_price": _s(_num(order.get("price"))) if order.get("type") == "limit" else None,
            "status": status,
            "filled_quantity": _s(filled),
            "average_price": _s(average) if filled > 0 else None,
            "fee": _s(fee),
            "fills": fills,
            "reject_reason": (info.get("msg") or f"rejected by {self.name}")
            if status == REJECTED
            else None,
        }


class _NotFound(Exception):
    """The exchange does not know the order (internal: becomes None)."""


def _rejected(
    client_order_id: str,
    symbol: str,
    side: str,
    order_type: str,
    quantity: Decimal,
    limit_price: Decimal | None,
) -> dict[str, Any]:
    """The record of an order the exchange refused to take."""
    return {
        "client_order_id": client_order_id,
        "exchange_order_id": None,
        "symbol": symbol,
        "side": side,
        "type": order_type,
        "quantity": _s(to_money(quantity)),
        "limit_price": None if limit_price is None else _s(to_money(limit_price)),
        "status": REJECTED,
        "filled_quantity": "0",
        "average_price": None,
        "fee": "0",
        "fills": [],
        "reject_reason": None,
    }


def _is_duplicate(exc: ExchangeBrokerError) -> bool:
    text = str(exc)
    return "-2010" in text and "duplicate" in text.lower()
