"""Accounts resist the application database role: ``users.role`` and ``password_hash``
change, and users are created or deleted, only through the owner's functions.

A trigger on ``users`` refuses INSERT, DELETE, TRUNCATE and any UPDATE that sets
``role`` or ``password_hash`` (SQLSTATE 42501, "permission denied") unless the current
role is the table's owner, or one of its members. The application role gets the
legitimate operations as SECURITY DEFINER functions, owned by the owner, with their
``search_path`` pinned, each callable only by a session whose login role may INSERT
into ``users`` (the application role):

- ``aaa_add_user(username, email, password_hash, role, created_at) -> id``: an admin
  (or the CLI) creating an account; the role must be one of admin, member, viewer;
- ``aaa_set_password_hash(user_id, password_hash)``: a password change, or a rehash
  at login; the hash must be an argon2 PHC string.

No function changes a role: nothing in CoreC does. A trigger rather than a column
REVOKE, because ``corec db upgrade`` grants the application role DML on every table
each time it runs; not the owner, the role cannot drop or disable the trigger.

Revision ID: 0005_users_guard
Revises: 0004_audit
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

revision: str = "0005_users_guard"
down_revision: str | None = "0004_audit"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ADD = "aaa_add_user(text, text, text, text, timestamptz)"
SET = "aaa_set_password_hash(integer, text)"
# The caller's login role must hold INSERT on users (the application role does).
_CALLER = """
    IF NOT has_table_privilege(session_user, 'users', 'INSERT') THEN
        RAISE EXCEPTION 'permission denied: % may not write users', session_user
            USING ERRCODE = 'insufficient_privilege';
    END IF;"""


def _functions(schema: str) -> list[str]:
    pinned = f'SET search_path = "{schema}", pg_temp'
    return [
        f"""
CREATE FUNCTION aaa_add_user(p_username text, p_email text, p_password_hash text,
                             p_role text, p_created_at timestamptz)
RETURNS integer LANGUAGE plpgsql SECURITY DEFINER {pinned} AS $$
DECLARE
    new_id integer;
BEGIN{_CALLER}
    IF p_role IS NULL OR p_role NOT IN ('admin', 'member', 'viewer') THEN
        RAISE EXCEPTION 'not a role: %', p_role USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_password_hash IS NULL OR p_password_hash !~ '^\\$argon2(id|i|d)\\$' THEN
        RAISE EXCEPTION 'a password hash is an argon2 PHC string'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO users (username, email, password_hash, role, is_active, created_at,
                       failed_logins)
    VALUES (p_username, p_email, p_password_hash, p_role, true, p_created_at, 0)
    RETURNING id INTO new_id;
    RETURN new_id;
END $$""",
        f"""
CREATE FUNCTION aaa_set_password_hash(p_user_id integer, p_password_hash text)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER {pinned} AS $$
BEGIN{_CALLER}
    IF p_password_hash IS NULL OR p_password_hash !~ '^\\$argon2(id|i|d)\\$' THEN
        RAISE EXCEPTION 'a password hash is an argon2 PHC string'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE users SET password_hash = p_password_hash WHERE id = p_user_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no user %', p_user_id USING ERRCODE = 'no_data_found';
    END IF;
END $$""",
        """
CREATE FUNCTION aaa_users_owner_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT pg_has_role(current_user, (SELECT relowner FROM pg_class WHERE oid = TG_RELID),
                       'USAGE') THEN
        RAISE EXCEPTION 'permission denied: % on users (or of its role, password_hash) is '
            'done through aaa_add_user and aaa_set_password_hash only', TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NULL;
END $$""",
    ]


def upgrade() -> None:
    if context.is_offline_mode():
        schema = "public"
    else:
        schema = str(op.get_bind().execute(sa.text("SELECT current_schema()")).scalar_one())
    for statement in _functions(schema.replace('"', '""')):
        op.execute(statement)
    op.execute(
        "CREATE TRIGGER users_owner_only BEFORE INSERT OR DELETE OR TRUNCATE "
        "OR UPDATE OF role, password_hash ON users "
        "FOR EACH STATEMENT EXECUTE FUNCTION aaa_users_owner_only()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS users_owner_only ON users")
    for signature in (ADD, SET, "aaa_users_owner_only()"):
        op.execute(f"DROP FUNCTION IF EXISTS {signature}")
