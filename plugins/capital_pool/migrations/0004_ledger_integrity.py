"""Ledger integrity: keys scoped by member, the hash-chained ledger.

- ``capital_actions`` is keyed by ``(owner, idempotency_key)``: the member's user_id,
  or ``operator/system`` for the allocation runs recorded so far (their keys keep
  the ``allocate:`` prefix). ``contributions``, ``withdrawals`` and ``capital_ledger``
  are unique per ``(user_id, idempotency_key)``; the ledger's pool entries (no
  user_id) stay unique by key.
- ``capital_ledger`` gains ``prev_hash`` and ``hash``; existing entries are hashed
  here in ``seq`` order, and ``pool_state.head_hash`` is set to the last hash.

Every capital action writes an ``audit_log`` row, and that table must refuse rewrites
before the ledger is trusted: so this depends on aaa's ``0004_audit`` (which once was
part of this revision, when both sat in the framework's linear chain), and upgrading
capital_pool alone brings aaa's tables and that trigger with it.

The hash below is a frozen copy of ``plugins.capital_pool.chain.entry_hash`` (a
revision keeps doing what it did when written, whatever the live code becomes); a test
checks that both agree.

Revision ID: 0004
Revises: 0002
Depends on: 0004_audit
Create Date: 2026-11-30
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = "0004_audit"

GENESIS = "0" * 64
_COLUMNS = ("seq, created_at, idempotency_key, kind, user_id, ref, cash_delta, active_delta, "
            "units_delta, equity_after, cash_after, active_after, units_after")  # fmt: skip


def _dec(value: Decimal) -> str:
    if value == 0:
        return "0"
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _hash(prev: str, row: Sequence[Any]) -> str:
    seq, created, key, kind, user, ref, *amounts = row
    when = created.astimezone(UTC).isoformat(timespec="microseconds")
    body = ["capital_ledger/v1", prev, seq, when, key, kind, user, ref,
            *(_dec(a) for a in amounts)]  # fmt: skip
    return hashlib.sha256(json.dumps(body, separators=(",", ":"), ensure_ascii=True)
                          .encode()).hexdigest()  # fmt: skip


def _hash_existing_entries() -> None:
    """Chain the entries written before this revision, in ``seq`` order."""
    conn = op.get_bind()
    rows = conn.execute(sa.text(f"SELECT {_COLUMNS} FROM capital_ledger ORDER BY seq"))
    prev, links = GENESIS, []
    for row in rows:
        assert isinstance(row[1], datetime)
        digest = _hash(prev, tuple(row))
        links.append({"seq": row[0], "prev": prev, "hash": digest})
        prev = digest
    op.execute("ALTER TABLE capital_ledger DISABLE TRIGGER capital_ledger_append_only")
    if links:
        conn.execute(sa.text("UPDATE capital_ledger SET prev_hash = :prev, hash = :hash "
                             "WHERE seq = :seq"), links)  # fmt: skip
    op.execute("ALTER TABLE capital_ledger ENABLE TRIGGER capital_ledger_append_only")
    conn.execute(sa.text("UPDATE pool_state SET head_hash = :h"), {"h": prev})


def upgrade() -> None:
    """Scope keys by member, chain the ledger."""
    # capital_actions: (owner, key)
    op.add_column("capital_actions", sa.Column("owner", sa.String(140)))
    op.execute("UPDATE capital_actions SET owner = coalesce(user_id, 'operator/system')")
    op.alter_column("capital_actions", "owner", nullable=False)
    op.alter_column("capital_actions", "idempotency_key", type_=sa.String(220))
    op.drop_constraint("pk_capital_actions", "capital_actions", type_="primary")
    op.create_primary_key("pk_capital_actions", "capital_actions",
                          ["owner", "idempotency_key"])  # fmt: skip
    for table in ("contributions", "withdrawals"):
        op.drop_constraint(f"uq_{table}_idempotency_key", table, type_="unique")
        op.create_unique_constraint(f"uq_{table}_user_id", table, ["user_id", "idempotency_key"])
    # capital_ledger: scoped keys and the chain
    op.drop_constraint("uq_capital_ledger_idempotency_key", "capital_ledger", type_="unique")
    op.create_unique_constraint("uq_capital_ledger_user_id", "capital_ledger",
                                ["user_id", "idempotency_key"])  # fmt: skip
    op.create_index("capital_ledger_pool_key", "capital_ledger", ["idempotency_key"],
                    unique=True, postgresql_where=sa.text("user_id IS NULL"))  # fmt: skip
    op.add_column("capital_ledger", sa.Column("prev_hash", sa.String(64)))
    op.add_column("capital_ledger", sa.Column("hash", sa.String(64)))
    op.add_column("pool_state", sa.Column("head_hash", sa.String(64), nullable=False,
                                          server_default=GENESIS))  # fmt: skip
    op.alter_column("pool_state", "head_hash", server_default=None)
    _hash_existing_entries()
    op.alter_column("capital_ledger", "prev_hash", nullable=False)
    op.alter_column("capital_ledger", "hash", nullable=False)
    op.create_unique_constraint("uq_capital_ledger_prev_hash", "capital_ledger", ["prev_hash"])


def downgrade() -> None:
    """Back to 0002 (fails if two members now share a key: 0002 kept keys global)."""
    op.drop_constraint("uq_capital_ledger_prev_hash", "capital_ledger", type_="unique")
    op.drop_column("pool_state", "head_hash")
    op.drop_column("capital_ledger", "hash")
    op.drop_column("capital_ledger", "prev_hash")
    op.drop_index("capital_ledger_pool_key", "capital_ledger")
    op.drop_constraint("uq_capital_ledger_user_id", "capital_ledger", type_="unique")
    op.create_unique_constraint("uq_capital_ledger_idempotency_key", "capital_ledger",
                                ["idempotency_key"])  # fmt: skip
    for table in ("contributions", "withdrawals"):
        op.drop_constraint(f"uq_{table}_user_id", table, type_="unique")
        op.create_unique_constraint(f"uq_{table}_idempotency_key", table, ["idempotency_key"])
    op.drop_constraint("pk_capital_actions", "capital_actions", type_="primary")
    op.create_primary_key("pk_capital_actions", "capital_actions", ["idempotency_key"])
    op.alter_column("capital_actions", "idempotency_key", type_=sa.String(200))
    op.drop_column("capital_actions", "owner")
