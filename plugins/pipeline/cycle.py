"""The full trading cycle (seed 003 §7): allocation -> prediction -> pipeline -> strategy
-> broker, for every instrument, in parallel across workers.

``Trading.prepare(cycle)`` runs once per cycle:

1. **allocation**: ``capital_pool.allocate`` fills free per-trade slots and publishes them
   on ``capital_data``; the trading side moves them into its allocation book (a Redis
   list, consumer group ``trading``, deduplicated by ``allocation_id``);
2. **prediction**: the market, macro and predictor feeds tick under the cycle's key
   (idempotent), and the cycle's predictions are read back from ``predictions``;
3. the pool's equity and VIX are read, and the portfolio plugin splits the tradable
   capital (``max_active_ratio`` x equity) across the assets: each asset's cap.

It returns one job per asset. ``Trading.process_asset(job)`` is the pipeline's step for
one instrument (run by the Celery task ``trading.process_assets``): strategy (prediction
threshold, fixed-fractional size capped by the asset's cap and by the allocation it
claims from the book) -> broker (intent written before submit, reconciled by client
order id). A position's allocation id is remembered; when the position closes, the
realised profit (net of fees) is published on ``trading_results`` with the close
order's client id as trade id and the allocation id, so the capital pool applies it
once, closes the allocation and moves NAV.

Idempotent per (portfolio, asset, cycle): the result is stored under a done-mark; a
redelivered or retried job returns it. What an interrupted job needs to finish (the
position it closes, the allocation it claimed) is written before the broker call.
"""

from __future__ import annotations

import itertools
import json
import logging
import secrets
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import redis
from sqlalchemy import select

from corec_tasks.redis_conn import redis_client
from corec_tasks.settings import Settings
from corec_tasks.streams.bus import Entry, StreamBus
from corec_tasks.streams.consumer import ConsumerLoop, Dead, Done, EntryHandler, Verdict
from corec_tasks.streams.names import CAPITAL_DATA, PREDICTIONS, TRADING_RESULTS
from plugins.broker.paper import PaperBroker, file_config, redis_store
from plugins.broker.service import BrokerService
from plugins.capital_pool.money import CENT
from plugins.capital_pool.service import CapitalPool
from plugins.capital_pool.settings import capital_config
from plugins.feeds.market import history_key
from plugins.feeds.tasks import Feeds
from plugins.pipeline.config import TradingConfig, trading_config
from plugins.portfolio.plugin import AllocatorPortfolio
from plugins.strategy.plugin import PredictionThresholdStrategy
from plugins.trading.base import safe_call
from plugins.trading.db import make_trading_engine, prepare, session_factory
from plugins.trading.models import Asset, Portfolio, Position, Role, User

log = logging.getLogger(__name__)

GROUP = "trading"
# Add ARGV[2] to the book KEYS[2] once per allocation id ARGV[1] (KEYS[1] the seen set),
# atomically: a crash cannot mark an allocation seen without booking it.
_BOOK_ADD = """
if redis.call('SADD', KEYS[1], ARGV[1]) == 1 then
  redis.call('RPUSH', KEYS[2], ARGV[2])
  return 1
end
return 0
"""
#: A job's stored result lives this long (a day of cycles).
DONE_TTL_S = 86_400


@dataclass(frozen=True)
class Prepared:
    """One cycle, ready to fan out."""

    cycle: str
    jobs: list[dict[str, Any]]
    allocation: dict[str, Any]
    predictions: int
    equity: str


