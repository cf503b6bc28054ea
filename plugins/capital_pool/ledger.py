"""The capital ledger in PostgreSQL: every money action as one serialised transaction.

Each mutation runs in one transaction that first locks the single ``pool_state`` row
(``SELECT ... FOR UPDATE``), so actions from any number of workers on any number of
nodes apply one at a time, in lock order. Under the lock it reads the member and the
idempotency key (a separate statement, so READ COMMITTED gives it a snapshot taken
after the lock: a joined read in the locking statement could see a member row older
than the lock), computes the change with ``accounting`` and writes the ledger entry,
the derived rows and the new balances. Both round trips are pipelined (psycopg 3), so
an action costs two round trips and one commit.

Idempotency: a client action's key is recorded in ``capital_actions`` with its first
result, accepted or rejected, in the same transaction as its effect; a repeat returns
that result and changes nothing. A key belongs to its member (``owner``): another
member's use of the same text is a different key, so it neither blocks nor reveals
anything. Trading results are keyed by ``trade_id``, allocations by the allocating
run's key under its operator (``operator/<principal>``).

Audit: every contribution and withdrawal names its *principal* (``audit.py``) and writes
exactly one ``audit_log`` row (applied, refused with its reason, or replayed) in the same
transaction as its effect: for an applied action inside the same statement as its
ledger write, so auditing adds no round trip. Bad input (nothing read) is audited in a
transaction of its own.

Hash chain: each entry gets ``seq`` = the previous entry's + 1 and its ``prev_hash``
and ``hash`` (``chain.py``), computed here from the ``pool_state`` row the lock just
read (its ``seq`` and ``head_hash``) and written with the entry, so the chain is as
linear as the lock: no round trip is added.

MAC: each entry also gets ``mac`` (``chain.link``), keyed with the ledger key
(``ledger_key.py``), which the database never holds, so the application database role
cannot write an entry ``verify`` accepts. It is computed with the hash, from the same
bytes, in the same statement: no round trip is added. Before its first action on a
connection the ledger checks its key against the newest MACed entry and refuses to
write under another key (``LedgerKeyError``).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus
from psycopg.rows import tuple_row

from corec_tasks.db import libpq_url
from corec_tasks.errors import CorecError
from corec_tasks.settings import Settings
from corec_tasks.strict import shown
from plugins.capital_pool import accounting as acc
from plugins.capital_pool import audit, chain, ledger_key, reads, seal
from plugins.capital_pool.accounting import Holding, Pool, Rejected
from plugins.capital_pool.config import CapitalConfig
from plugins.capital_pool.money import (
    NAV_SHOWN,
    RATIO_SHOWN,
    ZERO,
    AmountError,
    money_str,
    parse_amount,
    round_cents,
    units_str,
)

log = logging.getLogger(__name__)

USER_ID = re.compile(r"[A-Za-z0-9_.@:-]{1,128}")
MAX_KEY = 200
HASH = re.compile(r"[0-9a-f]{64}")
#: The operator recorded as the owner of allocation runs (``operator/<principal>``).
SYSTEM = "system"

# Multiple statements, no parameters: sent as one simple query, so BEGIN costs no round trip.
_LOCK = ("SELECT equity, cash, active, units, seq, head_hash FROM pool_state "
         "WHERE id = 1 FOR UPDATE")  # fmt: skip
# Read after the lock, in a statement of its own: its snapshot is newer than the lock.
_CLIENT_READ = (
    "SELECT m.units, m.contributed, m.withdrawn, a.kind, a.user_id, a.amount, a.result "
    "FROM (SELECT 1) one "
    "LEFT JOIN capital_members m ON m.user_id = %(user)s "
    "LEFT JOIN capital_actions a ON a.owner = %(user)s AND a.idempotency_key = %(key)s"
)
_ACTION = ("SELECT kind, user_id, amount, result FROM capital_actions "
           "WHERE owner = %s AND idempotency_key = %s")  # fmt: skip
_LEDGER = (
    "INSERT INTO capital_ledger (idempotency_key, kind, user_id, ref, cash_delta, "
    "active_delta, units_delta, equity_after, cash_after, active_after, units_after, "
    "seq, created_at, prev_hash, hash, mac) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
_POOL = (
    "UPDATE pool_state SET equity = %s, cash = %s, active = %s, units = %s, "
    "seq = %s, head_hash = %s, updated_at = now() WHERE id = 1"
)
_SAVE_ACTION = (
    "INSERT INTO capital_actions (owner, idempotency_key, kind, user_id, amount, ok, result) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s)"
)
# A contribution or withdrawal's every write, in one statement (one round trip).
_CLIENT_WRITE = """
WITH l AS (
    INSERT INTO capital_ledger (idempotency_key, kind, user_id, cash_delta, active_delta,
        units_delta, equity_after, cash_after, active_after, units_after, seq, created_at,
        prev_hash, hash, mac)
    VALUES (%(key)s, %(kind)s, %(user)s, %(cash_delta)s, 0, %(units_delta)s, %(equity)s,
        %(cash)s, %(active)s, %(units)s, %(seq)s, %(at)s, %(prev)s, %(hash)s, %(mac)s)
), m AS (
    INSERT INTO capital_members (user_id, units, contributed, withdrawn)
    VALUES (%(user)s, %(m_units)s, %(m_contributed)s, %(m_withdrawn)s)
    ON CONFLICT (user_id) DO UPDATE SET units = EXCLUDED.units,
        contributed = EXCLUDED.contributed, withdrawn = EXCLUDED.withdrawn, updated_at = now()
), c AS (
    INSERT INTO contributions (user_id, amount, units, nav, idempotency_key)
    SELECT %(user)s, %(amount)s, %(moved)s, %(nav)s, %(key)s WHERE %(kind)s = 'contribute'
), w AS (
    INSERT INTO withdrawals (user_id, amount, units, nav, idempotency_key)
    SELECT %(user)s, %(amount)s, %(moved)s, %(nav)s, %(key)s WHERE %(kind)s = 'withdraw'
), a AS (
    INSERT INTO capital_actions (owner, idempotency_key, kind, user_id, amount, ok, result)
    VALUES (%(user)s, %(key)s, %(kind)s, %(user)s, %(amount)s, true, %(result)s)
), au AS (
    INSERT INTO audit_log (user_id, action, timestamp, details) VALUES """ + audit.VALUES + """
)
UPDATE pool_state SET equity = %(equity)s, cash = %(cash)s, active = %(active)s,
    units = %(units)s, seq = %(seq)s, head_hash = %(hash)s, updated_at = now()
