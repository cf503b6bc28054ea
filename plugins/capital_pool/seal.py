"""The ledger's legacy range and its seal, and the check that this node holds the key.

Entries written before migration ``0007_ledger_mac`` carry no MAC, and the ledger is
append-only (nobody may add one to them later). The migration records where they end,
``capital_ledger_seals`` row ``kind = 'legacy'``: ``through_seq`` (0 on a ledger created
after it: nothing to seal) and the hash of that entry. An operator holding the ledger
key runs ``corec capital seal`` once: it walks the legacy entries' hash chain, refuses if
it is broken or does not end at the recorded hash, and records a ``kind = 'seal'`` row
whose MAC (``chain.seal_mac``) covers that hash, which the chain makes commit to every
legacy entry. Until then ``verify`` is red ("not sealed"); every entry after the range
must carry its own MAC, so an unMACed entry written after the upgrade is never accepted.

The table is append-only (a trigger), and ``verify`` wants exactly one legacy row: a
second one, inserted by anyone, turns it red rather than moving the range.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg

from plugins.capital_pool import chain, ledger_key
from plugins.capital_pool.ledger_key import LedgerKeyError

Conn = psycopg.Connection[tuple[Any, ...]]

COLUMNS = ("seq, created_at, idempotency_key, kind, user_id, ref, cash_delta, active_delta, "
           "units_delta, equity_after, cash_after, active_after, units_after, prev_hash, hash, "
           "mac")  # fmt: skip
_SEALS = ("SELECT id, kind, through_seq, head_hash, key_id, mac, sealed_by "
          "FROM capital_ledger_seals ORDER BY id")  # fmt: skip


def chain_rows(conn: Conn, through: int | None = None) -> Iterator[chain.Row]:
    """Every entry (up to seq ``through``) in seq order, streamed by a server-side cursor
    in the caller's transaction, as ``walk`` takes them."""
    with conn.cursor(name="capital_chain") as cur:
        cur.itersize = 5000
        cur.execute(f"SELECT {COLUMNS} FROM capital_ledger "
                    "WHERE %(t)s::bigint IS NULL OR seq <= %(t)s ORDER BY seq",
                    {"t": through})  # fmt: skip
        for r in cur:
            yield chain.Entry(*r[:13]), r[13], r[14], r[15]


def legacy_range(conn: Conn) -> tuple[int, str | None, list[str]]:
    """``(through_seq, head_hash, problems)`` of the legacy range as recorded; a missing
    or doubled legacy row is a problem, and then the range is taken as empty."""
    rows = conn.execute(_SEALS).fetchall()
    legacy = [r for r in rows if r[1] == "legacy"]
    if len(legacy) == 1:
        return int(legacy[0][2]), legacy[0][3], []
    if not legacy:
        return 0, None, ["capital_ledger_seals has no legacy row: run `corec db upgrade`"]
    return 0, None, [f"capital_ledger_seals holds {len(legacy)} legacy rows (ids "
                     f"{', '.join(str(r[0]) for r in legacy)}), not one: a row was inserted "
                     "after migration 0007_ledger_mac, so the legacy range cannot be "
                     "trusted"]  # fmt: skip


def check(conn: Conn, key: bytes, through: int, head: str | None,
          report: chain.ChainReport) -> list[str]:  # fmt: skip
    """The problems with the legacy range ``1..through`` (recorded ending at ``head``)
    after ``report`` walked the chain with ``hash_at={through}``: empty when the range is
    empty, or its last entry hashes to ``head`` and a seal row's MAC covers it."""
    if through == 0:
        return []
    walked = report.hashes.get(through)
    if walked is None:
        return [f"the legacy range ends at seq {through}, which is not in the ledger"]
    if walked != head:
        return [f"the legacy range's last entry (seq {through}) hashes to {walked[:16]}…, "
                f"not to {str(head)[:16]}… recorded by migration 0007_ledger_mac"]
    expected = chain.seal_mac(key, through, walked)
    seals = [r for r in conn.execute(_SEALS).fetchall() if r[1] == "seal"]
    if any(r[2] == through and r[3] == walked and r[5] == expected for r in seals):
        return []
    if seals:
        return [f"no seal of the legacy range (seq 1-{through}) matches this node's ledger "
                f"key (id {chain.key_id(key)}): the seal was forged, or made with another "
                f"key (seals' key ids: {', '.join(sorted({str(r[4]) for r in seals}))})"]
    return [f"ledger entries seq 1-{through} were written before ledger MACs and are not "
            "sealed: an operator holding the ledger key runs `corec capital seal` once"]


def seal(conn: Conn, key: bytes, by: str) -> dict[str, Any]:
    """Seal the legacy range under ``key``: walk its chain, refuse if it is broken or does
    not end at the recorded hash, record the seal (and an ``audit_log`` row). Idempotent."""
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
        through, head, problems = legacy_range(conn)
        if problems:
            return {"ok": False, "error": problems[0]}
        if through == 0:
            return {"ok": True, "sealed": False, "through_seq": 0,
                    "message": "no entry predates ledger MACs: nothing to seal"}  # fmt: skip
        report = chain.walk(chain_rows(conn, through), hash_at=[through])
        if report.first_break is not None:
            return {"ok": False, "error": "the legacy range's chain is broken, so it is not "
                    f"sealed: {report.first_break}"}  # fmt: skip
        if not check(conn, key, through, head, report):
            return {"ok": True, "sealed": False, "through_seq": through, "head_hash": head,
                    "message": "already sealed under this key"}  # fmt: skip
        walked = report.hashes.get(through)
        if walked is None or walked != head:
            return {"ok": False, "error": check(conn, key, through, head, report)[0]}
        mac = chain.seal_mac(key, through, walked)
        conn.execute(
            "INSERT INTO capital_ledger_seals (kind, through_seq, head_hash, key_id, mac, "
            "sealed_by) VALUES ('seal', %s, %s, %s, %s, %s)",
            (through, walked, chain.key_id(key), mac, by),
        )
        details = {"principal": by, "through_seq": through, "head_hash": walked,
                   "key_id": chain.key_id(key), "entries": report.entries}  # fmt: skip
        conn.execute("INSERT INTO audit_log (user_id, action, timestamp, details) "
                     "VALUES (NULL, 'capital.seal', now(), %s)",
                     (json.dumps(details, sort_keys=True),))  # fmt: skip
    return {"ok": True, "sealed": True, "through_seq": through, "head_hash": walked,
            "entries": report.entries, "key_id": chain.key_id(key)}  # fmt: skip


def check_key(conn: Conn, key: bytes) -> None:
    """LedgerKeyError unless ``key`` MACs the newest MACed entry (any key passes on a
    ledger with none yet): a node must not write entries under a key ``verify`` rejects."""
    with conn.transaction():
        row = conn.execute(f"SELECT {COLUMNS} FROM capital_ledger WHERE mac IS NOT NULL "
                           "ORDER BY seq DESC LIMIT 1").fetchone()  # fmt: skip
    if row is None or chain.entry_mac(key, row[13], chain.Entry(*row[:13])) == row[15]:
        return
    raise LedgerKeyError(
        f"this node's ledger key (id {chain.key_id(key)}, from {ledger_key.where()}) does not "
        f"match the MAC of ledger entry seq {row[0]} ({row[3]}): it is not the key the "
        f"ledger is written with, so nothing was written. Give every node the deployment's "
        f"key ({ledger_key.KEY_ENV}); if the key is right, that entry was forged: run "
        "`corec capital verify`"
    )
