"""The two writes of ``users`` the application database role may not make directly:
creating an account and setting a password hash (aaa migration ``0005_users_guard``).

On PostgreSQL with that migration, they go through the owner's SECURITY DEFINER
functions ``aaa_add_user`` and ``aaa_set_password_hash``; a trigger refuses the same
writes made by plain INSERT/UPDATE to anyone but the owner, so the role cannot make
itself an admin or take over an account with one UPDATE. Elsewhere (SQLite in the
unit tests, a schema made by ``create_all``) they are the plain ORM writes.
"""

from __future__ import annotations

import weakref
from datetime import datetime

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from plugins.trading.models import Role, User

_HAS_FUNCTIONS: weakref.WeakKeyDictionary[Engine, bool] = weakref.WeakKeyDictionary()


def _guarded(db: Session) -> bool:
    """Whether this database has the owner's functions (checked once per engine)."""
    bind = db.get_bind()
    engine = bind if isinstance(bind, Engine) else bind.engine
    if engine.dialect.name != "postgresql":
        return False
    known = _HAS_FUNCTIONS.get(engine)
    if known is None:
        known = db.execute(text(
            "SELECT to_regprocedure('aaa_set_password_hash(integer, text)') IS NOT NULL"
        )).scalar_one()  # fmt: skip
        _HAS_FUNCTIONS[engine] = bool(known)
    return bool(known)


def add_user(db: Session, username: str, email: str | None, password_hash: str, role: Role,
             created_at: datetime) -> User:  # fmt: skip
    """Create the account; the new ``User``, loaded in ``db``."""
    if not _guarded(db):
        user = User(username=username, email=email, role=role, is_active=True,
                    failed_logins=0, password_hash=password_hash, created_at=created_at)
        db.add(user)
        db.flush()
        return user
    user_id = db.execute(
        text("SELECT aaa_add_user(:u, :e, :h, :r, :t)"),
        {"u": username, "e": email, "h": password_hash, "r": role.value, "t": created_at},
    ).scalar_one()
    made = db.get(User, user_id)
    assert made is not None
    return made


def set_password_hash(db: Session, user: User, password_hash: str) -> None:
    """Store ``user``'s new password hash."""
    if not _guarded(db):
        user.password_hash = password_hash
        return
    db.execute(text("SELECT aaa_set_password_hash(:i, :h)"), {"i": user.id, "h": password_hash})
    # The row changed under the ORM: keep its object in step without an UPDATE of its own.
    db.expire(user, ["password_hash"])