WHERE id = 1
"""
# A refused action: its first result kept for its key, and its audit row (one round trip).
_REFUSE = (
    "WITH a AS (INSERT INTO capital_actions (owner, idempotency_key, kind, user_id, amount, "
    "ok, result) VALUES (%(user)s, %(key)s, %(kind)s, %(user)s, %(amount)s, false, "
    "%(result)s)) " + audit.INSERT
)
_KINDS = ("contribute", "withdraw")


class InputError(CorecError, ValueError):
    """Bad input: nothing was read or written; the message says what to fix."""


@dataclass(slots=True)
class _Tip:
    """The chain's head under the pool lock; ``link`` appends one entry to it, MACed
    with ``mac_key`` (the ledger key)."""

    seq: int
    hash: str
    mac_key: bytes
    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    def link(self, key: str, kind: str, user: str | None, ref: str | None, cash_delta: Decimal,
             active_delta: Decimal, units_delta: Decimal,
             after: Pool) -> tuple[int, datetime, str, str, str]:  # fmt: skip
        """The next entry's ``seq, created_at, prev_hash, hash, mac``; advances the head."""
        entry = chain.Entry(self.seq + 1, self.now, key, kind, user, ref, cash_delta,
                            active_delta, units_delta, *_balances(after))  # fmt: skip
        prev = self.hash
        digest, mac = chain.link(self.mac_key, prev, entry)
        self.seq, self.hash = entry.seq, digest
        return entry.seq, self.now, prev, digest, mac

    def link_client(self, params: dict[str, Any]) -> None:
        """Add a contribution's or withdrawal's chain fields to its write ``params``."""
        after = Pool(params["equity"], params["cash"], params["active"], params["units"])
        seq, at, prev, digest, mac = self.link(params["key"], params["kind"], params["user"],
                                               None, params["cash_delta"], ZERO,
                                               params["units_delta"], after)  # fmt: skip
        params.update(seq=seq, at=at, prev=prev, hash=digest, mac=mac)


