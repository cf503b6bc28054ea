"""An append-only ``audit_log``: UPDATE, DELETE and TRUNCATE are refused, as on the ledger.

Part of ``0004`` (capital_pool's ledger integrity) when both sat in the framework's
linear chain; here, on aaa's branch, so the audit log is append-only wherever it exists,
capital_pool enabled or not. capital_pool's ``0004`` depends on this revision.

Revision ID: 0004_audit
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004_audit"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """The trigger ``capital_ledger`` has, on ``audit_log``."""
    op.execute(
        """
        CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP;
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE "
        "ON audit_log FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()"
    )


def downgrade() -> None:
    """Back to 0003: audit_log rows can be rewritten again."""
    op.execute("DROP TRIGGER IF EXISTS audit_log_append_only ON audit_log")
    op.execute("DROP FUNCTION IF EXISTS audit_log_append_only()")
