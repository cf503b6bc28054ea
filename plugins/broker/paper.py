"""A paper exchange: market and limit orders, slippage, fees and partial fills.

It behaves like a real exchange where it matters for crash safety: it keeps its own
record of every order keyed by the caller's ``client_order_id``, a second submit under
the same id returns the first order instead of making another, and ``fetch_order``
answers by that id. The records live in an ``OrderStore``: in memory for unit tests,
or a Redis hash (``RedisOrderStore``) so they outlive the process that submitted them,
as a real exchange's would. Client order ids are deterministic, so someone holding the
Redis password could write an order's record before CoreC submits it (a fill at a price
of their choosing): each record in Redis is sealed (``plugins.trading.sealed``), and one
that fails its seal is reported and refused (``BrokerError``), never used.

Prices: a market order fills at the given market price moved against the taker by
``slippage_bps`` (buy higher, sell lower). A limit order fills only once the market
crosses its limit (buy: market <= limit; sell: market >= limit), at the market price,
without slippage, so never worse than the limit. Each matching call fills at most
``max_fill_quantity`` (unset: all that remains); later ``fetch_order`` calls with a
market price fill more. Fee = ``fee_bps`` of each fill's notional.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar, Protocol

import redis
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from corec_tasks.contracts import BrokerContract
from corec_tasks.errors import ConfigurationError, CorecError
from corec_tasks.plugin_base import ConfigLoader
from corec_tasks.redis_conn import redis_client
from corec_tasks.settings import Settings
from plugins.trading.sealed import Seals
from plugins.trading.types import to_money

PLUGIN = "broker"
#: The shipped options (slippage, fee, liquidity), next to this module.
CONFIG_FILE = Path(__file__).with_name("config.json")
_BPS = Decimal(10000)

#: Exchange-side statuses (not the Order model's lifecycle: "open" is not "submitted").
OPEN, PARTIALLY_FILLED, FILLED, CANCELLED, REJECTED = (
    "open",
    "partially_filled",
    "filled",
    "cancelled",
    "rejected",
)
FINAL = frozenset({FILLED, CANCELLED, REJECTED})


class BrokerError(CorecError):
    """A broker refused or failed a request."""


class PaperConfig(BaseModel):
    """Options of the paper exchange; amounts are exact decimals (strings in JSON)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Price moved against a market order, in basis points of the market price.
    slippage_bps: Decimal = Field(Decimal(0), ge=0, le=10000)
    #: Fee on each fill's notional, in basis points.
    fee_bps: Decimal = Field(Decimal(0), ge=0, le=10000)
    #: Most quantity one matching call fills (the book's liquidity); None: unlimited.
    max_fill_quantity: Decimal | None = Field(None, gt=0)
    #: Simulated round trip to the exchange per submit or fetch, in milliseconds (a real
    #: exchange answers in tens to hundreds); 0: instant.
    latency_ms: float = Field(0.0, ge=0, le=60_000)


def load_config(config: Mapping[str, Any] | PaperConfig | None) -> PaperConfig:
    """Validate ``config``; errors name the plugin and the key."""
    if isinstance(config, PaperConfig):
        return config
    data = dict(config or {})
    for key, value in data.items():
        if isinstance(value, float):
            data[key] = str(value)  # the shortest repr, never the binary expansion
    try:
        return PaperConfig.model_validate(data)
    except ValidationError as exc:
        problems = [
            (".".join(["plugins", PLUGIN, *map(str, e["loc"])]), e["msg"]) for e in exc.errors()
        ]
        raise ConfigurationError(problems, f"{PLUGIN} plugin config") from None


def file_config(path: Path = CONFIG_FILE) -> PaperConfig:
    """The options in ``path`` (the plugin's ``config.json`` by default)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigurationError([(f"plugins.{PLUGIN}", f"{path}: {exc}")]) from None
    return load_config(data)


def redis_store(settings: Settings) -> RedisOrderStore:
    """The exchange-side orders in Redis under the deployment's prefix (they outlive
    any worker, as a real exchange's do)."""
    client = redis_client(settings)
    return RedisOrderStore(client, settings.key("broker:paper:orders"), Seals(settings, client))


