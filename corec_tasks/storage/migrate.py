"""Run the schema migrations from code (no alembic.ini): ``upgrade`` and ``current``."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from corec_tasks.db import make_engine, redact
from corec_tasks.errors import StorageError

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"

#: pg_advisory_lock key held for a whole upgrade, so nodes starting together take turns.
LOCK_KEY = 0x636F7265_634D0001


def alembic_config() -> Config:
    """An Alembic Config pointing at the packaged migrations."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def head() -> str:
    """The newest revision the package ships."""
    rev = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if rev is None:  # only if the package was shipped without its versions/
        raise StorageError(f"no migrations found under {MIGRATIONS_DIR}")
    return rev


def upgrade(database_url: str, revision: str = "head") -> None:
    """Migrate the database to ``revision``; concurrent callers wait for each other."""
    engine = _engine(database_url)
    try:
        with _connect(engine, database_url) as conn:
            # Session-level, so each revision can still commit on its own; NullPool
            # closes the session on exit, which releases the lock even after a failure.
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": LOCK_KEY})
            conn.commit()
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    except CommandError as exc:
        raise StorageError(f"cannot upgrade to {revision!r}: {exc}") from exc
    except SQLAlchemyError as exc:
        raise StorageError(f"migration to {revision!r} failed: {exc}") from exc
    finally:
        engine.dispose()


def current(database_url: str) -> str | None:
    """The revision the database is at, or None if it was never migrated."""
    engine = _engine(database_url)
    try:
        with _connect(engine, database_url) as conn:
            return MigrationContext.configure(conn).get_current_revision()
    except SQLAlchemyError as exc:
        raise StorageError(f"cannot read the schema revision: {exc}") from exc
    finally:
        engine.dispose()


def _engine(database_url: str) -> Engine:
    try:
        return make_engine(database_url, poolclass=NullPool)
    except (ArgumentError, ValueError) as exc:
        raise StorageError(f"invalid database URL {redact(database_url)}: {exc}") from exc


def _connect(engine: Engine, database_url: str) -> Connection:
    try:
        return engine.connect()
    except OperationalError as exc:
        raise StorageError(
            f"cannot connect to PostgreSQL at {redact(database_url)}: {exc.orig}"
        ) from exc
