"""The capital pool as its callers see it: the ledger plus cache, macro data, breakers.

Celery tasks, the CLI and the benchmarks all go through ``CapitalPool``; every public
method returns a JSON-able dict, ``{"ok": true, ...}`` or ``{"ok": false, "error": ...}``.

- **Cache**: ``status()`` is cached in Redis for ``cache_ttl_s`` (1800 s); every change
  bumps a generation counter and deletes the cache after its commit, and a reader only
  stores what it computed if the generation did not move meanwhile (one Lua call), so
  a status computed before a change can never be cached after it. The cached value is
  sealed with the stream key (``corec_tasks/streams/signing.py``): one that is not (written
  by someone holding only the Redis password), or was sealed longer than ``cache_ttl_s``
  ago (an old one copied back), is ignored with an ``error`` alert (source
  ``cache.signature``) and the status is computed from PostgreSQL, so a forged NAV or
  head hash is never shown nor used.
- **Macro**: the last VIX (written by the ``macro_data`` consumer, from signed entries
  only) is kept sealed (``plugins.trading.sealed``) in ``capital_pool:macro:sealed`` and
  used while it is younger than ``max_age_s``; otherwise, when Redis cannot be read, or
  when the value fails its seal (reported), the pool assumes a high VIX (the
  conservative side: risk per trade is cut).
- **Circuit breakers** (pybreaker) around the database and the macro source: after
  ``breaker_fail_max`` consecutive connection failures calls fail fast for
  ``breaker_reset_s`` with a clear error instead of piling up on a dead server.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from decimal import Decimal, InvalidOperation
from functools import partial
from typing import Any

import psycopg
import pybreaker
import redis

from corec_tasks.alerts import alert
from corec_tasks.redis_conn import redis_client
from corec_tasks.runtime import runtime
from corec_tasks.settings import Settings
from corec_tasks.streams.bus import StreamBus
from corec_tasks.streams.signing import seal, stream_key, unseal
from plugins.capital_pool import accounting as acc
from plugins.capital_pool.config import CapitalConfig
from plugins.capital_pool.ledger import InputError, Ledger
from plugins.capital_pool.metrics import watch_breakers
from plugins.capital_pool.money import NAV_SHOWN, RATIO_SHOWN, money_str, units_str
from plugins.trading.channels import CAPITAL_DATA
from plugins.trading.sealed import Seals

log = logging.getLogger(__name__)

#: The status cache's Redis key (unprefixed): its value is sealed under this name.
STATUS_KEY = "capital_pool:status"

_CACHE_SET = """
local gen = redis.call('GET', KEYS[2])
if gen == ARGV[1] or (ARGV[1] == '' and not gen) then
    redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
    return 1
end
return 0
"""

def breaker(name: str, config: CapitalConfig) -> pybreaker.CircuitBreaker:
    """This process's breaker ``name``; only connection failures count against it."""
    res = config.resilience
    return runtime().service(("capital_pool.breaker", name), lambda _: pybreaker.CircuitBreaker(
        fail_max=res.breaker_fail_max,
        reset_timeout=res.breaker_reset_s,
        exclude=[lambda e: not isinstance(e, psycopg.OperationalError | redis.ConnectionError
                                          | redis.TimeoutError)],
        name=name,
    ))  # fmt: skip


