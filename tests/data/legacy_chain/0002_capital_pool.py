"""capital_pool: the capital ledger (plugins/capital_pool/models.py).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_MONEY = sa.Numeric(20, 2)
_UNITS = sa.Numeric(28, 8)


def _created(name: str = "created_at") -> sa.Column[Any]:
    return sa.Column(name, sa.DateTime(timezone=True), server_default=sa.func.now(),
                     nullable=False)  # fmt: skip


def upgrade() -> None:
    """Create the ledger tables, the single pool_state row and the append-only trigger."""
    op.create_table(
        "pool_state",
        sa.Column("id", sa.SmallInteger(), primary_key=True),
        sa.Column("equity", _MONEY, nullable=False),
        sa.Column("cash", _MONEY, nullable=False),
        sa.Column("active", _MONEY, nullable=False),
        sa.Column("units", _UNITS, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        _created("updated_at"),
        sa.CheckConstraint("id = 1", name="pool_state_single_row"),
        sa.CheckConstraint("cash >= 0 AND active >= 0 AND units >= 0", name="pool_state_nonneg"),
        sa.CheckConstraint("equity = cash + active", name="pool_state_equity"),
    )
    op.execute("INSERT INTO pool_state (id, equity, cash, active, units, seq) "
               "VALUES (1, 0, 0, 0, 0, 0)")  # fmt: skip
    op.create_table(
        "capital_members",
        sa.Column("user_id", sa.String(128), primary_key=True),
        sa.Column("units", _UNITS, nullable=False),
        sa.Column("contributed", _MONEY, nullable=False),
        sa.Column("withdrawn", _MONEY, nullable=False),
        _created(),
        _created("updated_at"),
        sa.CheckConstraint("units >= 0", name="capital_members_units_nonneg"),
    )
    for table in ("contributions", "withdrawals"):
        op.create_table(
            table,
            sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
            sa.Column("user_id", sa.String(128), nullable=False),
            sa.Column("amount", _MONEY, nullable=False),
            sa.Column("units", _UNITS, nullable=False),
            sa.Column("nav", sa.Numeric(30, 10), nullable=False),
            sa.Column("idempotency_key", sa.String(200), nullable=False, unique=True),
            _created(),
        )
        op.create_index(f"ix_{table}_user_id", table, ["user_id"])
    op.create_table(
        "capital_allocations",
        sa.Column("allocation_id", sa.String(200), primary_key=True),
        sa.Column("amount", _MONEY, nullable=False),
        sa.Column("risk_per_trade", sa.Numeric(12, 8), nullable=False),
        sa.Column("phase", sa.String(64), nullable=False),
        sa.Column("vix", sa.Numeric(12, 4)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("published", sa.Boolean(), nullable=False),
        _created(),
        sa.Column("closed_at", sa.DateTime(timezone=True)),
    )
    op.create_index("capital_allocations_open", "capital_allocations", ["status", "created_at"])
    op.create_index("capital_allocations_unpublished", "capital_allocations", ["published"],
                    postgresql_where=sa.text("NOT published"))  # fmt: skip
    op.create_table(
        "capital_trade_results",
        sa.Column("trade_id", sa.String(200), primary_key=True),
        sa.Column("allocation_id", sa.String(200)),
        sa.Column("profit", _MONEY, nullable=False),
        sa.Column("quantity", sa.Numeric(38, 12), nullable=False),
        sa.Column("price", sa.Numeric(38, 12), nullable=False),
        sa.Column("stream_entry", sa.String(64)),
        _created(),
    )
    op.create_table(
        "capital_ledger",
        sa.Column("seq", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("idempotency_key", sa.String(220), nullable=False, unique=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("user_id", sa.String(128)),
        sa.Column("ref", sa.String(200)),
        sa.Column("cash_delta", _MONEY, nullable=False),
        sa.Column("active_delta", _MONEY, nullable=False),
        sa.Column("units_delta", _UNITS, nullable=False),
        sa.Column("equity_after", _MONEY, nullable=False),
        sa.Column("cash_after", _MONEY, nullable=False),
        sa.Column("active_after", _MONEY, nullable=False),
        sa.Column("units_after", _UNITS, nullable=False),
        _created(),
    )
    op.create_index("ix_capital_ledger_user_id", "capital_ledger", ["user_id"])
    op.execute(
        """
        CREATE FUNCTION capital_ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'capital_ledger is append-only: % refused', TG_OP;
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER capital_ledger_append_only BEFORE UPDATE OR DELETE OR TRUNCATE "
        "ON capital_ledger FOR EACH STATEMENT EXECUTE FUNCTION capital_ledger_append_only()"
    )
    op.create_table(
        "capital_actions",
        sa.Column("idempotency_key", sa.String(200), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("user_id", sa.String(128)),
        sa.Column("amount", _MONEY),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("result", postgresql.JSONB(), nullable=False),
        _created(),
    )


def downgrade() -> None:
    """Drop the ledger (its data goes with it)."""
    for table in ("capital_actions", "capital_ledger", "capital_trade_results",
                  "capital_allocations", "withdrawals", "contributions", "capital_members",
                  "pool_state"):  # fmt: skip
        op.drop_table(table)
    op.execute("DROP FUNCTION IF EXISTS capital_ledger_append_only()")
