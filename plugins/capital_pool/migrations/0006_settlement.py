"""The capital pool's daily settlement: member statements and the pool's day.

On capital_pool's own branch, after ``0004``. (It once sat in the framework's linear
chain, after ``0005_app_role``; ``storage.migrate`` maps a database upgraded by that
chain onto the branches.)

- ``capital_statements``: one row per ``(user_id, day)``, written once by the daily
  settlement (``plugins/capital_pool/settlement.py``), never updated: units, value,
  the day's and the to-date contributions and withdrawals, the ROI for the day and to
  date.
- ``capital_pool_days``: one row per day, the pool at the end of that day (UTC): NAV
  per unit, equity, units, and ``seq``, the last ledger entry the day includes.

Both refuse UPDATE and DELETE (a statement sent is a statement kept).

Revision ID: 0006_settlement
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_settlement"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_MONEY = sa.Numeric(20, 2)
_UNITS = sa.Numeric(28, 8)
_RATIO = sa.Numeric(20, 8)
_NAV = sa.Numeric(30, 10)


def upgrade() -> None:
    op.create_table(
        "capital_pool_days",
        sa.Column("day", sa.Date(), primary_key=True),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("nav", _NAV, nullable=False),
        sa.Column("equity", _MONEY, nullable=False),
        sa.Column("units", _UNITS, nullable=False),
        sa.Column("members", sa.Integer(), nullable=False),
        sa.Column(
            "settled_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
    )
    op.create_table(
        "capital_statements",
        sa.Column("user_id", sa.String(128), primary_key=True),
        sa.Column("day", sa.Date(), primary_key=True),
        sa.Column("units", _UNITS, nullable=False),
        sa.Column("nav", _NAV, nullable=False),
        sa.Column("value_start", _MONEY, nullable=False),
        sa.Column("value", _MONEY, nullable=False),
        sa.Column("contributed_day", _MONEY, nullable=False),
        sa.Column("withdrawn_day", _MONEY, nullable=False),
        sa.Column("contributed", _MONEY, nullable=False),
        sa.Column("withdrawn", _MONEY, nullable=False),
        sa.Column("profit_day", _MONEY, nullable=False),
        sa.Column("roi_day", _RATIO, nullable=True),
        sa.Column("roi_to_date", _RATIO, nullable=True),
        sa.Column(
            "settled_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
    )
    op.create_index("ix_capital_statements_day", "capital_statements", ["day"])
    op.execute(
        """
        CREATE FUNCTION capital_settled_keep() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION '% is written once by the settlement: % refused',
                TG_TABLE_NAME, TG_OP;
        END $$
        """
    )
    for table in ("capital_pool_days", "capital_statements"):
        op.execute(
            f"CREATE TRIGGER {table}_keep BEFORE UPDATE OR DELETE OR TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION capital_settled_keep()"
        )


def downgrade() -> None:
    op.drop_table("capital_statements")
    op.drop_table("capital_pool_days")
    op.execute("DROP FUNCTION IF EXISTS capital_settled_keep()")
