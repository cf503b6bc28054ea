"""Partition creation for a non-owner application role.

Only a table's owner may create or attach its partitions, and the application role
(``DATABASE_URL``) is not the owner (``COREC_MIGRATE_DATABASE_URL`` is). So the owner
provides ``corec_create_month_partition(table, year, month)``: SECURITY DEFINER, with
a fixed search_path, accepting only the framework's partitioned tables and a calendar
month (bounds are computed here, never passed in). It does what
``storage.partitions._create_partition`` does: create the month standalone, move its
rows out of DEFAULT, attach it. EXECUTE is revoked from PUBLIC; ``storage.migrate``
grants it to the application role.

It references only the framework's partitioned tables, so it follows ``0001`` directly.
It was ``0005_app_role`` in the old linear chain, where the plugins' tables sat between;
a new id, because a lone ``0005_app_role`` row in ``alembic_version`` must keep meaning
"the old chain up to here" (``storage.migrate.LEGACY_CHAIN`` repairs such databases).

Revision ID: app_role
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

from corec_tasks.storage import partitions

revision: str = "app_role"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SIGNATURE = f"{partitions.PARTITION_FUNCTION}(text, integer, integer)"


def _body(schema: str) -> str:
    tables = ", ".join(f"'{t}'" for t in partitions.PARTITIONED_TABLES)
    key = partitions.PARTITION_KEY
    return f"""
CREATE FUNCTION {partitions.PARTITION_FUNCTION}(p_table text, p_year integer, p_month integer)
RETURNS text LANGUAGE plpgsql SECURITY DEFINER
SET search_path = "{schema}", pg_temp AS $$
DECLARE
    part text;
    dflt text;
    parent regclass;
    rel regclass;
    lo double precision;
    hi double precision;
    cols text;
    has_default boolean;
BEGIN
    IF p_table IS NULL OR p_table NOT IN ({tables}) THEN
        RAISE EXCEPTION 'not a partitioned table of CoreC: %', p_table
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_year IS NULL OR p_year NOT BETWEEN 2000 AND 2999
       OR p_month IS NULL OR p_month NOT BETWEEN 1 AND 12 THEN
        RAISE EXCEPTION 'not a month: % %', p_year, p_month
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM pg_advisory_xact_lock({partitions.LOCK_KEY});
    parent := to_regclass(quote_ident(p_table));
    part := format('%s_%s_%s', p_table, lpad(p_year::text, 4, '0'), lpad(p_month::text, 2, '0'));
    rel := to_regclass(quote_ident(part));
    IF rel IS NOT NULL THEN
        IF EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = rel AND inhparent = parent) THEN
            RETURN NULL;
        END IF;
        RAISE EXCEPTION 'table % exists but is not a partition of %', part, p_table;
    END IF;
    lo := extract(epoch FROM make_timestamptz(p_year, p_month, 1, 0, 0, 0, 'UTC'));
    hi := extract(epoch FROM make_timestamptz(p_year, p_month, 1, 0, 0, 0, 'UTC')
                             + interval '1 month');
    dflt := p_table || '_default';
    has_default := EXISTS (SELECT 1 FROM pg_inherits
                           WHERE inhrelid = to_regclass(quote_ident(dflt)) AND inhparent = parent);
    -- Parent before default, the order writers lock them in, so no deadlock.
    EXECUTE format('LOCK TABLE %I IN SHARE UPDATE EXCLUSIVE MODE', p_table);
    IF has_default THEN
        EXECUTE format('LOCK TABLE %I IN ACCESS EXCLUSIVE MODE', dflt);
    END IF;
    EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS)', part, p_table);
    IF has_default THEN
        SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) INTO cols
        FROM pg_attribute WHERE attrelid = parent AND attnum > 0 AND NOT attisdropped;
        EXECUTE format('WITH moved AS (DELETE FROM %I WHERE %I >= $1 AND %I < $2 RETURNING %s) '
                       'INSERT INTO %I (%s) SELECT %s FROM moved',
                       dflt, '{key}', '{key}', cols, part, cols, cols)
            USING lo, hi;
    END IF;
    EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                   p_table, part, lo::text, hi::text);
    RETURN part;
END $$
"""


def upgrade() -> None:
    """The owner's partition function; nobody may call it until granted."""
    if context.is_offline_mode():
        schema = "public"
    else:
        schema = op.get_bind().execute(sa.text("SELECT current_schema()")).scalar_one()
    op.execute(_body(str(schema).replace('"', '""')))
    op.execute(f"REVOKE ALL ON FUNCTION {SIGNATURE} FROM PUBLIC")


def downgrade() -> None:
    """Back to 0001: partitions are created by their owner only."""
    op.execute(f"DROP FUNCTION IF EXISTS {SIGNATURE}")