@dataclass(frozen=True, slots=True)
class Allocated:
    """An allocation as published on ``capital_data``."""

    allocation_id: str
    amount: Decimal
    risk_per_trade: Decimal
    phase: str
    vix: Decimal | None


def check_user(user_id: object) -> str:
    if not isinstance(user_id, str) or not USER_ID.fullmatch(user_id):
        raise InputError(
            f"user_id must be 1-128 characters of letters, digits and _.@:- "
            f"(got {shown(user_id)})"
        )
    return user_id


def check_head(head: object) -> str:
    if not isinstance(head, str) or not HASH.fullmatch(head):
        raise InputError("a head hash is 64 lowercase hex characters, as `corec capital "
                         "status` shows it")  # fmt: skip
    return head


def check_key(key: object) -> str:
    if key is None or key == "":
        raise InputError("idempotency_key is required: a unique string per action, reused "
                         "only to retry the same action")  # fmt: skip
    if not isinstance(key, str) or len(key) > MAX_KEY or not key.isprintable():
        raise InputError(f"idempotency_key must be printable text of at most {MAX_KEY} characters")
    return key


class Ledger:
    """The ledger on one PostgreSQL connection (one per process or thread)."""

    def __init__(self, database_url: str, config: CapitalConfig, *, key: bytes | None = None,
                 settings: Settings | None = None) -> None:  # fmt: skip
        """``key``: the ledger key; default ``ledger_key.load_key(settings)`` at first use."""
        self.url = libpq_url(database_url)
        self.config = config
        self.rules = config.capital_config
        self._key = key
        self._settings = settings
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None
        self._key_checked: object = None  # the connection the key was checked on

    @property
    def key(self) -> bytes:
        """The ledger key (``ledger_key.py``), loaded once."""
        if self._key is None:
            self._key = ledger_key.load_key(self._settings)
        return self._key

    # -- connection ------------------------------------------------------------------

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @property
    def conn(self) -> psycopg.Connection[tuple[Any, ...]]:
        if self._conn is None or self._conn.closed:
            # Autocommit: transactions are opened by _locked (BEGIN) or conn.transaction().
            self._conn = psycopg.connect(self.url, autocommit=True, row_factory=tuple_row)
        return self._conn

    @contextmanager
    def _locked(
        self, *reads: tuple[str, Any]
    ) -> Iterator[tuple[psycopg.Connection[tuple[Any, ...]], Pool, _Tip, list[list[Any]]]]:
        """A transaction holding the pool lock; commits on success, rolls back on error.

        Yields the connection, the pool and the chain's head as the lock read them, and
        the rows of each ``(sql, params)`` in ``reads``, run after the lock. The whole
        transaction is one psycopg pipeline: BEGIN, the lock and the reads go in one
        round trip, the writes and COMMIT in another, so the lock every action waits
        for is held for about one round trip instead of four. A failed statement raises
        at the pipeline's sync (the write's, or the COMMIT's), and the transaction
        rolls back.
        """
        conn = self.conn
        if self._key_checked is not conn:
            seal.check_key(conn, self.key)
            self._key_checked = conn
        try:
            with conn.pipeline():
                conn.execute("BEGIN")
                lock = conn.execute(_LOCK)
                cursors = [conn.execute(sql, params) for sql, params in reads]
                row = lock.fetchone()
                if row is None:
                    raise RuntimeError("pool_state has no row: run `corec db upgrade`")
                rows = [cur.fetchall() for cur in cursors]
                yield conn, Pool(*row[:4]), _Tip(row[4], row[5], self.key), rows
                conn.execute("COMMIT")
        except BaseException as exc:
            if isinstance(exc, psycopg.OperationalError) or conn.closed:
                self.close()  # a broken connection is replaced on next use
            elif conn.info.transaction_status != TransactionStatus.IDLE:
                conn.execute("ROLLBACK")
            raise

    def _retrying(self, fn: Any, *args: Any) -> Any:
        """Run ``fn`` once more on a fresh connection if the connection broke.

        Safe because every action is idempotent and a broken transaction rolled back.
        """
        try:
            return fn(*args)
        except psycopg.OperationalError as exc:
            log.warning("capital ledger: connection lost (%s); retrying once", exc)
            return fn(*args)

    # -- client actions ----------------------------------------------------------------

    def contribute(
        self, user_id: object, amount: object, key: object, *, principal: str
    ) -> dict[str, Any]:
        """Buy units for ``amount`` (``accounting.contribute``), authorised by
        ``principal`` (``audit.py``), who is named in the action's audit row."""
        return self._client_action("contribute", user_id, amount, key, principal)

    def withdraw(
        self, user_id: object, amount: object, key: object, *, principal: str
    ) -> dict[str, Any]:
        """Redeem units worth ``amount`` (``accounting.withdraw``), audited like ``contribute``."""
        return self._client_action("withdraw", user_id, amount, key, principal)

    def _client_action(
        self, kind: str, user_id: object, amount: object, key: object, principal: str
    ) -> dict[str, Any]:
        audit.check_principal(principal)
        try:
            user = check_user(user_id)
            value = parse_amount(amount, "amount", self.rules.max_amount)
            k = check_key(key)
        except (InputError, AmountError) as exc:
            return self.refusal(kind, user_id, amount, key, principal, str(exc))
        result: dict[str, Any] = self._retrying(self._apply_client, kind, user, value, k,
                                                principal)  # fmt: skip
        return result

    def refusal(
        self,
        kind: str,
        user_id: object,
        amount: object,
        key: object,
        principal: str,
        reason: str,
        **extra: Any,
    ) -> dict[str, Any]:
        """``{"ok": false, "error": reason}`` for an action refused before the ledger, its
        audit row written in a transaction of its own (``extra`` joins its details)."""
        result = {"ok": False, "error": reason}
        row = audit.params(principal, kind, user_id, amount, key, result, **extra)
        self._retrying(self._audit_alone, row)
        return result

    def _audit_alone(self, row: dict[str, Any]) -> None:
        conn = self.conn
        with conn.transaction():
            conn.execute(audit.INSERT, row)

    def _apply_client(
        self, kind: str, user: str, amount: Decimal, key: str, principal: str
    ) -> dict[str, Any]:
        with self._locked((_CLIENT_READ, {"user": user, "key": key})) as (conn, pool, tip, rs):
            read = rs[0][0]
            if read[3] is not None:
                replay = _replay(read[3:], kind, user, amount, key)
                conn.execute(audit.INSERT, audit.params(principal, kind, user, amount, key,
                                                        replay))  # fmt: skip
                return replay
            holding = Holding(*read[:3]) if read[0] is not None else None
            result, params, _, _ = self._decide(pool, holding, kind, user, amount, key)
            row = audit.params(principal, kind, user, amount, key, result)
            if params is None:
                conn.execute(_REFUSE, {"user": user, "key": key, "kind": kind, "amount": amount,
                                       "result": json.dumps(result), **row})  # fmt: skip
            else:
                tip.link_client(params)
                conn.execute(_CLIENT_WRITE, {**params, **row})
            return result

    def _decide(
        self, pool: Pool, holding: Holding | None, kind: str, user: str, amount: Decimal, key: str
    ) -> tuple[dict[str, Any], dict[str, Any] | None, Pool, Holding | None]:
        """Apply the rules: the result, the write's parameters (None if refused), the new
        pool and holding."""
        try:
            fn = acc.contribute if kind == "contribute" else acc.withdraw
            change = fn(pool, holding, amount, self.rules)
        except Rejected as exc:
            refused = {"ok": False, "action": kind, "user_id": user, "amount": money_str(amount),
                       "idempotency_key": key, "error": str(exc)}  # fmt: skip
            return refused, None, pool, holding
        new, h = change.pool, change.holding
        assert h is not None
        nav = pool.nav
        sign = 1 if kind == "contribute" else -1
        result = {
            "ok": True,
            "action": kind,
            "user_id": user,
            "amount": money_str(amount),
            "units": units_str(change.units),
            "nav": f"{nav.quantize(NAV_SHOWN):f}",
            "member_units": units_str(h.units),
            "member_value": money_str(new.value_of(h.units)),
            "idempotency_key": key,
        }
        params = {
            "key": key, "kind": kind, "user": user, "amount": amount,
            "cash_delta": sign * amount, "units_delta": sign * change.units,
            "moved": change.units, "nav": nav.quantize(NAV_SHOWN),
            "equity": new.equity, "cash": new.cash, "active": new.active,
            "units": new.units, "m_units": h.units, "m_contributed": h.contributed,
            "m_withdrawn": h.withdrawn, "result": json.dumps(result),
        }  # fmt: skip
        return result, params, new, h

    def apply_batch(
        self, actions: list[tuple[str, object, object, object]], *, principal: str
    ) -> list[dict[str, Any]]:
        """Apply many ``(kind, user_id, amount, key)`` actions in one transaction, in order,
        all authorised by ``principal``.

        Same rules, results, idempotency and audit rows (one per action) as one call per
        action, but one pool lock, one read and one commit for the lot: for bulk imports
        (a payroll file) and high-volume producers. Bad input fails only its own action.
        """
        audit.check_principal(principal)
        checked: list[tuple[int, str, str, Decimal, str]] = []
        results: list[dict[str, Any]] = [{} for _ in actions]
        rejected: list[dict[str, Any]] = []
        for i, (kind, user_id, amount, key) in enumerate(actions):
            try:
                if kind not in _KINDS:
                    raise InputError(f"unknown action {shown(kind)}: contribute or withdraw")
                value = parse_amount(amount, "amount", self.rules.max_amount)
                checked.append((i, kind, check_user(user_id), value, check_key(key)))
            except (InputError, AmountError) as exc:
                results[i] = {"ok": False, "error": str(exc)}
                rejected.append(audit.params(principal, str(kind), user_id, amount, key,
                                             results[i]))  # fmt: skip
        done: list[tuple[int, dict[str, Any]]] = self._retrying(
            self._apply_batch, checked, principal, rejected
        )
        for i, result in done:
            results[i] = result
        return results

    def _apply_batch(
        self,
        checked: list[tuple[int, str, str, Decimal, str]],
        principal: str,
        rejected: list[dict[str, Any]],
    ) -> list[tuple[int, dict[str, Any]]]:
        if not checked:
            if rejected:
                conn = self.conn
                with conn.transaction(), conn.cursor() as cur:
                    cur.executemany(audit.INSERT, rejected)
            return []
        users = sorted({c[2] for c in checked})
        keys = sorted({c[4] for c in checked})
        with self._locked() as (conn, pool, tip, _):
            holdings = {
                r[0]: Holding(*r[1:]) for r in conn.execute(
                    "SELECT user_id, units, contributed, withdrawn FROM capital_members "
                    "WHERE user_id = ANY(%s)", (users,)).fetchall()
            }  # fmt: skip
            # A superset of the (owner, key) pairs asked for; only exact pairs are looked up.
            firsts: dict[tuple[str, str], tuple[Any, ...]] = {
                (r[0], r[1]): r[2:] for r in conn.execute(
                    "SELECT owner, idempotency_key, kind, user_id, amount, result "
                    "FROM capital_actions WHERE owner = ANY(%s) AND idempotency_key = ANY(%s)",
                    (users, keys)).fetchall()
            }  # fmt: skip
            out: list[tuple[int, dict[str, Any]]] = []
            writes: list[dict[str, Any]] = []  # in decision order: balances chain
            refusals: list[dict[str, Any]] = []
            audits = list(rejected)  # replays' and bad input's rows
            for i, kind, user, amount, key in checked:
                if (user, key) in firsts:
                    replay = _replay(firsts[user, key], kind, user, amount, key)
                    audits.append(audit.params(principal, kind, user, amount, key, replay))
                    out.append((i, replay))
                    continue
                result, params, pool, h = self._decide(pool, holdings.get(user), kind, user,
                                                       amount, key)  # fmt: skip
                firsts[user, key] = (kind, user, amount, result)
                row = audit.params(principal, kind, user, amount, key, result)
                if params is None:
                    refusals.append({"user": user, "key": key, "kind": kind, "amount": amount,
                                     "result": json.dumps(result), **row})  # fmt: skip
                else:
                    assert h is not None
                    holdings[user] = h
                    tip.link_client(params)
                    writes.append({**params, **row})
                out.append((i, result))
            with conn.cursor() as cur:
                if writes:  # executemany runs in one pipeline: one round trip
                    cur.executemany(_CLIENT_WRITE, writes)
                if refusals:
                    cur.executemany(_REFUSE, refusals)
                if audits:
                    cur.executemany(audit.INSERT, audits)
            return out

    # -- trading results -----------------------------------------------------------------

    def apply_trade(
        self,
        trade_id: str,
        profit: Decimal,
        quantity: Decimal,
        price: Decimal,
        allocation_id: str | None = None,
        stream_entry: str | None = None,
    ) -> dict[str, Any]:
        """Apply a trading result once per ``trade_id``; a repeat changes nothing."""
        result: dict[str, Any] = self._retrying(
            self._apply_trade, trade_id, round_cents(profit), quantity, price, allocation_id,
            stream_entry,
        )  # fmt: skip
        return result

    def _apply_trade(
        self,
        trade_id: str,
        profit: Decimal,
        quantity: Decimal,
        price: Decimal,
        allocation_id: str | None,
        stream_entry: str | None,
    ) -> dict[str, Any]:
        seen_sql = "SELECT profit FROM capital_trade_results WHERE trade_id = %s"
        alloc_sql = "SELECT amount, status FROM capital_allocations WHERE allocation_id = %s"
        reads = (seen_sql, (trade_id,)), (alloc_sql, (allocation_id or "",))
        with self._locked(*reads) as (conn, pool, tip, (seen, alloc)):
            if seen:
                return {"ok": True, "trade_id": trade_id, "duplicate": True}
            try:  # only against an open allocation the pool issued, within its bound
                amount: Decimal | None = acc.check_result(
                    profit, allocation_id, (alloc[0][0], alloc[0][1]) if alloc else None,
                    self.rules)  # fmt: skip
                change = acc.apply_result(pool, profit, amount, self.rules)
            except Rejected as exc:
                return {"ok": False, "trade_id": trade_id, "error": str(exc)}
            new = change.pool
            key, deltas = f"trade:{trade_id}", (new.cash - pool.cash, new.active - pool.active)
            link = tip.link(key, "trade_result", None, trade_id, *deltas, ZERO, new)
            conn.execute(_LEDGER, (key, "trade_result", None, trade_id, *deltas, ZERO,
                                   *_balances(new), *link))  # fmt: skip
            conn.execute(_POOL, (*_balances(new), tip.seq, tip.hash))
            conn.execute(
                "INSERT INTO capital_trade_results (trade_id, allocation_id, profit, "
                "quantity, price, stream_entry) VALUES (%s, %s, %s, %s, %s, %s)",
                (trade_id, allocation_id if amount is not None else None, profit, quantity,
                 price, stream_entry),
            )  # fmt: skip
            if amount is not None:
                conn.execute(
                    "UPDATE capital_allocations SET status = 'closed', closed_at = now() "
                    "WHERE allocation_id = %s",
                    (allocation_id,),
                )
            return {
                "ok": True,
                "trade_id": trade_id,
                "profit": money_str(profit),
                "closed_allocation": allocation_id if amount is not None else None,
                "equity": money_str(new.equity),
                "nav": f"{new.nav.quantize(NAV_SHOWN):f}",
            }

    # -- allocation ----------------------------------------------------------------------

    def allocate(self, key: str, vix: Decimal | None, principal: str = SYSTEM) -> dict[str, Any]:
        """Release expired allocations, then fill free slots; idempotent per ``key`` of
        the operator ``principal`` (``system`` for beat and the CLI)."""
        check_key(key)
        check_user(principal)
        result: dict[str, Any] = self._retrying(self._allocate, key, vix, f"operator/{principal}")
        return result

    def _allocate(self, key: str, vix: Decimal | None, owner: str) -> dict[str, Any]:
        action_key = f"allocate:{key}"
        reads = (
            (_ACTION, (owner, action_key)),
            ("SELECT allocation_id, amount FROM capital_allocations WHERE status = 'open' "
             "AND created_at < now() - make_interval(secs => %s) ORDER BY allocation_id",
             (self.rules.allocation_ttl_s,)),
            ("SELECT count(*) FROM capital_allocations WHERE status = 'open'", ()),
        )  # fmt: skip
        with self._locked(*reads) as (conn, pool, tip, (first, expired, open_rows)):
            if first:
                return _replay(first[0], "allocate", None, None, action_key)
            ledger_rows = []
            new = pool
            for alloc_id, amount in expired:
                new = acc.release(new, amount)
                row = (f"release:{alloc_id}", "release", None, alloc_id, amount, -amount, ZERO)
                ledger_rows.append((*row, *_balances(new), *tip.link(*row, new)))
            n_open = open_rows[0][0] - len(expired)
            phase, risk = acc.risk_per_trade(new.equity, vix, self.rules,
                                             self.config.macro_config)  # fmt: skip
            amounts = acc.plan_allocations(new, n_open, self.rules) if phase else []
            made: list[Allocated] = []
            for i, amount in enumerate(amounts):
                alloc_id = f"{key}:{i}"
                new = acc.allocate(new, amount)
                made.append(Allocated(alloc_id, amount, risk, phase.name if phase else "", vix))
                row = (f"allocate:{alloc_id}", "allocate", None, alloc_id, -amount, amount, ZERO)
                ledger_rows.append((*row, *_balances(new), *tip.link(*row, new)))
            result = {
                "ok": True,
                "action": "allocate",
                "key": key,
                "phase": phase.name if phase else None,
                "risk_per_trade": f"{risk.quantize(RATIO_SHOWN):f}",
                "vix": None if vix is None else f"{vix:f}",
                "released": [a for a, _ in expired],
                "allocations": [
                    {"allocation_id": a.allocation_id, "amount": money_str(a.amount)} for a in made
                ],
                "active": money_str(new.active),
                "equity": money_str(new.equity),
            }
            with conn.cursor() as cur:
                if expired:
                    cur.execute(
                        "UPDATE capital_allocations SET status = 'released', closed_at = now() "
                        "WHERE allocation_id = ANY(%s)",
                        ([a for a, _ in expired],),
                    )
                if ledger_rows:
                    cur.executemany(_LEDGER, ledger_rows)
                    cur.execute(_POOL, (*_balances(new), tip.seq, tip.hash))
                if made:
                    cur.executemany(
                        "INSERT INTO capital_allocations (allocation_id, amount, risk_per_trade, "
                        "phase, vix, status, published) VALUES (%s, %s, %s, %s, %s, 'open', false)",
                        [(a.allocation_id, a.amount, a.risk_per_trade, a.phase, a.vix)
                         for a in made],
                    )  # fmt: skip
                cur.execute(_SAVE_ACTION, (owner, action_key, "allocate", None, None, True,
                                           json.dumps(result)))  # fmt: skip
            return result

    def unpublished(self) -> list[dict[str, Any]]:
        """Allocations not yet published on ``capital_data`` (the outbox)."""
        conn = self.conn
        with conn.transaction():
            rows = conn.execute(
                "SELECT allocation_id, amount, risk_per_trade, phase, vix, "
                "extract(epoch FROM created_at) FROM capital_allocations "
                "WHERE NOT published ORDER BY created_at, allocation_id"
            ).fetchall()
        return [allocation_message(*r) for r in rows]

    def mark_published(self, allocation_ids: list[str]) -> None:
        if not allocation_ids:
            return
        conn = self.conn
        with conn.transaction():
            conn.execute(
                "UPDATE capital_allocations SET published = true WHERE allocation_id = ANY(%s)",
                (allocation_ids,),
            )

    # -- reads ---------------------------------------------------------------------------

    def snapshot(self) -> tuple[Pool, dict[str, Holding], dict[str, Any]]:
        """The pool, every member and the ledger's head (``reads.snapshot``)."""
        return reads.snapshot(self.conn)

    def history(self, limit: int = 50, user_id: str | None = None) -> list[dict[str, Any]]:
        """The newest ledger entries first."""
        return reads.history(self.conn, limit, user_id)

    def verify(self, head: str | None = None) -> list[str]:
        """The problems ``audit`` finds (empty when all holds)."""
        return self.audit(head).problems

    def audit(self, head: str | None = None) -> reads.Verification:
        """The hash chain and every entry's MAC, pool state and members checked
        (``reads.audit``); ``head``, a head hash kept earlier, must still be in the
        intact chain."""
        if head is not None:
            check_head(head)
        return reads.audit(self.conn, self.rules, head, self.key)

    def seal(self, by: str) -> dict[str, Any]:
        """MAC the entries written before ledger MACs, once, after checking their chain
        (``seal.seal``); ``by`` is the operator recorded."""
        return seal.seal(self.conn, self.key, by)