class Trading:
    """The trading layer of one process: database, Redis, feeds, strategy, broker, pool."""

    def __init__(self, settings: Settings, config: TradingConfig | None = None) -> None:
        self.settings = settings
        self.config = config or trading_config(settings)
        self.engine = make_trading_engine(settings.database_url)
        prepare(self.engine)
        self.sessions = session_factory(self.engine)
        self.r: redis.Redis = redis_client(settings)
        self.bus = StreamBus(settings, self.r)
        self.broker = BrokerService(self.sessions, self._exchange())
        cap = capital_config(settings)
        self.capital = CapitalPool(settings, cap)
        self.strategy = PredictionThresholdStrategy(
            self.config.strategy, capital_rules=cap.capital_config, macro_rules=cap.macro_config
        )
        self.portfolio_plugin = AllocatorPortfolio({
            "allocation_method": self.config.allocation_method,
            "max_allocation_per_asset": float(self.config.max_allocation_per_asset),
        })  # fmt: skip
        self.max_active_ratio = cap.capital_config.max_active_ratio
        self.allocation_ttl_s = cap.capital_config.allocation_ttl_s
        self.feeds = Feeds(settings)

    def _exchange(self) -> Any:
        if self.config.broker_adapter == "ccxt":
            from plugins.broker.ccxt_adapter import CcxtBroker

            return CcxtBroker(self.config.broker)
        paper = {**file_config().model_dump(), **self.config.broker}
        return PaperBroker(paper, redis_store(self.settings))

    def close(self) -> None:
        self.feeds.close()
        self.capital.close()
        self.r.close()
        self.engine.dispose()

    def key(self, *parts: object) -> str:
        return self.settings.key("trading:" + ":".join(str(p) for p in parts))

    # -- set-up ----------------------------------------------------------------------

    def ensure_portfolio(self) -> tuple[int, list[tuple[int, str]]]:
        """The pool's portfolio and one asset per feed symbol (created once)."""
        symbols = list(self.feeds.config.market.symbols)
        with self.sessions.begin() as db:
            owner = db.scalar(select(User).where(User.username == self.config.owner))
            if owner is None:
                from argon2 import PasswordHasher

                # A system account nobody knows the password of: it only owns the book.
                hashed = PasswordHasher().hash(secrets.token_urlsafe(32))
                owner = User(username=self.config.owner, role=Role.ADMIN, password_hash=hashed)
                db.add(owner)
                db.flush()
            portfolio = db.scalar(
                select(Portfolio).where(
                    Portfolio.user_id == owner.id, Portfolio.name == self.config.portfolio
                )
            )
            if portfolio is None:
                portfolio = Portfolio(user_id=owner.id, name=self.config.portfolio)
                db.add(portfolio)
                db.flush()
            have = {a.symbol: a.id for a in db.scalars(
                select(Asset).where(Asset.portfolio_id == portfolio.id))}  # fmt: skip
            for symbol in symbols:
                if symbol not in have:
                    asset = Asset(portfolio_id=portfolio.id, symbol=symbol)
                    db.add(asset)
                    db.flush()
                    have[symbol] = asset.id
            return portfolio.id, [(have[s], s) for s in symbols]

    # -- the cycle's preparation ---------------------------------------------------------

    def prepare(self, cycle: str) -> Prepared:
        """Allocation, prediction and per-asset caps; one job per asset."""
        allocation = self.capital.allocate(f"trading-{cycle}")
        self.sync_allocations()
        self._warm_up(cycle)
        self.feeds.market.tick(cycle)
        self.feeds.macro.tick(cycle)
        self.feeds.predictor.tick(cycle)
        predictions = self.predictions(cycle)
        status = self.capital.status()
        equity = Decimal(status.get("equity", "0")) if status.get("ok") else Decimal(0)
        vix = status.get("vix")
        portfolio_id, assets = self.ensure_portfolio()
        tradable = (self.max_active_ratio * equity).quantize(CENT)
        closes = self._closes([s for _, s in assets])
        caps = self.portfolio_plugin.allocate_capital(
            {"capital": tradable},
            [{"id": aid, "returns": _returns(closes.get(sym, []))} for aid, sym in assets],
        )
        jobs = [
            {"portfolio_id": portfolio_id, "asset_id": aid, "symbol": sym, "cycle": cycle,
             "prediction": predictions.get(sym), "equity": str(equity), "vix": vix,
             "cap": str(caps.get(str(aid), Decimal(0)))}
            for aid, sym in assets
        ]  # fmt: skip
        return Prepared(cycle, jobs, allocation, len(predictions), str(equity))

    def _warm_up(self, cycle: str) -> None:
        """Before the first predictions, tick the market until the predictor has history."""
        need = self.feeds.config.predictor.lags + 3
        first = self.feeds.config.market.symbols[0]
        have = int(self.r.llen(history_key(self.feeds.ticker, first)))
        for i in range(max(0, need - have)):
            self.feeds.market.tick(f"warm-up-{cycle}-{i}")

    def _closes(self, symbols: list[str]) -> dict[str, list[float]]:
        pipe = self.r.pipeline(transaction=False)
        for s in symbols:
            pipe.lrange(history_key(self.feeds.ticker, s), 0, 255)
        return {s: [float(x) for x in reversed(v)] for s, v in zip(symbols, pipe.execute(),
                                                                   strict=True)}  # fmt: skip

    def predictions(self, cycle: str) -> dict[str, float]:
        """The cycle's predicted returns per symbol, from the ``predictions`` stream."""
        n = 4 * len(self.feeds.config.market.symbols) + 16
        out: dict[str, float] = {}
        for row in self.bus.tail(PREDICTIONS, n):
            p = row["payload"]
            if isinstance(p, dict) and str(p.get("tick")) == cycle and p.get("symbol") not in out:
                out[str(p["symbol"])] = float(p["predicted_return"])
        return out

    # -- the allocation book -------------------------------------------------------------

    def sync_allocations(self) -> int:
        """Move new allocations from ``capital_data`` into the book, once each."""
        loop = ConsumerLoop(self.bus, AllocationBook(self), batch=1000)
        return loop.run(CAPITAL_DATA).counts["added"]

    def claim(self) -> dict[str, Any] | None:
        """The oldest unexpired allocation of the book, taken off it."""
        while True:
            raw: Any = self.r.lpop(self.key("allocations", "book"))
            if raw is None:
                return None
            msg: dict[str, Any] = json.loads(raw)
            if time.time() - float(msg.get("created_at", 0)) < self.allocation_ttl_s:
                return msg

    def unclaim(self, allocation: dict[str, Any]) -> None:
        self.r.lpush(self.key("allocations", "book"), json.dumps(allocation))

    # -- one instrument ------------------------------------------------------------------

    def stored(self, job: dict[str, Any]) -> dict[str, Any]:
        """The stored result of ``job``, or an error saying it has none."""
        raw: Any = self.r.get(self.key("done", job["portfolio_id"], job["asset_id"], job["cycle"]))
        if raw is None:
            return {"ok": False, "action": "none", "symbol": job["symbol"],
                    "error": "no result (the asset's task failed)"}  # fmt: skip
        result: dict[str, Any] = json.loads(raw)
        return result

    def process_asset(self, job: dict[str, Any]) -> dict[str, Any]:
        """Strategy then broker for one asset in one cycle; once per (portfolio, asset, cycle)."""
        p, a, cycle = job["portfolio_id"], job["asset_id"], job["cycle"]
        done = self.key("done", p, a, cycle)
        stored = self.r.get(done)
        if stored is not None:
            return {**json.loads(stored), "replayed": True}
        out = self._process(job)
        out.update(symbol=job["symbol"], asset_id=a, cycle=cycle)
        self.r.set(done, json.dumps(out, default=str), ex=DONE_TTL_S)
        return out

    def _process(self, job: dict[str, Any]) -> dict[str, Any]:
        p, a, cycle, symbol = job["portfolio_id"], job["asset_id"], job["cycle"], job["symbol"]
        latest: Any = self.r.lindex(history_key(self.feeds.ticker, symbol), 0)
        if latest is None:
            return {"ok": False, "action": "none", "error": f"no market price for {symbol}"}
        price = Decimal(latest.decode()).quantize(Decimal("0.00000001"))
        pending_key = self.key("pending", p, a, cycle)
        pending = self.r.hgetall(pending_key)
        position = self._position(p, a)
        alloc: dict[str, Any] | None = None
        cap = Decimal(job["cap"])
        if pending:  # a retry after the broker call: finish what was started
            action = json.loads(pending[b"action"])
            alloc = json.loads(pending[b"alloc"]) if pending.get(b"alloc") else None
            before = json.loads(pending[b"position"]) if pending.get(b"position") else None
        else:
            if job.get("prediction") is None:
                return {"ok": True, "action": "none", "reason": "no prediction this cycle"}
            if position is None:
                alloc = self.claim()
                budget = min(Decimal(alloc["amount"]), cap) if alloc else Decimal(0)
            else:
                budget = cap
            held = None
            if position is not None:
                held = {"side": position["side"], "quantity": Decimal(position["quantity"])}
            asset: dict[str, Any] = {"equity": Decimal(job["equity"]), "allocation": budget,
                                     "position": held}  # fmt: skip
            market = {"price": price, "vix": job.get("vix")}
            action = safe_call(self.strategy, "process", asset, market,
                               {"expected_return": job["prediction"]})  # fmt: skip
            if (
                action.get("ok") is False
                or action.get("action") == "none"
                or (action.get("action") == "open" and alloc is None)
            ):
                if alloc:
                    self.unclaim(alloc)
                reason = action.get("error") or action.get("reason") or "no allocation free"
                return {"ok": action.get("ok", True) is not False, "action": "none",
                        "reason": reason}  # fmt: skip
            before = position
            self.r.hset(pending_key, mapping={
                "action": json.dumps(action, default=str),
                "alloc": json.dumps(alloc) if alloc else "",
                "position": json.dumps(position) if position else "",
            })  # fmt: skip
            self.r.expire(pending_key, DONE_TTL_S)
        res = self.broker.execute(action, p, a, price, cycle=cycle)
        filled = Decimal(res.get("filled_quantity") or 0)
        out = {"ok": bool(res.get("success")), "action": action["action"],
               "side": action["parameters"]["side"], "status": res.get("status"),
               "filled": str(filled), "price": res.get("average_price"),
               "error": res.get("error_message")}  # fmt: skip
        book = self.key("positions", "allocation")
        if action["action"] == "open":
            if filled > 0 and alloc:
                self.r.hset(book, f"{p}:{a}", alloc["allocation_id"])
            elif alloc:
                self.unclaim(alloc)
        elif action["action"] == "close" and filled > 0 and before:
            sign = 1 if before["side"] == "long" else -1
            avg = Decimal(res["average_price"])
            fee = Decimal(res.get("fee") or 0)
            profit = ((avg - Decimal(before["entry_price"])) * filled * sign - fee).quantize(CENT)
            allocation_id: Any = self.r.hget(book, f"{p}:{a}")
            self.bus.publish(TRADING_RESULTS, {
                "trade_id": res["client_order_id"], "profit": str(profit),
                "quantity": str(filled), "price": str(avg), "symbol": job["symbol"],
                "allocation_id": allocation_id.decode() if allocation_id else None,
            })  # fmt: skip
            self.r.hdel(book, f"{p}:{a}")
            out["profit"] = str(profit)
        self.r.delete(pending_key)
        return out

    def _position(self, portfolio_id: int, asset_id: int) -> dict[str, str] | None:
        with self.sessions() as db:
            pos = db.scalar(select(Position).where(
                Position.portfolio_id == portfolio_id, Position.asset_id == asset_id,
                Position.closed_at.is_(None)).order_by(Position.id))  # fmt: skip
            if pos is None:
                return None
            return {"side": pos.side.value, "quantity": str(pos.quantity),
                    "entry_price": str(pos.entry_price)}  # fmt: skip


