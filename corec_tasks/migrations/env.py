"""Alembic environment: runs on the connection ``storage.migrate`` hands over.

Without one (the ``alembic`` command line), it connects to ``sqlalchemy.url`` from the
Alembic config, or else to the deployment's owner URL from the CoreC settings
(COREC_MIGRATE_DATABASE_URL, default DATABASE_URL).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection
from sqlalchemy.pool import NullPool

from corec_tasks.db import make_engine, sqlalchemy_url
from corec_tasks.runtime import get_settings
from corec_tasks.storage.autogen import include_object, target_metadata

config = context.config


def _database_url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    return get_settings().migrate_database_url


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata(),
        include_object=include_object,
        # One transaction per revision: a failed revision leaves the previous ones applied.
        transaction_per_migration=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_offline() -> None:
    """Print the SQL instead of running it (``alembic upgrade --sql``)."""
    context.configure(
        url=sqlalchemy_url(_database_url()),
        target_metadata=target_metadata(),
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    """Run on the handed-over connection, or on a fresh one."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(_database_url(), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