def allocation_message(
    allocation_id: str,
    amount: Decimal,
    risk: Decimal,
    phase: str,
    vix: Decimal | None,
    created: Decimal | float | None = None,
) -> dict[str, Any]:
    """The ``capital_data`` message of an allocation (the contract with trading)."""
    return {
        "kind": "allocation",
        "allocation_id": allocation_id,
        "amount": money_str(amount),
        "risk_per_trade": f"{Decimal(risk).quantize(Decimal('0.00000001')):f}",
        "phase": phase,
        "vix": None if vix is None else f"{vix:f}",
        "created_at": float(created) if created is not None else time.time(),
    }


def _balances(pool: Pool) -> tuple[Decimal, Decimal, Decimal, Decimal]:
    return pool.equity, pool.cash, pool.active, pool.units


def _replay(row: tuple[Any, ...], kind: str, user: str | None, amount: Decimal | None,
            key: str) -> dict[str, Any]:  # fmt: skip
    """The first result of ``key``, or an error if the key was used for another action.

    ``row`` is always the caller's own (keys are scoped by owner), and the error names
    only the kind and amount, never a member.
    """
    first_kind, first_user, first_amount, result = row
    if (first_kind, first_user, first_amount) != (kind, user, amount):
        what = f"{first_kind} of {first_amount}" if first_amount is not None else first_kind
        return {
            "ok": False,
            "error": f"idempotency_key {key!r} was already used for a different "
            f"action ({what}); use a new key for a new action",
        }
    replay = dict(result)
    replay["replayed"] = True
    return replay
