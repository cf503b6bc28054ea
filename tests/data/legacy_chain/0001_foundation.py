"""Foundation: the month-partitioned ``bloques`` and ``eventos`` tables.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import postgresql

from corec_tasks.storage import partitions

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: Months created beyond the current one; partition upkeep (beat) keeps this going.
MONTHS_AHEAD = 3
_BY_MONTH = 'RANGE ("timestamp")'
# Keys are identifiers, not prose: byte order compares several times faster than a
# locale's, and an OS collation update can never silently corrupt these indexes.
_KEY = sa.Text(collation="C")


def upgrade() -> None:
    """Create both partitioned tables, their DEFAULT partitions, indexes and months."""
    op.create_table(
        "bloques",
        sa.Column("id", _KEY, nullable=False),
        sa.Column("ciclo", sa.BigInteger(), nullable=False),
        sa.Column("canal", sa.Integer()),
        sa.Column("num_entidades", sa.Integer()),
        sa.Column("fitness", sa.REAL()),
        sa.Column("carga", sa.REAL()),
        sa.Column("errores", sa.Integer()),
        sa.Column("timestamp", sa.Double(), nullable=False),
        sa.Column("instance_id", sa.Text()),
        sa.Column("mensajes", sa.LargeBinary()),
        sa.PrimaryKeyConstraint("id", "ciclo", "timestamp", name=op.f("pk_bloques")),
        postgresql_partition_by=_BY_MONTH,
    )
    op.create_table(
        "eventos",
        sa.Column("entry_key", _KEY, nullable=False),
        sa.Column("canal", _KEY),
        sa.Column("datos", postgresql.JSONB()),
        sa.Column("timestamp", sa.Double(), nullable=False),
        sa.Column("instance_id", sa.Text()),
        sa.PrimaryKeyConstraint("entry_key", "timestamp", name=op.f("pk_eventos")),
        postgresql_partition_by=_BY_MONTH,
    )
    for table in partitions.PARTITIONED_TABLES:
        # On the parent, so every partition, present or future, gets the same index.
        op.create_index(
            f"ix_{table}_canal_timestamp", table, ["canal", sa.text('"timestamp" DESC')]
        )
        default = partitions.default_partition_name(table)
        op.execute(f'CREATE TABLE "{default}" PARTITION OF "{table}" DEFAULT')
    if context.is_offline_mode():
        for year, month in partitions.months_from(datetime.now(UTC), MONTHS_AHEAD):
            for table in partitions.PARTITIONED_TABLES:
                op.execute(partitions.create_partition_sql(table, year, month))
    else:
        partitions.ensure_partitions(op.get_bind(), months_ahead=MONTHS_AHEAD)


def downgrade() -> None:
    """Drop both tables with every partition and row in them."""
    op.drop_table("eventos")
    op.drop_table("bloques")
