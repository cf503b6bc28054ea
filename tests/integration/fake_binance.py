"""A fake of Binance's spot REST API, just what ccxt's ``binance`` calls for the adapter.

A threaded stdlib HTTP server on 127.0.0.1 (a free port):

* ``GET /api/v3/exchangeInfo`` - one or more spot markets with the fields ccxt's
  ``parse_market`` reads (assets, status, order types, PRICE_FILTER, LOT_SIZE, NOTIONAL);
* ``GET /api/v3/time`` - server time;
* ``POST /api/v3/order`` - a new order under ``newClientOrderId``: a market order fills
  at once at the symbol's price with a fee of ``fee_rate`` (in the quote asset); a limit
  order rests (``NEW``) until a test moves it with ``set_order``. A known client order id
  is refused with Binance's ``-2010 "Duplicate order sent."``;
* ``GET /api/v3/order`` - the order under ``origClientOrderId`` (or ``orderId``), or
  ``-2013 "Order does not exist."``;
* ``GET /api/v3/account`` - balances.

Signed endpoints need the ``X-MBX-APIKEY`` header, a ``timestamp`` and an HMAC-SHA256
``signature`` of the query, checked against the secret (``-1022`` otherwise).
Counters (``placed``, ``requests``) let tests see how many orders really were made.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import threading
import time
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

API_KEY = "fake-key"
SECRET = "fake-secret"


def _market(symbol: str, base: str, quote: str) -> dict[str, Any]:
    return {
        "symbol": symbol,
        "status": "TRADING",
        "baseAsset": base,
        "baseAssetPrecision": 8,
        "quoteAsset": quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET"],
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "permissions": ["SPOT"],
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": "0.01",
                "maxPrice": "1000000.00",
                "tickSize": "0.01",
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": "0.00001",
                "maxQty": "9000.00000",
                "stepSize": "0.00001",
            },
            {"filterType": "NOTIONAL", "minNotional": "5.00", "maxNotional": "9000000.00"},
        ],
    }


class FakeBinance:
    """The fake exchange: its markets, prices, orders and counters; ``start``/``stop``."""

    def __init__(self, fee_rate: str = "0.001") -> None:
        self.markets = {"BTCUSDT": ("BTC", "USDT"), "ETHUSDT": ("ETH", "USDT")}
        self.prices = {"BTCUSDT": Decimal("50000.00"), "ETHUSDT": Decimal("3000.00")}
        self.fee_rate = Decimal(fee_rate)
        self.balances = {"USDT": Decimal(1000000), "BTC": Decimal(10), "ETH": Decimal(100)}
        self.orders: dict[str, dict[str, Any]] = {}  # by client order id
        self.placed = 0  # orders really created
        self.requests: list[tuple[str, str]] = []  # (method, path)
        self.delay = 0.0  # seconds before each answer (a slow exchange)
        self._ids = itertools.count(1000)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> FakeBinance:
        fake = self

        class Handler(_Handler):
            exchange = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- test controls -----------------------------------------------------------------
    def set_order(self, client_order_id: str, status: str, executed: str | None = None) -> None:
        """Move an order (the market having moved): Binance status and executed quantity."""
        with self._lock:
            order = self.orders[client_order_id]
            order["status"] = status
            if executed is not None:
                qty = Decimal(executed)
                price = (
                    Decimal(order["price"])
                    if Decimal(order["price"])
                    else self.prices[order["symbol"]]
                )
                order["executedQty"] = _q(qty)
                order["cummulativeQuoteQty"] = _q(qty * price)
            order["updateTime"] = _now()

    # -- the API -----------------------------------------------------------------------
    def exchange_info(self) -> dict[str, Any]:
        return {
            "timezone": "UTC",
            "serverTime": _now(),
            "rateLimits": [],
            "exchangeFilters": [],
            "symbols": [_market(s, b, q) for s, (b, q) in self.markets.items()],
        }

    def new_order(self, p: dict[str, str]) -> tuple[int, dict[str, Any]]:
        symbol, cid = p.get("symbol", ""), p.get("newClientOrderId", "")
        if symbol not in self.markets:
            return 400, {"code": -1121, "msg": "Invalid symbol."}
        if not cid:
            return 400, {"code": -1118, "msg": "New client order ID was empty."}
        kind, side = p.get("type"), p.get("side")
        if kind not in ("MARKET", "LIMIT") or side not in ("BUY", "SELL"):
            return 400, {"code": -1116, "msg": "Invalid orderType."}
        qty = Decimal(p.get("quantity", "0"))
        if qty <= 0:
            return 400, {"code": -1013, "msg": "Invalid quantity."}
        with self._lock:
            if cid in self.orders:
                return 400, {"code": -2010, "msg": "Duplicate order sent."}
            price = Decimal(p.get("price") or self.prices[symbol])
            if side == "BUY" and qty * price > self.balances[self.markets[symbol][1]]:
                msg = "Account has insufficient balance for requested action."
                return 400, {"code": -2010, "msg": msg}
            self.placed += 1
            now = _now()
            order: dict[str, Any] = {
                "symbol": symbol,
                "orderId": next(self._ids),
                "orderListId": -1,
                "clientOrderId": cid,
                "price": _q(Decimal(p.get("price", "0"))),
                "origQty": _q(qty),
                "executedQty": _q(Decimal(0)),
                "cummulativeQuoteQty": _q(Decimal(0)),
                "status": "NEW",
                "timeInForce": p.get("timeInForce", "GTC"),
                "type": kind,
                "side": side,
                "stopPrice": "0.00000000",
                "icebergQty": "0.00000000",
                "time": now,
                "updateTime": now,
                "isWorking": True,
                "workingTime": now,
                "origQuoteOrderQty": "0.00000000",
                "selfTradePreventionMode": "EXPIRE_MAKER",
            }
            fills = []
            if kind == "MARKET":
                price = self.prices[symbol]
                order.update(
                    status="FILLED", executedQty=_q(qty), cummulativeQuoteQty=_q(qty * price)
                )
                fills.append(
                    {
                        "price": _q(price),
                        "qty": _q(qty),
                        "commission": _q(qty * price * self.fee_rate),
                        "commissionAsset": self.markets[symbol][1],
                        "tradeId": next(self._ids),
                    }
                )
            self.orders[cid] = order
            answer = {k: v for k, v in order.items() if k not in ("time", "updateTime")}
            return 200, {**answer, "transactTime": now, "fills": fills}

    def get_order(self, p: dict[str, str]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            cid = p.get("origClientOrderId")
            if cid is not None:
                order = self.orders.get(cid)
            else:
                oid = p.get("orderId")
                order = next((o for o in self.orders.values() if str(o["orderId"]) == oid), None)
            if order is None or order["symbol"] != p.get("symbol"):
                return 400, {"code": -2013, "msg": "Order does not exist."}
            return 200, dict(order)

    def account(self) -> dict[str, Any]:
        return {
            "canTrade": True,
            "accountType": "SPOT",
            "updateTime": _now(),
            "balances": [
                {"asset": a, "free": _q(v), "locked": "0.00000000"}
                for a, v in self.balances.items()
            ],
            "permissions": ["SPOT"],
        }


def _now() -> int:
    return int(time.time() * 1000)


def _q(value: Decimal) -> str:
    return format(value.quantize(Decimal("1e-8")), "f")


class _Handler(BaseHTTPRequestHandler):
    exchange: FakeBinance

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet tests

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def _serve(self, method: str) -> None:
        fake = self.exchange
        url = urlsplit(self.path)
        query = url.query
        if method == "POST":
            length = int(self.headers.get("Content-Length") or 0)
            query = self.rfile.read(length).decode() if length else query
        with fake._lock:
            fake.requests.append((method, url.path))
        if fake.delay:
            time.sleep(fake.delay)
        routes = {
            ("GET", "/api/v3/exchangeInfo"): (False, lambda p: (200, fake.exchange_info())),
            ("GET", "/api/v3/time"): (False, lambda p: (200, {"serverTime": _now()})),
            ("GET", "/api/v3/ping"): (False, lambda p: (200, {})),
            ("POST", "/api/v3/order"): (True, fake.new_order),
            ("GET", "/api/v3/order"): (True, fake.get_order),
            ("GET", "/api/v3/account"): (True, lambda p: (200, fake.account())),
        }
        route = routes.get((method, url.path))
        if route is None:
            self._answer(404, {"code": -1000, "msg": f"fake binance: no {method} {url.path}"})
            return
        signed, handler = route
        params = dict(parse_qsl(query, keep_blank_values=True))
        if signed:
            problem = self._check_signature(query, params)
            if problem is not None:
                self._answer(*problem)
                return
        self._answer(*handler(params))

    def _check_signature(self, query: str, params: dict[str, str]) -> tuple[int, Any] | None:
        if self.headers.get("X-MBX-APIKEY") != API_KEY:
            return 401, {"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."}
        if "timestamp" not in params:
            return 400, {"code": -1102, "msg": "Mandatory parameter 'timestamp' was not sent."}
        payload, sep, signature = query.rpartition("&signature=")
        expected = hmac.new(SECRET.encode(), payload.encode(), hashlib.sha256).hexdigest()
        if not sep or not hmac.compare_digest(signature, expected):
            return 400, {"code": -1022, "msg": "Signature for this request is not valid."}
        return None

    def _answer(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