class AllocationBook(EntryHandler):
    """``capital_data`` -> the allocation book (consumer group ``trading``), deduplicated
    by ``allocation_id``; other capital messages are passed over (the persister keeps
    them, and dead-letters what does not parse)."""

    group = GROUP

    def __init__(self, trading: Trading) -> None:
        self.trading = trading

    def handle(self, entry: Entry, deliveries: int) -> Verdict:
        try:
            msg = json.loads(entry.original_bytes())
        except ValueError:
            return Done("skipped")
        if not isinstance(msg, dict) or msg.get("kind") != "allocation":
            return Done("skipped")
        allocation_id = msg.get("allocation_id")
        if not isinstance(allocation_id, str) or not allocation_id:
            return Dead(f"{GROUP}: allocation without an allocation_id")
        t = self.trading
        added = t.r.eval(_BOOK_ADD, 2, t.key("allocations", "seen"), t.key("allocations", "book"),
                         allocation_id, json.dumps(msg))  # fmt: skip
        return Done("added" if added else "duplicates")


def _returns(closes: list[float]) -> list[float]:
    return [b / a - 1 for a, b in itertools.pairwise(closes) if a > 0]


def summarise(cycle: str, results: list[dict[str, Any]], started: float) -> dict[str, Any]:
    """What a cycle did, for the log, the CLI and the demo."""
    count: dict[str, int] = {}
    for r in results:
        count[r.get("action", "none")] = count.get(r.get("action", "none"), 0) + 1
    return {
        "cycle": cycle,
        "assets": len(results),
        "actions": count,
        "errors": [r for r in results if not r.get("ok")][:5],
        "profit": str(sum((Decimal(r["profit"]) for r in results if r.get("profit")), Decimal(0))),
        "wall_s": round(time.time() - started, 3),
    }
