"""The ledger's read side: the status snapshot, the history, and ``audit`` (the hash
chain walked, then every derived table checked against the ledger and the invariants).

Each runs in one REPEATABLE READ transaction, so what it reports is one consistent
state, while writers go on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from plugins.capital_pool import accounting as acc
from plugins.capital_pool import chain, ledger_key, seal
from plugins.capital_pool.accounting import Holding, Pool
from plugins.capital_pool.config import CapitalRules
from plugins.capital_pool.money import money_str, units_str

Conn = psycopg.Connection[tuple[Any, ...]]


@dataclass(frozen=True, slots=True)
class Verification:
    """``audit``'s answer: the problems found and the chain it walked."""

    problems: list[str]
    chain: chain.ChainReport


def snapshot(conn: Conn) -> tuple[Pool, dict[str, Holding], dict[str, Any]]:
    """The pool, every member and the ledger's head, in one consistent snapshot.

    The head is ``{"entries", "seq", "hash"}``: keep its hash outside the database to
    prove later (``verify --head``) that nothing up to it was rewritten.
    """
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        row = conn.execute(
            "SELECT equity, cash, active, units, seq, head_hash, "
            "(SELECT count(*) FROM capital_ledger) FROM pool_state"
        ).fetchone()
        members = conn.execute(
            "SELECT user_id, units, contributed, withdrawn FROM capital_members ORDER BY user_id"
        ).fetchall()
    if row is None:
        raise RuntimeError("pool_state has no row: run `corec db upgrade`")
    head = {"entries": row[6], "seq": row[4], "hash": row[5]}
    return Pool(*row[:4]), {m[0]: Holding(*m[1:]) for m in members}, head


def history(conn: Conn, limit: int = 50, user_id: str | None = None) -> list[dict[str, Any]]:
    """The newest ledger entries first."""
    with conn.transaction():
        rows = conn.execute(
            "SELECT seq, created_at, kind, user_id, ref, cash_delta, active_delta, "
            "units_delta, equity_after, units_after, idempotency_key FROM capital_ledger "
            "WHERE %(u)s::text IS NULL OR user_id = %(u)s ORDER BY seq DESC LIMIT %(n)s",
            {"u": user_id, "n": limit},
        ).fetchall()
    return [
        {"seq": r[0], "time": r[1].isoformat(), "kind": r[2], "user_id": r[3], "ref": r[4],
         "cash_delta": money_str(r[5]), "active_delta": money_str(r[6]),
         "units_delta": units_str(r[7]), "equity_after": money_str(r[8]),
         "units_after": units_str(r[9]), "idempotency_key": r[10]}
        for r in rows
    ]  # fmt: skip


def audit(conn: Conn, rules: CapitalRules, head: str | None, key: bytes) -> Verification:
    """Check the hash chain and MACs, pool state and members against the ledger, the
    invariants.

    Problems (in this order): a ledger ``key`` no MACed entry matches (the wrong key);
    the first entry whose link, content or MAC fails (a missing or bad MAC after the
    legacy range), named by seq, kind, member, key and why (later failures are
    counted); the legacy range unsealed or its seal not matching (``seal.check``); ``head``,
    a head hash kept earlier, not found in the intact chain; ``pool_state``'s head
    not the last entry; balances not the sums of the ledger's deltas and its last
    entry's balances; a member's units not the sum of their ledger units;
    contributed/withdrawn not their tables; open allocations not summing to
    ``active``; a broken accounting invariant.
    """
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        pool_row = conn.execute(
            "SELECT equity, cash, active, units, seq, head_hash FROM pool_state"
        ).fetchone()
        through, legacy_head, legacy = seal.legacy_range(conn)
        report = chain.walk(seal.chain_rows(conn), [head] if head else [], key=key,
                            legacy_through=through, hash_at=[through])  # fmt: skip
        legacy += seal.check(conn, key, through, legacy_head, report)
        sums = conn.execute(
            "SELECT coalesce(sum(cash_delta), 0), coalesce(sum(active_delta), 0), "
            "coalesce(sum(units_delta), 0), count(*) FROM capital_ledger"
        ).fetchone()
        last = conn.execute(
            "SELECT seq, equity_after, cash_after, active_after, units_after "
            "FROM capital_ledger ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        member_rows = conn.execute(
            "SELECT m.user_id, m.units, m.contributed, m.withdrawn, "
            "(SELECT coalesce(sum(units_delta), 0) FROM capital_ledger l "
            " WHERE l.user_id = m.user_id), "
            "(SELECT coalesce(sum(amount), 0) FROM contributions c "
            " WHERE c.user_id = m.user_id), "
            "(SELECT coalesce(sum(amount), 0) FROM withdrawals w "
            " WHERE w.user_id = m.user_id) "
            "FROM capital_members m"
        ).fetchall()
        open_sum = conn.execute(
            "SELECT coalesce(sum(amount), 0) FROM capital_allocations WHERE status = 'open'"
        ).fetchone()
    assert pool_row is not None and sums is not None and open_sum is not None
    pool = Pool(*pool_row[:4])
    problems: list[str] = []
    if report.macs_checked and report.macs_bad == report.macs_checked:
        problems.append(f"none of the {report.macs_checked} MACed entries matches this "
                        f"node's ledger key (id {chain.key_id(key)}, from "
                        f"{ledger_key.where()}): it is the wrong key (give this node the "
                        f"deployment's {ledger_key.KEY_ENV}), or every one was forged")
    if report.first_break is not None:
        more = report.broken - 1
        problems.append(report.first_break + (f" ({more} later entries also break the chain)"
                                              if more else ""))  # fmt: skip
    problems += legacy
    if head is not None and head not in report.found:
        problems.append(f"head {head} is not in the intact chain: an entry up to it was "
                        "rewritten, or it is not this pool's head")  # fmt: skip
    if pool_row[5] != report.head_hash:
        problems.append(f"pool_state's head_hash {pool_row[5]} is not the last entry's "
                        f"hash {report.head_hash}")  # fmt: skip
    if (sums[0] + sums[1], sums[0], sums[1], sums[2]) != (
        pool.equity,
        pool.cash,
        pool.active,
        pool.units,
    ):
        problems.append(f"ledger sums (cash {sums[0]}, active {sums[1]}, units {sums[2]}) "
                        f"differ from pool_state {pool}")  # fmt: skip
    if last is not None and (last[0], *last[1:]) != (pool_row[4], *pool_row[:4]):
        problems.append(f"the last ledger entry {last} differs from pool_state {pool_row}")
    for user, units, contributed, withdrawn, l_units, c_sum, w_sum in member_rows:
        if units != l_units:
            problems.append(f"member {user}: {units} units, ledger says {l_units}")
        if (contributed, withdrawn) != (c_sum, w_sum):
            problems.append(f"member {user}: totals {contributed}/{withdrawn} differ from "
                            f"contributions/withdrawals {c_sum}/{w_sum}")  # fmt: skip
    if open_sum[0] != pool.active:
        problems.append(f"open allocations sum to {open_sum[0]}, active is {pool.active}")
    holdings = [Holding(*m[1:4]) for m in member_rows]
    problems.extend(acc.check(pool, holdings, rules))
    return Verification(problems, report)