class CapitalPool:
    """Ledger, cache, macro and publishing for one process."""

    def __init__(self, settings: Settings, config: CapitalConfig,
                 database_url: str | None = None) -> None:  # fmt: skip
        """``database_url``: another database to read (a replica, for history that may
        lag); default ``settings.database_url``. Nothing that moves money is sent to it."""
        self.settings = settings
        self.config = config
        self.ledger = Ledger(database_url or settings.database_url, config, settings=settings)
        self.redis = redis_client(settings, decode=True)
        self._cache_set = self.redis.register_script(_CACHE_SET)
        self.k_status = settings.key(STATUS_KEY)
        self.k_gen = settings.key("capital_pool:gen")
        self.k_macro = settings.key("capital_pool:macro:sealed")
        self.seals = Seals(settings, self.redis)
        self.db = breaker("capital_pool.db", config)
        self.macro = breaker("capital_pool.macro", config)
        watch_breakers(settings, self.db, self.macro)

    def close(self) -> None:
        self.ledger.close()
        self.redis.close()

    # -- actions ---------------------------------------------------------------------

    def contribute(
        self, user_id: object, amount: object, key: object, *, principal: str
    ) -> dict[str, Any]:
        """``Ledger.contribute``: ``principal`` (``audit.py``) authorised it and is audited."""
        return self._mutate(partial(self.ledger.contribute, principal=principal), user_id,
                            amount, key)  # fmt: skip

    def withdraw(
        self, user_id: object, amount: object, key: object, *, principal: str
    ) -> dict[str, Any]:
        """``Ledger.withdraw``: ``principal`` authorised it and is audited."""
        return self._mutate(partial(self.ledger.withdraw, principal=principal), user_id,
                            amount, key)  # fmt: skip

    def apply_batch(
        self, actions: list[tuple[str, object, object, object]], *, principal: str
    ) -> list[dict[str, Any]]:
        """``Ledger.apply_batch``: ``(kind, user_id, amount, key)`` actions in one
        transaction, in order, each as its own call would be. If the database cannot be
        reached, every result is that call's error (``retry: true``)."""
        result = self._db(partial(self.ledger.apply_batch, principal=principal), actions)
        if isinstance(result, dict):  # the breaker's or the connection's one error
            return [result for _ in actions]
        if any(r.get("ok") for r in result):
            self.invalidate()
        return list(result)

    def refuse(
        self, kind: str, user_id: object, amount: object, key: object, *, principal: str,
        reason: str, **extra: Any,
    ) -> dict[str, Any]:
        """``{"ok": false, "error": reason}`` for an action refused before the ledger (no
        valid grant): audited all the same; a database that cannot take the audit row
        does not turn the refusal into anything else (it is logged)."""
        result = {"ok": False, "error": reason}
        try:
            self.db.call(self.ledger.refusal, kind, user_id, amount, key, principal, reason,
                         **extra)  # fmt: skip
        except (pybreaker.CircuitBreakerError, psycopg.Error) as exc:
            log.error("capital_pool: could not audit a refused %s (%s): %s", kind, reason, exc)
        return result

    def apply_trade(self, trade_id: str, profit: Decimal, quantity: Decimal, price: Decimal,
                    allocation_id: str | None = None,
                    stream_entry: str | None = None) -> dict[str, Any]:  # fmt: skip
        return self._mutate(self.ledger.apply_trade, trade_id, profit, quantity, price,
                            allocation_id, stream_entry)  # fmt: skip

    def allocate(self, key: str | None = None) -> dict[str, Any]:
        """Allocate free slots now and publish every unpublished allocation."""
        vix, _ = self.vix()
        result = self._mutate(self.ledger.allocate, key or f"manual-{uuid.uuid4().hex}", vix)
        if result.get("ok"):
            result["published"] = self.publish_pending()
        return result

    def publish_pending(self) -> int:
        """Publish outbox allocations on ``capital_data``, then mark them published.

        A crash between the two republishes them: consumers dedupe by allocation_id.
        """
        pending = self._db(self.ledger.unpublished)
        if not pending:
            return 0
        with StreamBus(self.settings) as bus:
            bus.publish_many(CAPITAL_DATA, pending)
        self._db(self.ledger.mark_published, [m["allocation_id"] for m in pending])
        return len(pending)

    def _mutate(self, fn: Any, *args: Any) -> dict[str, Any]:
        result = self._db(fn, *args)
        if isinstance(result, dict) and "error" not in result:
            self.invalidate()
        return result if isinstance(result, dict) else {"ok": False, "error": str(result)}

    def _db(self, fn: Any, *args: Any) -> Any:
        try:
            return self.db.call(fn, *args)
        except pybreaker.CircuitBreakerError:
            return {
                "ok": False,
                "retry": True,
                "error": (
                    "the capital database is unavailable (circuit open after "
                    f"{self.config.resilience.breaker_fail_max} failures); retry in "
                    f"{self.config.resilience.breaker_reset_s} s with the same idempotency_key"
                ),
            }
        except psycopg.OperationalError as exc:
            return {"ok": False, "retry": True,
                    "error": f"the capital database is unreachable ({exc}); retry with the "
                             "same idempotency_key"}  # fmt: skip

    # -- cache -----------------------------------------------------------------------

    def invalidate(self) -> None:
        """After a committed change: bump the generation, drop the cached status.

        One round trip, no MULTI: a status computed before the bump can no longer be
        cached (``_CACHE_SET`` compares generations), so the order alone is enough."""
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.incr(self.k_gen)
            pipe.delete(self.k_status)
            pipe.execute()
        except redis.RedisError as exc:  # the TTL bounds staleness; say so loudly
            log.error("capital_pool: could not invalidate the status cache: %s", exc)

    # -- macro -----------------------------------------------------------------------

    def record_macro(self, vix: Decimal, sp500: Decimal | None, at: float) -> None:
        """Remember the newest VIX (called by the macro_data consumer)."""
        current = self._macro()
        if current is not None and float(current.get("at", 0)) > at:
            return
        value = {"vix": f"{vix:f}", "at": repr(at), "sp500": "" if sp500 is None else f"{sp500:f}"}
        self.redis.set(self.k_macro, self.seals.seal_json(self.k_macro, value))

    def _macro(self) -> dict[str, str] | None:
        """The sealed last macro levels, or None (absent, or failing its seal: reported)."""
        got = self.seals.open_json("capital_pool:macro", self.k_macro, self.redis.get(self.k_macro))
        return got if isinstance(got, dict) else None

    def vix(self) -> tuple[Decimal | None, str]:
        """The VIX to use and where it came from; None means "assume high"."""
        try:
            got: Any = self.macro.call(self._macro)
            raw: dict[str, str] = got or {}
        except (pybreaker.CircuitBreakerError, redis.RedisError):
            return None, "unavailable: assuming a high VIX"
        if not raw or "vix" not in raw:
            return None, "no macro_data yet: assuming a high VIX"
        age = time.time() - float(raw.get("at", 0))
        if age > self.config.macro_config.max_age_s:
            return None, f"last VIX {raw['vix']} is {age:.0f} s old: assuming a high VIX"
        try:
            return Decimal(raw["vix"]), f"macro_data, {age:.0f} s old"
        except InvalidOperation:
            return None, "unreadable VIX: assuming a high VIX"

    # -- reads -----------------------------------------------------------------------

    def status(self, use_cache: bool = True) -> dict[str, Any]:
        """The pool's status (``corec capital status --json``), cached in Redis."""
        gen = ""
        if use_cache:
            try:
                pipe = self.redis.pipeline(transaction=False)
                pipe.get(self.k_status)
                pipe.get(self.k_gen)
                cached, gen_now = pipe.execute()
                gen = gen_now or ""
            except redis.RedisError:
                use_cache, cached = False, None
            if cached:
                got = self._cached(cached)
                if got is not None:
                    return got
        snap = self._db(self.ledger.snapshot)
        if isinstance(snap, dict):
            return snap
        pool, holdings, head = snap
        vix, vix_source = self.vix()
        phase, risk = acc.risk_per_trade(pool.equity, vix, self.config.capital_config,
                                         self.config.macro_config)  # fmt: skip
        members = {}
        for user, h in holdings.items():
            value = pool.value_of(h.units)
            r = acc.roi(value, h.contributed, h.withdrawn)
            members[user] = {
                "units": units_str(h.units),
                "value": money_str(value),
                "contributed": money_str(h.contributed),
                "withdrawn": money_str(h.withdrawn),
                "roi": None if r is None else f"{r.quantize(RATIO_SHOWN):f}",
            }
        out = {
            "ok": True,
            "equity": money_str(pool.equity),
            "cash": money_str(pool.cash),
            "active": money_str(pool.active),
            "free_cash": money_str(acc.free_cash(pool, self.config.capital_config)),
            "units": units_str(pool.units),
            "nav": f"{pool.nav.quantize(NAV_SHOWN):f}",
            "phase": phase.name if phase else None,
            "risk_per_trade": f"{risk.quantize(RATIO_SHOWN):f}",
            "vix": None if vix is None else f"{vix:f}",
            "vix_source": vix_source,
            "members": members,
            "ledger": head,
        }
        if use_cache:
            sealed = seal(stream_key(self.settings), STATUS_KEY, json.dumps(out).encode(),
                          time.time())  # fmt: skip
            try:
                self._cache_set(keys=[self.k_status, self.k_gen],
                                args=[gen, sealed, self.config.resilience.cache_ttl_s])  # fmt: skip
            except redis.RedisError as exc:
                log.warning("capital_pool: could not cache the status: %s", exc)
        out["cached"] = False
        return out

    def _cached(self, raw: str) -> dict[str, Any] | None:
        """The cached status if this deployment sealed it within ``cache_ttl_s``; else
        None, after one ``error`` alert an hour (the caller reads PostgreSQL)."""
        data, why = unseal(stream_key(self.settings), STATUS_KEY, raw, time.time(),
                           self.config.resilience.cache_ttl_s)  # fmt: skip
        if data is not None:
            out: dict[str, Any] = json.loads(data)
            out["cached"] = True
            return out
        message = (f"the cached pool status ({STATUS_KEY}) is not one CoreC wrote ({why}): "
                   "ignored, the status is read from PostgreSQL; someone who is not CoreC "
                   "writes to Redis")  # fmt: skip
        log.error("capital_pool: %s", message)
        try:
            alert(self.settings, self.redis, "error", "cache.signature", STATUS_KEY, message)
        except redis.RedisError as exc:  # the status is still read from PostgreSQL
            log.warning("capital_pool: could not alert on the status cache: %s", exc)
        return None

    def member(self, user_id: str) -> dict[str, Any]:
        status = self.status()
        if not status.get("ok"):
            return status
        if user_id not in status["members"]:
            return {"ok": False, "error": f"no member {user_id!r} in the pool"}
        return {"ok": True, "user_id": user_id, **status["members"][user_id],
                "nav": status["nav"]}  # fmt: skip

    def history(self, limit: int = 50, user_id: str | None = None) -> dict[str, Any]:
        entries = self._db(self.ledger.history, limit, user_id)
        if isinstance(entries, dict):
            return entries
        return {"ok": True, "entries": entries}

    def verify(self, head: str | None = None, show_chain: bool = False) -> dict[str, Any]:
        """The hash chain, pool state and invariants checked (``Ledger.audit``).

        ``head``: a head hash kept earlier, which must still be in the intact chain.
        ``show_chain`` adds ``"chain": {"entries", "seq", "hash"}``, the head verified.
        """
        try:
            found = self._db(self.ledger.audit, head)
        except InputError as exc:
            return {"ok": False, "error": str(exc)}
        if isinstance(found, dict):
            return found
        out: dict[str, Any] = {"ok": not found.problems, "problems": found.problems}
        report = found.chain
        if report.first_seq is not None:  # the first entry that fails: seq, kind and why
            out["first_failure"] = {"seq": report.first_seq, "kind": report.first_kind,
                                    "why": report.first_reason}  # fmt: skip
        if show_chain:
            out["chain"] = {"entries": report.entries, "seq": report.head_seq,
                            "hash": report.head_hash}  # fmt: skip
        return out
