"""Integration fixtures: a fresh migrated database per capital pool test (one pool each),
and the trading layer's databases (each trading test runs on PostgreSQL and on SQLite)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from corec_tasks.db import libpq_url
from corec_tasks.settings import Settings, load_settings
from corec_tasks.storage import migrate
from plugins.capital_pool.config import load_config
from plugins.capital_pool.service import CapitalPool


@contextmanager
def fresh_database(servers: dict[str, str], run_id: str) -> Iterator[str]:
    """A new, empty database (its URL); dropped afterwards."""
    from sqlalchemy.engine import make_url

    admin = libpq_url(servers["database_url"])
    name = f"corec_t_{run_id}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(servers["database_url"]).set(database=name).render_as_string(False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def fresh_migrated_database(servers: dict[str, str], run_id: str) -> Iterator[str]:
    """A new database migrated to head, capital_pool's branch included whatever the
    config enables (these tests drive the pool directly); its URL, dropped afterwards."""
    with fresh_database(servers, run_id) as url:
        migrate.upgrade(url)
        migrate.upgrade(url, "capital_pool@head")
        yield url


@pytest.fixture()
def fresh_db(servers: dict[str, str], run_id: str) -> Iterator[str]:
    """An empty database of its own, for tests that migrate from scratch."""
    with fresh_database(servers, run_id) as url:
        yield url


@pytest.fixture()
def capital_settings(
    servers: dict[str, str], run_id: str, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Settings]:
    """Settings whose DATABASE_URL is a fresh database migrated to head."""
    with fresh_migrated_database(servers, run_id) as url:
        monkeypatch.setenv("DATABASE_URL", url)
        yield load_settings()


@pytest.fixture()
def pool(capital_settings: Settings) -> Iterator[CapitalPool]:
    p = CapitalPool(capital_settings, load_config())
    yield p
    p.close()


@pytest.fixture(scope="session")
def migrated_database_url(database_url: str) -> str:
    """The run's PostgreSQL database at the newest migration."""
    migrate.upgrade(database_url)
    return database_url


@pytest.fixture(params=["postgresql", "sqlite"])
def trading_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database for the trading models: the run's PostgreSQL, or a fresh SQLite file."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'trading.db'}"
    url: str = request.getfixturevalue("migrated_database_url")
    return url