class OrderStore(Protocol):
    """Where the exchange keeps its orders, by client order id (records are JSON-able)."""

    def get(self, client_order_id: str) -> dict[str, Any] | None:
        """The record, or None."""

    def create(self, client_order_id: str, record: dict[str, Any]) -> bool:
        """Store ``record`` unless the id exists; True when stored."""

    def save(self, client_order_id: str, record: dict[str, Any]) -> None:
        """Overwrite the record."""


class MemoryOrderStore:
    """Records in a dict: one process, gone with it."""

    def __init__(self) -> None:
        self._orders: dict[str, str] = {}

    def get(self, client_order_id: str) -> dict[str, Any] | None:
        raw = self._orders.get(client_order_id)
        return None if raw is None else dict(json.loads(raw))

    def create(self, client_order_id: str, record: dict[str, Any]) -> bool:
        if client_order_id in self._orders:
            return False
        self._orders[client_order_id] = json.dumps(record)
        return True

    def save(self, client_order_id: str, record: dict[str, Any]) -> None:
        self._orders[client_order_id] = json.dumps(record)


class RedisOrderStore:
    """Records in one Redis hash (field: client order id, value: sealed JSON); HSETNX
    makes creation atomic across processes, so two submits of one id make one order."""

    def __init__(self, client: redis.Redis, key: str, seals: Seals) -> None:
        self._client = client
        self._key = key
        self._seals = seals

    def _name(self, client_order_id: str) -> str:
        return f"{self._key}\n{client_order_id}"

    def get(self, client_order_id: str) -> dict[str, Any] | None:
        raw = self._client.hget(self._key, client_order_id)
        if raw is None:
            return None
        record = self._seals.open_json("broker:paper:orders", self._name(client_order_id), raw)
        if not isinstance(record, dict):
            raise BrokerError(f"order {client_order_id}: its record in Redis was not written "
                              "by CoreC (no valid seal); refused")  # fmt: skip
        return record

    def create(self, client_order_id: str, record: dict[str, Any]) -> bool:
        sealed = self._seals.seal_json(self._name(client_order_id), record)
        return bool(self._client.hsetnx(self._key, client_order_id, sealed))

    def save(self, client_order_id: str, record: dict[str, Any]) -> None:
        sealed = self._seals.seal_json(self._name(client_order_id), record)
        self._client.hset(self._key, client_order_id, sealed)


def _d(value: object) -> Decimal:
    if isinstance(value, float):
        raise TypeError(f"amounts must be Decimal, int or str, not float: {value!r}")
    return to_money(value)


def _s(value: Decimal | None) -> str | None:
    return None if value is None else format(value, "f")


