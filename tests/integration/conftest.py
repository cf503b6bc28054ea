"""Fixtures of the trading layer: each test runs on PostgreSQL and on SQLite."""

from __future__ import annotations

from pathlib import Path

import pytest

from corec_tasks.storage import migrate


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
