"""The full trading cycle (seed 003 §7): allocation -> prediction -> pipeline -> strategy
-> broker, for every instrument, in parallel across workers.

``Trading.prepare(cycle)`` runs once per cycle:

1. **allocation**: ``capital_pool.allocate`` fills free per-trade slots and publishes them
   on ``capital_data``; the trading side moves them into its allocation book (a Redis
   list, consumer group ``trading``, deduplicated by ``allocation_id``);
2. **prediction**: the market, macro and predictor feeds tick under the cycle's key
   (idempotent), and the cycle's predictions are read back from ``predictions``;
3. the pool's equity and VIX are read, and the portfolio plugin splits the tradable
   capital (``max_active_ratio`` x equity) across the assets: each asset's cap. It is
   given each held asset's current weight (its position's value over the tradable
   capital), so its ``rebalance_threshold`` decides: within it the held positions keep
   their weights; beyond it every asset gets its target, and a position worth more
   than its new cap is marked for a rebalance (closed this cycle, its capital freed).

It returns one job per asset. ``Trading.process_asset(job)`` is the pipeline's step for
one instrument (run by the Celery task ``trading.process_assets``): strategy (sized
under the asset's cap and the allocation it claims from the book) -> broker (intent
written before submit, reconciled by client order id).

The plugins are the pipeline config's (``"strategy": {"name": ...}``, likewise
``portfolio`` and ``broker``), loaded by name through the registry and configured per
portfolio and asset from the ``Config`` rows (``plugins.pipeline.slots``). Every call
into plugin code goes through ``safe_call`` with the AAA plugin's audit hook: an
exception is an ``audit_log`` row (``plugin.error``) and skips only that instrument (a
portfolio plugin's: that cycle's allocation, every cap 0); the cycle goes on.

A position's allocation id is remembered; when the position closes, the
realised profit (net of fees) is published on ``trading_results`` with the close
order's client id as trade id and the allocation id, so the capital pool applies it
once, closes the allocation and moves NAV. A position holds one allocation: it is not
added to, and it is closed before its allocation expires (within two cycles of
``allocation_ttl_s``), since the pool refuses a result on an allocation it released.

No money decision rests on state that someone holding only the Redis password can
write (issue 19). Prices are the feeds' sealed history (``plugins/feeds/history.py``):
an asset with no authenticated price younger than ``max_price_age_s`` is not traded.
The allocation book, each position's allocation and each asset's pending intent are
sealed values (``plugins.trading.sealed``); predictions are read only from entries
signed with the stream key; the equity and VIX come from the ledger (the pool's status
read from PostgreSQL, not its cache); an asset's symbol is its ``Asset`` row's, whatever
the job says. Whatever still got through (a forged task, a bug) is bounded by the pool:
a result applies only to an open allocation it issued, within its profit bound.

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

from corec_tasks.plugin_base import AuditHook, is_error, log_audit, plugin_label, safe_call
from corec_tasks.redis_conn import redis_client
from corec_tasks.settings import Settings
from corec_tasks.streams.bus import Entry, StreamBus
from corec_tasks.streams.consumer import ConsumerLoop, Dead, Done, EntryHandler, Verdict
from corec_tasks.streams.signing import check
from plugins.aaa import writes
from plugins.broker.service import BrokerService
from plugins.capital_pool.money import CENT
from plugins.capital_pool.service import CapitalPool
from plugins.capital_pool.settings import capital_config
from plugins.feeds.history import floats
from plugins.feeds.tasks import Feeds
from plugins.pipeline.config import TradingConfig, trading_config
from plugins.pipeline.slots import PluginSlot
from plugins.trading.base import DbConfigLoader, aaa_audit_hook
from plugins.trading.channels import CAPITAL_DATA, PREDICTIONS, TRADING_RESULTS
from plugins.trading.db import make_trading_engine, prepare, session_factory
from plugins.trading.models import Asset, Portfolio, Position, Role, User
from plugins.trading.registry import default_registry, load_plugin
from plugins.trading.sealed import Seals
from plugins.trading.types import utcnow

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
#: The seal families of the trading layer's own Redis values (their alerts' subjects).
F_BOOK, F_POSITION, F_PENDING = "trading:allocations", "trading:positions", "trading:pending"


@dataclass(frozen=True)
class Prepared:
    """One cycle, ready to fan out."""

    cycle: str
    jobs: list[dict[str, Any]]
    allocation: dict[str, Any]
    predictions: int
    equity: str
    #: The portfolio plugin's error this cycle (then every cap is 0), or None.
    portfolio_error: str | None = None


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
        self.registry = default_registry()
        loader = DbConfigLoader(self.sessions)
        self.aaa: Any = load_plugin("aaa", "aaa", registry=self.registry, settings=settings,
                                    sessions=self.sessions)  # fmt: skip
        #: Where every failed plugin call goes: an ``audit_log`` row, through AAA.
        self.audit: AuditHook = aaa_audit_hook(self.aaa)
        name, options = self.config.plugin("broker")
        broker: Any = load_plugin("broker", name, options, registry=self.registry,
                                  settings=settings)  # fmt: skip
        self.broker = BrokerService(self.sessions, broker, audit=self.audit)
        cap = capital_config(settings)
        self.capital = CapitalPool(settings, cap)
        self.strategies = PluginSlot("strategy", *self.config.plugin("strategy"),
                                     registry=self.registry, loader=loader, settings=settings)
        self.portfolios = PluginSlot("portfolio", *self.config.plugin("portfolio"),
                                     registry=self.registry, loader=loader, settings=settings)
        # A bad name or option in the pipeline config fails here, at start, not per asset.
        self.strategies.build()
        self.portfolios.build()
        #: A strategy used for every asset instead of the configured one (CeleryPipeline).
        self.strategy_override: Any = None
        self.max_active_ratio = cap.capital_config.max_active_ratio
        self.allocation_ttl_s = cap.capital_config.allocation_ttl_s
        self.feeds = Feeds(settings)
        self.history = self.feeds.market.history
        self.seals = Seals(settings, self.r)

    def close(self) -> None:
        self.feeds.close()
        self.capital.close()
        self.aaa.close()
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
                # Through aaa's function: the application role may not INSERT users.
                owner = writes.add_user(db, self.config.owner, None, hashed, Role.ADMIN,
                                        utcnow())  # fmt: skip
            portfolio = db.scalar(
                select(Portfolio).where(
                    Portfolio.user_id == owner.id, Portfolio.name == self.config.portfolio_name
                )
            )
            if portfolio is None:
                portfolio = Portfolio(user_id=owner.id, name=self.config.portfolio_name)
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
        status = self.capital.status(use_cache=False)  # the ledger's, not a cache's
        equity = Decimal(status.get("equity", "0")) if status.get("ok") else Decimal(0)
        vix = status.get("vix")
        portfolio_id, assets = self.ensure_portfolio()
        tradable = (self.max_active_ratio * equity).quantize(CENT)
        closes = self._closes([s for _, s in assets])
        held = self._held(portfolio_id, {aid: closes.get(sym, []) for aid, sym in assets})
        caps, error = self._caps(cycle, portfolio_id, tradable, assets, closes, held)
        jobs = []
        for aid, sym in assets:
            cap_ = caps.get(str(aid), Decimal(0))
            jobs.append({"portfolio_id": portfolio_id, "asset_id": aid, "symbol": sym,
                         "cycle": cycle, "prediction": predictions.get(sym),
                         "equity": str(equity), "vix": vix, "cap": str(cap_),
                         "rebalance": error is None and aid in held and held[aid] > cap_ + CENT})
        return Prepared(cycle, jobs, allocation, len(predictions), str(equity), error)

    def _held(self, portfolio_id: int, closes: dict[int, list[float]]) -> dict[int, Decimal]:
        """Each held asset's position value at its latest price."""
        with self.sessions() as db:
            rows = db.execute(select(Position.asset_id, Position.quantity).where(
                Position.portfolio_id == portfolio_id, Position.closed_at.is_(None)))  # fmt: skip
            held: dict[int, Decimal] = {}
            for asset_id, quantity in rows:
                last = closes.get(asset_id)
                if last:
                    price = Decimal(repr(last[-1]))
                    held[asset_id] = held.get(asset_id, Decimal(0)) + quantity * price
        return held

    def _caps(
        self,
        cycle: str,
        portfolio_id: int,
        tradable: Decimal,
        assets: list[tuple[int, str]],
        closes: dict[str, list[float]],
        held: dict[int, Decimal],
    ) -> tuple[dict[str, Decimal], str | None]:
        """The portfolio plugin's capital per asset id; on its error, none (audited)."""
        plugin = safe_call(self.portfolios, "get", portfolio_id, None, cycle, audit=self.audit)
        if is_error(plugin):
            return {}, str(plugin["error"])
        rows = [{"id": aid, "returns": _returns(closes.get(sym, [])),
                 "weight": float(held[aid] / tradable) if aid in held and tradable > 0 else None}
                for aid, sym in assets]  # fmt: skip
        caps = safe_call(plugin, "allocate_capital", {"capital": tradable}, rows,
                         audit=self.audit)  # fmt: skip
        if is_error(caps):
            return {}, str(caps["error"])
        try:
            return {str(k): Decimal(str(v)) for k, v in dict(caps).items()}, None
        except (TypeError, ValueError, ArithmeticError) as exc:
            bad = {"ok": False, "plugin": plugin_label(plugin), "method": "allocate_capital",
                   "error": f"not capital per asset id: {exc}", "error_type": type(exc).__name__}
            self._report(bad)
            return {}, str(bad["error"])

    def _report(self, error: dict[str, Any]) -> None:
        """Audit a plugin's bad answer (``safe_call`` audits its exceptions)."""
        safe_call(self.aaa, "audit", None, "plugin.error", error, audit=log_audit)

    def _warm_up(self, cycle: str) -> None:
        """Before the first predictions, tick the market until the predictor has history."""
        need = self.feeds.config.predictor.lags + 3
        first = self.feeds.config.market.symbols[0]
        have = len(self.history.read([first], need)[first])
        for i in range(max(0, need - have)):
            self.feeds.market.tick(f"warm-up-{cycle}-{i}")

    def _closes(self, symbols: list[str]) -> dict[str, list[float]]:
        return {s: floats(c) for s, c in self.history.read(symbols, 256).items()}

    def predictions(self, cycle: str) -> dict[str, float]:
        """The cycle's predicted returns per symbol, from the ``predictions`` stream's
        entries signed with the stream key (others are skipped, and alerted once)."""
        n = 4 * len(self.feeds.config.market.symbols) + 16
        out: dict[str, float] = {}
        rows: Any = self.r.xrevrange(self.bus.key(PREDICTIONS), count=n)
        bad: list[tuple[Entry, str, int]] = []
        for eid, fields in rows:
            why = check(self.bus.stream_key, PREDICTIONS, fields)
            if why is not None:
                bad.append((Entry(PREDICTIONS, eid.decode(), fields.get(b"d", b""), fields),
                            why, 1))  # fmt: skip
                continue
            try:
                p = json.loads(fields[b"d"])
                if str(p.get("tick")) == cycle and p.get("symbol") not in out:
                    out[str(p["symbol"])] = float(p["predicted_return"])
            except (ValueError, TypeError, KeyError, AttributeError):
                continue  # signed but malformed: the persister dead-letters it
        if bad:
            self.bus.alert_unsigned(PREDICTIONS, GROUP, bad)
        return out

    # -- the allocation book -------------------------------------------------------------

    def sync_allocations(self) -> int:
        """Move new allocations from ``capital_data`` into the book, once each."""
        loop = ConsumerLoop(self.bus, AllocationBook(self), batch=1000)
        return loop.run(CAPITAL_DATA).counts["added"]

    def claim(self) -> dict[str, Any] | None:
        """The oldest unexpired allocation of the book, taken off it (an element CoreC
        did not seal is dropped and reported)."""
        book = self.key("allocations", "book")
        while True:
            raw: Any = self.r.lpop(book)
            if raw is None:
                return None
            msg = self.seals.open_json(F_BOOK, book, raw)
            if not isinstance(msg, dict):
                continue
            if time.time() - float(msg.get("created_at", 0)) < self.allocation_ttl_s:
                return msg

    def book(self) -> list[dict[str, Any]]:
        """The allocations in the book, oldest first (only those CoreC sealed)."""
        key = self.key("allocations", "book")
        got = (self.seals.open_json(F_BOOK, key, raw) for raw in self.r.lrange(key, 0, -1))
        return [a for a in got if isinstance(a, dict)]

    def unclaim(self, allocation: dict[str, Any]) -> None:
        book = self.key("allocations", "book")
        self.r.lpush(book, self.seals.seal_json(book, allocation))

    def _held_allocation(self, p: int, a: int) -> dict[str, Any] | None:
        """The allocation the open position of (p, a) holds (sealed), or None."""
        book, field = self.key("positions", "allocation"), f"{p}:{a}"
        got = self.seals.open_json(F_POSITION, f"{book}\n{field}", self.r.hget(book, field))
        return got if isinstance(got, dict) else None

    def _expiring(self, allocation: dict[str, Any] | None) -> bool:
        """Whether ``allocation`` expires within two cycles: close its position now."""
        if allocation is None:
            return False
        margin = 2 * 60 * self.config.global_latency
        return time.time() - float(allocation.get("created_at", 0)) > \
            self.allocation_ttl_s - margin  # fmt: skip

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
        out.setdefault("symbol", job["symbol"])
        out.update(asset_id=a, cycle=cycle)
        self.r.set(done, json.dumps(out, default=str), ex=DONE_TTL_S)
        return out

    def _process(self, job: dict[str, Any]) -> dict[str, Any]:
        p, a, cycle = job["portfolio_id"], job["asset_id"], job["cycle"]
        symbol = self._symbol(p, a)
        if symbol is None:
            return {"ok": False, "action": "none", "error": f"no asset {a} in portfolio {p}"}
        job = {**job, "symbol": symbol}
        latest = self.history.latest(symbol)
        if latest is None or time.time() - latest.at > self.config.max_price_age_s:
            return {"ok": False, "action": "none",
                    "error": f"no authenticated market price for {symbol} younger than "
                             f"{self.config.max_price_age_s:g} s"}  # fmt: skip
        price = latest.price.quantize(Decimal("0.00000001"))
        pending_key = self.key("intent", p, a, cycle)
        pending = self._pending(pending_key)
        position = self._position(p, a)
        alloc: dict[str, Any] | None = None
        cap = Decimal(job["cap"])
        if pending is not None:  # a retry after the broker call: finish what was started
            action, alloc, before = pending["action"], pending["alloc"], pending["position"]
        else:
            action, alloc, ended = self._decide(job, position, price, cap)
            if ended is not None:
                return ended
            before = position
            record = {"action": action, "alloc": alloc, "position": position}
            self.r.set(pending_key, self.seals.seal_json(pending_key, record), ex=DONE_TTL_S)
        res = self.broker.execute(action, p, a, price, cycle=cycle)
        filled = Decimal(res.get("filled_quantity") or 0)
        out = {"ok": bool(res.get("success")), "action": action["action"],
               "side": action["parameters"]["side"], "status": res.get("status"),
               "filled": str(filled), "price": res.get("average_price"),
               "error": res.get("error_message"), "reason": action.get("reason"),
               "symbol": symbol}  # fmt: skip
        book = self.key("positions", "allocation")
        if action["action"] == "open":
            if filled > 0 and alloc:
                held = {"allocation_id": alloc["allocation_id"],
                        "created_at": alloc.get("created_at", 0)}  # fmt: skip
                self.r.hset(book, f"{p}:{a}", self.seals.seal_json(f"{book}\n{p}:{a}", held))
            elif alloc:
                self.unclaim(alloc)
        elif action["action"] == "close" and filled > 0 and before:
            sign = 1 if before["side"] == "long" else -1
            avg = Decimal(res["average_price"])
            fee = Decimal(res.get("fee") or 0)
            profit = ((avg - Decimal(before["entry_price"])) * filled * sign - fee).quantize(CENT)
            held_alloc = self._held_allocation(p, a)
            self.bus.publish(TRADING_RESULTS, {
                "trade_id": res["client_order_id"], "profit": str(profit),
                "quantity": str(filled), "price": str(avg), "symbol": symbol,
                "allocation_id": held_alloc["allocation_id"] if held_alloc else None,
            })  # fmt: skip
            self.r.hdel(book, f"{p}:{a}")
            out["profit"] = str(profit)
        self.r.delete(pending_key)
        return out

    def _decide(
        self, job: dict[str, Any], position: dict[str, str] | None, price: Decimal, cap: Decimal
    ) -> tuple[dict[str, Any], dict[str, Any] | None, dict[str, Any] | None]:
        """The action for one asset and the allocation it claimed, or the result that ends
        the job (nothing to do, or its strategy failed: audited, this asset skipped)."""
        expiring = position is not None and self._expiring(
            self._held_allocation(job["portfolio_id"], job["asset_id"]))  # fmt: skip
        if position is not None and (job.get("rebalance") or expiring):
            side = "sell" if position["side"] == "long" else "buy"
            why = "its allocation expires" if expiring else f"rebalance: above its cap {job['cap']}"
            return {"action": "close", "reason": why,
                    "parameters": {"order_type": "market", "side": side, "price": price,
                                   "quantity": Decimal(position["quantity"]),
                                   "stop_loss": None, "take_profit": None}}, None, None  # fmt: skip
        if job.get("prediction") is None:
            return {}, None, {"ok": True, "action": "none", "reason": "no prediction this cycle"}
        strategy = self.strategy_override or safe_call(
            self.strategies, "get", job["portfolio_id"], job["asset_id"], job["cycle"],
            audit=self.audit)  # fmt: skip
        if is_error(strategy):
            return {}, None, _failed(strategy)
        if position is None:
            alloc = self.claim()
            budget = min(Decimal(alloc["amount"]), cap) if alloc else Decimal(0)
        else:
            alloc, budget = None, cap
        held = None
        if position is not None:
            held = {"side": position["side"], "quantity": Decimal(position["quantity"])}
        asset: dict[str, Any] = {"equity": Decimal(job["equity"]), "allocation": budget,
                                 "position": held}  # fmt: skip
        market = {"price": price, "vix": job.get("vix"), "symbol": job["symbol"]}
        action = safe_call(strategy, "process", asset, market,
                           {"expected_return": job["prediction"]}, audit=self.audit)  # fmt: skip
        if not is_error(action) and not _is_action(action):
            action = {"ok": False, "plugin": plugin_label(strategy), "method": "process",
                      "error": f"not an action: {str(action)[:200]}", "error_type": "TypeError"}
            self._report(action)
        if is_error(action):
            if alloc:
                self.unclaim(alloc)
            return {}, None, _failed(action)
        if action["action"] == "none" or (action["action"] == "open" and alloc is None):
            if alloc:
                self.unclaim(alloc)
            reason = action.get("reason") or "no allocation free"
            if action["action"] == "open":  # a held position is never added to
                reason = "already holding" if position is not None else "no allocation free"
            return {}, None, {"ok": True, "action": "none", "reason": reason}
        return action, alloc, None

    def _pending(self, key: str) -> dict[str, Any] | None:
        """The sealed intent of an interrupted job, or None (one that fails its seal is
        reported, deleted and not used: the job decides afresh)."""
        raw: Any = self.r.get(key)
        got = self.seals.open_json(F_PENDING, key, raw)
        if raw is not None and not isinstance(got, dict):
            self.r.delete(key)
            return None
        return got if isinstance(got, dict) else None

    def _symbol(self, portfolio_id: int, asset_id: int) -> str | None:
        """The symbol of the asset row (p, a), never a job's word for it."""
        with self.sessions() as db:
            symbol: str | None = db.scalar(select(Asset.symbol).where(
                Asset.id == asset_id, Asset.portfolio_id == portfolio_id))  # fmt: skip
            return symbol

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
    them, and dead-letters what does not parse). Allocations send the broker orders:
    only signed entries get here (the consumer loop dead-letters the others)."""

    group = GROUP
    signed = True

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
        book = t.key("allocations", "book")
        added = t.r.eval(_BOOK_ADD, 2, t.key("allocations", "seen"), book, allocation_id,
                         t.seals.seal_json(book, msg))  # fmt: skip
        return Done("added" if added else "duplicates")


def _is_action(action: Any) -> bool:
    return (
        isinstance(action, dict)
        and action.get("action") in ("open", "close", "none")
        and (action["action"] == "none" or isinstance(action.get("parameters"), dict))
    )


def _failed(error: dict[str, Any]) -> dict[str, Any]:
    """The result of an asset whose plugin failed (already audited)."""
    return {"ok": False, "action": "none",
            "error": f"{error['plugin']}.{error['method']}: {error['error']}"}  # fmt: skip


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
