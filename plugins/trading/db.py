"""Engines and sessions for the trading layer, on PostgreSQL or SQLite.

PostgreSQL gets its schema from the migrations (``corec db upgrade``); SQLite, for a
single node, from ``create_schema``. ``prepare`` does whichever applies.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Engine, event, inspect
from sqlalchemy.orm import Session, sessionmaker

from corec_tasks.db import make_engine, redact
from corec_tasks.errors import StorageError
from plugins.trading.models import TradingBase


def make_trading_engine(url: str, **kwargs: Any) -> Engine:
    """An Engine for ``url`` (``postgresql://...`` or ``sqlite:///path``)."""
    engine = make_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
    return engine


def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    # The driver's own implicit BEGIN is switched off so _sqlite_begin decides.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    # Foreign keys are off unless asked, per connection; wait for a lock, don't fail.
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


def _sqlite_begin(conn: Connection) -> None:
    # SQLite has no SELECT ... FOR UPDATE: a read-then-write transaction (a failed-login
    # count) takes the write lock up front, so two of them queue instead of one
    # losing the other's update or failing with "database is locked".
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions bound to ``engine``; objects stay readable after commit."""
    return sessionmaker(engine, expire_on_commit=False)


def create_schema(engine: Engine) -> None:
    """Create the trading tables on SQLite (idempotent). PostgreSQL uses the migrations."""
    if engine.dialect.name != "sqlite":
        raise StorageError(
            f"create_schema is for SQLite; migrate {redact(str(engine.url))} with "
            "`corec db upgrade` instead"
        )
    TradingBase.metadata.create_all(engine)


def prepare(engine: Engine) -> None:
    """Make the schema ready: create it on SQLite, check it was migrated on PostgreSQL."""
    if engine.dialect.name == "sqlite":
        create_schema(engine)
        return
    missing = set(TradingBase.metadata.tables) - set(inspect(engine).get_table_names())
    if missing:
        raise StorageError(
            f"the trading tables are missing from {redact(str(engine.url))} "
            f"({', '.join(sorted(missing))}): run `corec db upgrade` first"
        )