class PaperBroker(BrokerContract):
    """A simulated exchange (see the module docstring for its fill rules), the broker
    plugin ``paper``. Built by a deployment (``settings`` given), its options go over the
    shipped ``config.json`` and its orders live in Redis (``redis_store``)."""

    plugin_name = "paper"
    name = "paper"
    Params: ClassVar[type[BaseModel] | None] = PaperConfig
    #: The validated options (the seed's plugins keep a dict; this one keeps its model).
    config: PaperConfig  # type: ignore[assignment]

    def __init__(
        self,
        config: Mapping[str, Any] | PaperConfig | None = None,
        store: OrderStore | None = None,
        *,
        loader: ConfigLoader | None = None,
        portfolio_id: int | None = None,
        asset_id: int | None = None,
        settings: Settings | None = None,
    ) -> None:
        given = config.model_dump() if isinstance(config, PaperConfig) else dict(config or {})
        shipped = file_config().model_dump() if settings is not None else {}
        checked = load_config({**shipped, **given})  # errors name plugins.broker.<key>
        super().__init__(checked.model_dump(), loader=loader, portfolio_id=portfolio_id,
                         asset_id=asset_id, settings=settings)  # fmt: skip
        assert isinstance(self.params, PaperConfig)
        self.config = self.params
        if store is None and settings is not None:
            store = redis_store(settings)
        self.store: OrderStore = store if store is not None else MemoryOrderStore()
        # One process matches one order at a time; across processes only creation is
        # atomic (HSETNX), which is what idempotent client ids need.
        self._lock = threading.Lock()

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
        """Place an order and match it against ``market_price``; a known id returns the
        existing order unchanged (with ``"duplicate": true``), never a second one."""
        if not client_order_id:
            raise BrokerError("client_order_id is required")
        self._round_trip()
        with self._lock:
            existing = self.store.get(client_order_id)
            if existing is not None:
                return {**existing, "duplicate": True}
            record = self._new_record(
                client_order_id, symbol, side, order_type, quantity, limit_price
            )
            if not self.store.create(client_order_id, record):
                # Another process created it between our get and create.
                raced = self.store.get(client_order_id) or record
                return {**raced, "duplicate": True}
            if record["status"] != REJECTED:
                self._match(record, _d(market_price))
                self.store.save(client_order_id, record)
            return {**record, "duplicate": False}

    def _round_trip(self) -> None:
        if self.config.latency_ms:
            time.sleep(self.config.latency_ms / 1000)

    def fetch_order(
        self, client_order_id: str, market_price: Decimal | None = None
    ) -> dict[str, Any] | None:
        """The order under ``client_order_id``, or None if the exchange never got it.

        With ``market_price`` an open order first matches against it (the market having
        moved since); real adapters take no price and ignore it.
        """
        with self._lock:
            record = self.store.get(client_order_id)
            if record is None:
                return None
            if market_price is not None and record["status"] not in FINAL:
                before = record["filled_quantity"]
                self._match(record, _d(market_price))
                if record["filled_quantity"] != before:
                    self.store.save(client_order_id, record)
            return record

    def cancel_order(self, client_order_id: str) -> dict[str, Any] | None:
        """Cancel what remains of an open order; None if unknown, final orders unchanged."""
        with self._lock:
            record = self.store.get(client_order_id)
            if record is None or record["status"] in FINAL:
                return record
            record["status"] = CANCELLED
            self.store.save(client_order_id, record)
            return record

    def _new_record(
        self,
        client_order_id: str,
        symbol: str,
        side: str,
        order_type: str,
        quantity: Decimal,
        limit_price: Decimal | None,
    ) -> dict[str, Any]:
        record: dict[str, Any] = {
            "client_order_id": client_order_id,
            "exchange_order_id": f"paper-{uuid.uuid4().hex}",
            "symbol": symbol,
            "side": side,
            "type": order_type,
            "quantity": None,
            "limit_price": None,
            "status": OPEN,
            "filled_quantity": "0",
            "average_price": None,
            "fee": "0",
            "fills": [],
            "reject_reason": None,
        }
        reason = None
        try:
            qty = _d(quantity)
            record["quantity"] = _s(qty)
            limit = None if limit_price is None else _d(limit_price)
            record["limit_price"] = _s(limit)
        except (TypeError, ValueError) as exc:
            reason = str(exc)
        else:
            if side not in ("buy", "sell"):
                reason = f"unknown side {side!r}"
            elif order_type not in ("market", "limit"):
                reason = f"unknown order type {order_type!r}"
            elif qty <= 0:
                reason = f"quantity must be positive, got {qty}"
            elif order_type == "limit" and (limit is None or limit <= 0):
                reason = "a limit order needs a positive limit price"
        if reason is not None:
            record["status"] = REJECTED
            record["reject_reason"] = reason
        return record

    def _match(self, record: dict[str, Any], market: Decimal) -> None:
        if market <= 0:
            return  # no market, no fill; the order stays open
        buy = record["side"] == "buy"
        if record["type"] == "limit":
            limit = Decimal(record["limit_price"])
            if (buy and market > limit) or (not buy and market < limit):
                return
            price = market
        else:
            slip = market * self.config.slippage_bps / _BPS
            price = market + slip if buy else market - slip
        quantity = Decimal(record["quantity"])
        filled = Decimal(record["filled_quantity"])
        size = quantity - filled
        if self.config.max_fill_quantity is not None:
            size = min(size, self.config.max_fill_quantity)
        if size <= 0:
            return
        price = to_money(price)
        fee = to_money(size * price * self.config.fee_bps / _BPS)
        filled += size
        record["fills"].append({"quantity": _s(size), "price": _s(price), "fee": _s(fee)})
        # From the fills themselves, so rounding never accumulates across partial fills.
        notional = sum(
            (Decimal(f["quantity"]) * Decimal(f["price"]) for f in record["fills"]), Decimal(0)
        )
        record["filled_quantity"] = _s(filled)
        record["average_price"] = _s(to_money(notional / filled))
        record["fee"] = _s(to_money(Decimal(record["fee"]) + fee))
        record["status"] = FILLED if filled >= quantity else PARTIALLY_FILLED
