"""Shared fixtures: real Redis and PostgreSQL, isolated per test run.

Servers come from REDIS_URL / DATABASE_URL when set (CI points them at the
machine's servers); otherwise the embedded default is started in a temporary
directory for the session and stopped at the end. Each run gets its own
PostgreSQL database and its own Redis key prefix, and removes both.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from corec_tasks.db import libpq_url
from corec_tasks.keyfile import create_key_file
from corec_tasks.keys import all_shipped
from corec_tasks.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
#: The ledger key of every test run (``COREC_LEDGER_KEY``): fixed, for tests only.
LEDGER_KEY = "test-ledger-key-" + "5" * 48
# For the whole run, not only tests that take the ``settings`` fixture: a test that opens
# a Ledger on its own database (test_app_role) and the processes tests start read it.
os.environ.setdefault("COREC_LEDGER_KEY", LEDGER_KEY)


@pytest.fixture(scope="session")
def servers() -> Iterator[dict[str, str]]:
    """URLs of a real Redis and a real PostgreSQL server (admin database)."""
    redis_url = os.environ.get("REDIS_URL")
    database_url = os.environ.get("DATABASE_URL")
    if redis_url and database_url:
        yield {"redis_url": redis_url, "database_url": database_url}
        return
    from corec_tasks import services

    data_dir = Path(tempfile.mkdtemp(prefix="corec-test-"))
    state = services.up(data_dir)
    try:
        yield {
            "redis_url": redis_url or state.redis_url,
            # The owner: the fixtures create and drop databases.
            "database_url": database_url or state.owner_database_url,
        }
    finally:
        services.down(data_dir)


@pytest.fixture(scope="session")
def run_id() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def database_url(servers: dict[str, str], run_id: str) -> Iterator[str]:
    """A fresh PostgreSQL database for this test run, dropped at the end."""
    admin = libpq_url(servers["database_url"])
    name = f"corec_t_{run_id}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = _with_database(servers["database_url"], name)
    yield url
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _with_database(url: str, name: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def redis_prefix(servers: dict[str, str], run_id: str) -> Iterator[str]:
    """A key prefix for this run; every key under it is deleted at the end."""
    prefix = f"corec_t_{run_id}:"
    yield prefix
    client = redis.Redis.from_url(servers["redis_url"])
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        client.delete(key)
    client.close()


@pytest.fixture()
def settings(
    servers: dict[str, str],
    database_url: str,
    redis_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Settings:
    """Settings on the run's isolated database and key prefix (env set for children too).

    Each test gets its own sub-prefix, so streams and locks never leak between tests.
    The config is tests/data/small_config.json (two blocks, only the ``aaa`` plugin),
    or the file a ``@pytest.mark.config("name.json")`` marker names.
    """
    marker = request.node.get_closest_marker("config")
    config = marker.args[0] if marker else "small_config.json"
    prefix = f"{redis_prefix}{uuid.uuid4().hex[:6]}:"
    monkeypatch.setenv("REDIS_URL", servers["redis_url"])
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("COREC_REDIS_PREFIX", prefix)
    monkeypatch.setenv("COREC_DATA_DIR", str(tmp_path / ".corec"))
    monkeypatch.setenv("COREC_CONFIG", str(DATA / config))
    # The node's keys, as `corec keys init` makes them: every key any shipped plugin
    # declares, since a test may switch to another config that enables more.
    folders = [m.parent for m in (ROOT / "plugins").glob("*/plugin.json")]
    for spec in all_shipped(folders):
        create_key_file(tmp_path / ".corec" / spec.file)
    # One ledger key for the test and every process it starts (test_ledger_mac tests the
    # key file and a wrong key).
    monkeypatch.setenv("COREC_LEDGER_KEY", LEDGER_KEY)
    return load_settings()


@pytest.fixture()
def redis_client(settings: Settings) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(settings.redis_url)
    yield client
    for key in client.scan_iter(match=f"{settings.redis_prefix}*", count=1000):
        client.delete(key)
    client.close()
