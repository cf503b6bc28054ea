"""Ledger MACs: the application database role cannot add an entry ``verify`` accepts.

- ``capital_ledger.mac``: each entry's HMAC-SHA256 under the ledger key, which the
  database never holds (``chain.py``, ``ledger_key.py``). A CHECK refuses an entry
  after the legacy range without a well-formed MAC; a forged one still gets in, and
  ``verify`` names it (its seq, its kind, "bad MAC").
- ``capital_ledger_seals``: the *legacy range*, the entries written before this
  revision (MAC-less, and the ledger is append-only), recorded here once as
  ``kind = 'legacy'``: ``through_seq`` (0 when there are none) and its last entry's
  hash. ``corec capital seal``, run once by an operator holding the ledger key, adds
  the ``kind = 'seal'`` row whose MAC covers that hash (``seal.py``). Append-only.
- ``capital_actions`` (the idempotency records): UPDATE, DELETE and TRUNCATE are
  refused to every role but the tables' owner (a trigger, SQLSTATE 42501): deleting a
  record would let a replayed action apply twice. A trigger rather than a REVOKE,
  because ``corec db upgrade`` grants the application role DML on every table each
  time it runs; the role cannot drop or disable a trigger (not the owner).

Revision ID: 0007_ledger_mac
Revises: 0006_settlement
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

revision: str = "0007_ledger_mac"
down_revision: str | None = "0006_settlement"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

GENESIS = "0" * 64


def upgrade() -> None:
    op.add_column("capital_ledger", sa.Column("mac", sa.String(64)))
    if context.is_offline_mode():
        through = 0
    else:
        through = int(op.get_bind().execute(
            sa.text("SELECT coalesce(max(seq), 0) FROM capital_ledger")).scalar_one())  # fmt: skip
    # Bounded by the legacy range as a literal (not NOT VALID: Alembic cannot reflect that).
    op.execute("ALTER TABLE capital_ledger ADD CONSTRAINT capital_ledger_mac_present CHECK "
               f"(seq <= {through} OR (mac IS NOT NULL AND mac ~ '^[0-9a-f]{{64}}$'))")  # fmt: skip
    op.create_table(
        "capital_ledger_seals",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("through_seq", sa.BigInteger(), nullable=False),
        sa.Column("head_hash", sa.String(64), nullable=False),
        sa.Column("key_id", sa.String(16)),
        sa.Column("mac", sa.String(64)),
        sa.Column("sealed_by", sa.String(220)),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint("kind IN ('legacy', 'seal')", name="capital_ledger_seals_kind"),
    )
    op.execute(
        "INSERT INTO capital_ledger_seals (kind, through_seq, head_hash) "
        "SELECT 'legacy', coalesce(max(seq), 0), coalesce((SELECT hash FROM capital_ledger "
        f"ORDER BY seq DESC LIMIT 1), '{GENESIS}') FROM capital_ledger"
    )
    op.execute(
        """
        CREATE FUNCTION capital_seals_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'capital_ledger_seals is append-only: % refused', TG_OP;
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER capital_ledger_seals_append_only BEFORE UPDATE OR DELETE OR TRUNCATE "
        "ON capital_ledger_seals FOR EACH STATEMENT "
        "EXECUTE FUNCTION capital_seals_append_only()"
    )
    op.execute(
        """
        CREATE FUNCTION capital_owner_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NOT pg_has_role(current_user,
                               (SELECT relowner FROM pg_class WHERE oid = TG_RELID),
                               'USAGE') THEN
                RAISE EXCEPTION 'permission denied: % on % is for its owner only',
                    TG_OP, TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege';
            END IF;
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER capital_actions_owner_only BEFORE UPDATE OR DELETE OR TRUNCATE "
        "ON capital_actions FOR EACH STATEMENT EXECUTE FUNCTION capital_owner_only()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS capital_actions_owner_only ON capital_actions")
    op.execute("DROP FUNCTION IF EXISTS capital_owner_only()")
    op.drop_table("capital_ledger_seals")
    op.execute("DROP FUNCTION IF EXISTS capital_seals_append_only()")
    op.execute("ALTER TABLE capital_ledger DROP CONSTRAINT IF EXISTS capital_ledger_mac_present")
    op.drop_column("capital_ledger", "mac")
