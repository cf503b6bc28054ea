"""Database roles on real PostgreSQL: migrations as a non-superuser owner, the
application as a role that cannot bypass the append-only triggers, partition upkeep
through the owner's function, tables of later migrations covered by default grants."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from psycopg import errors
from sqlalchemy import text
from sqlalchemy.engine import make_url

from corec_tasks.db import libpq_url, make_engine
from corec_tasks.errors import StorageError
from corec_tasks.storage import migrate
from corec_tasks.storage.partitions import PARTITION_FUNCTION, ensure_partitions
from plugins.capital_pool.config import load_config
from plugins.capital_pool.ledger import Ledger

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def roles(servers: dict[str, str], run_id: str) -> Iterator[dict[str, str]]:
    """A database owned by a fresh NOSUPERUSER owner role, migrated by it to head with a
    fresh application role granted; both roles and the database are dropped after."""
    tag = f"{run_id}_{uuid.uuid4().hex[:6]}".lower()
    owner, app, db = f"corec_own_{tag}", f"corec_app_{tag}", f"corec_roles_{tag}"
    admin = libpq_url(servers["database_url"])
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{owner}" LOGIN NOSUPERUSER PASSWORD \'o-{tag}\'')
        conn.execute(f'CREATE ROLE "{app}" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE '
                     f"PASSWORD 'a-{tag}'")  # fmt: skip
        conn.execute(f'CREATE DATABASE "{db}" OWNER "{owner}"')
    base = make_url(servers["database_url"]).set(database=db)
    urls = {
        "owner": base.set(username=owner, password=f"o-{tag}").render_as_string(False),
        "app": base.set(username=app, password=f"a-{tag}").render_as_string(False),
        "owner_role": owner,
        "app_role": app,
    }
    try:
        yield urls
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            conn.execute(f'DROP ROLE IF EXISTS "{app}"')
            conn.execute(f'DROP ROLE IF EXISTS "{owner}"')


@pytest.fixture(scope="module")
def migrated(roles: dict[str, str]) -> dict[str, str]:
    """Migrated as the owner; the application role granted in the same run."""
    assert migrate.upgrade(roles["owner"], app_url=roles["app"]) == []
    return roles


def _app(roles: dict[str, str]) -> psycopg.Connection:
    return psycopg.connect(libpq_url(roles["app"]), autocommit=True)


def test_the_owner_is_warned_about_when_the_app_uses_it(migrated: dict[str, str]) -> None:
    warnings = migrate.upgrade(migrated["owner"])
    assert len(warnings) == 1 and "the tables' owner" in warnings[0]


@pytest.mark.parametrize(
    "statement",
    ["SET session_replication_role = replica",
     "ALTER TABLE capital_ledger DISABLE TRIGGER capital_ledger_append_only",
     "ALTER TABLE audit_log DISABLE TRIGGER ALL",
     "DROP TRIGGER audit_log_append_only ON audit_log",
     "CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql "
     "AS $$ BEGIN RETURN NULL; END $$",
     "TRUNCATE capital_ledger",
     "CREATE TABLE bloques_2040_01 PARTITION OF bloques FOR VALUES FROM (0) TO (1)",
     "ALTER TABLE bloques DETACH PARTITION bloques_default"],
)  # fmt: skip
def test_the_app_role_cannot_get_around_the_triggers(
    migrated: dict[str, str], statement: str
) -> None:
    with _app(migrated) as conn, pytest.raises(errors.InsufficientPrivilege):
        conn.execute(statement)


@pytest.mark.parametrize("table", ["capital_ledger", "audit_log"])
def test_update_and_delete_of_append_only_tables_are_refused(
    migrated: dict[str, str], table: str
) -> None:
    with _app(migrated) as conn:
        column = "id" if table == "audit_log" else "seq"
        for statement in (f"UPDATE {table} SET {column} = {column}", f"DELETE FROM {table}"):
            with pytest.raises(errors.RaiseException, match="append-only"):
                conn.execute(statement)


def test_capital_actions_work_as_the_app_role(migrated: dict[str, str]) -> None:
    ledger = Ledger(migrated["app"], load_config())
    try:
        assert ledger.contribute("alice", "4000.00", "a1", principal="operator:test")["ok"]
        assert ledger.withdraw("alice", "250.50", "a2", principal="operator:test")["ok"]
        pool, holdings, _ = ledger.snapshot()
        assert pool.equity == Decimal("3749.50") and "alice" in holdings
        assert ledger.verify() == []
        assert [e["kind"] for e in ledger.history()] == ["withdraw", "contribute"]
    finally:
        ledger.close()
    with _app(migrated) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (migrated["app_role"],)
        assert conn.execute("SELECT count(*) FROM capital_ledger").fetchone() == (2,)


def test_partition_upkeep_runs_as_the_app_role_through_the_function(
    migrated: dict[str, str],
) -> None:
    stamp = datetime(2033, 2, 10, tzinfo=UTC).timestamp()
    with _app(migrated) as conn:  # a row of a month with no partition yet: in DEFAULT
        conn.execute("INSERT INTO eventos (entry_key, timestamp) VALUES ('k', %s)", (stamp,))
    engine = make_engine(migrated["app"])
    try:
        created = ensure_partitions(engine, months_ahead=2, now=datetime(2033, 1, 5))
        assert created == [f"{t}_2033_{m:02d}" for t in ("bloques", "eventos") for m in (1, 2, 3)]
        assert ensure_partitions(engine, months_ahead=2, now=datetime(2033, 1, 5)) == []
        with engine.connect() as conn:
            owners = conn.execute(text(
                "SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class "
                "WHERE relname LIKE '%\\_2033\\_%'")).scalars().all()  # fmt: skip
            moved = conn.execute(text("SELECT count(*) FROM eventos_2033_02")).scalar_one()
            left = conn.execute(text("SELECT count(*) FROM eventos_default")).scalar_one()
        assert owners == [migrated["owner_role"]] and moved == 1 and left == 0
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("args", "message"),
    [(("capital_ledger", 2030, 1), "not a partitioned table"),
     (("bloques; DROP TABLE audit_log", 2030, 1), "not a partitioned table"),
     (("bloques", 2030, 13), "not a month"),
     (("bloques", 1999, 12), "not a month"),
     (("bloques", None, 1), "not a month")],
)  # fmt: skip
def test_the_partition_function_takes_only_known_tables_and_months(
    migrated: dict[str, str], args: tuple[object, ...], message: str
) -> None:
    with _app(migrated) as conn, pytest.raises(errors.InvalidParameterValue, match=message):
        conn.execute(f"SELECT {PARTITION_FUNCTION}(%s, %s, %s)", args)


def test_tables_of_later_migrations_are_granted_by_default(migrated: dict[str, str]) -> None:
    """A later revision (or a plugin's branch) runs as the owner and grants nothing itself."""
    with psycopg.connect(libpq_url(migrated["owner"]), autocommit=True) as conn:
        conn.execute("CREATE TABLE later_words (id serial PRIMARY KEY, word text)")
    with _app(migrated) as conn:
        conn.execute("INSERT INTO later_words (word) VALUES ('hi')")
        assert conn.execute("SELECT word FROM later_words").fetchall() == [("hi",)]
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("DROP TABLE later_words")
    # A rerun of the upgrade (any node) changes nothing and stays quiet.
    assert migrate.upgrade(migrated["owner"], app_url=migrated["app"]) == []
    # A node that only knows the app role (`make workers` runs `corec db upgrade`) at
    # head: nothing to migrate, nothing to grant, no warning.
    assert migrate.upgrade(migrated["app"], app_url=migrated["app"]) == []


def test_a_pending_migration_as_the_app_role_is_refused(migrated: dict[str, str]) -> None:
    with _app(migrated) as conn:
        version = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    with psycopg.connect(libpq_url(migrated["owner"]), autocommit=True) as conn:
        # The framework's partition function is pending (aaa's branch is applied).
        conn.execute("DELETE FROM alembic_version")
        conn.execute("INSERT INTO alembic_version VALUES ('0001'), ('0004_audit')")
    try:
        with pytest.raises(StorageError, match=r"must be owner|permission denied"):
            migrate.upgrade(migrated["app"], app_url=migrated["app"])
    finally:
        with psycopg.connect(libpq_url(migrated["owner"]), autocommit=True) as conn:
            conn.execute("DELETE FROM alembic_version")
            for row in version:
                conn.execute("INSERT INTO alembic_version VALUES (%s)", row)


def test_a_superuser_app_role_is_reported(
    migrated: dict[str, str], servers: dict[str, str]
) -> None:
    superuser = make_url(servers["database_url"]).set(
        database=make_url(migrated["owner"]).database).render_as_string(False)  # fmt: skip
    with psycopg.connect(libpq_url(superuser)) as conn:
        if not conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
                            ).fetchone()[0]:  # type: ignore[index]  # fmt: skip
            pytest.skip("the test server's admin role is not a superuser")
    warnings = migrate.upgrade(migrated["owner"], app_url=superuser)
    assert any("is a superuser" in w for w in warnings)


def test_a_bad_application_url_is_a_storage_error(migrated: dict[str, str]) -> None:
    bad = make_url(migrated["app"]).set(username="corec_no_such_role").render_as_string(False)
    with pytest.raises(StorageError, match="corec_no_such_role"):
        migrate.upgrade(migrated["owner"], app_url=bad)


def test_the_compose_init_script_creates_a_plain_login_role(
    servers: dict[str, str], run_id: str
) -> None:
    """deploy/postgres/initdb's script, run with psql as the postgres image would."""
    psql = shutil.which("psql")
    if psql is None:
        pytest.skip("psql is not installed")
    script = ROOT / "deploy/postgres/initdb/10-corec-app-role.sh"
    url = make_url(servers["database_url"])
    role = f"corec_app_init_{run_id}_{uuid.uuid4().hex[:6]}".lower()
    env = {**os.environ, "POSTGRES_USER": url.username or "postgres",
           "POSTGRES_DB": url.database or "postgres", "POSTGRES_APP_USER": role,
           "POSTGRES_APP_PASSWORD": "it's a secret", "PGPASSWORD": url.password or "",
           "PGHOST": str(url.host or url.query.get("host") or ""),
           "PGPORT": str(url.port or 5432)}  # fmt: skip
    admin = libpq_url(servers["database_url"])
    try:
        for _ in range(2):  # rerunning it by hand on an existing volume is fine
            done = subprocess.run([str(script)], env=env, capture_output=True, text=True,
                                  timeout=60)  # fmt: skip
            assert done.returncode == 0, done.stderr
        with psycopg.connect(admin) as conn:
            row = conn.execute(
                "SELECT rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolreplication, "
                "rolbypassrls FROM pg_roles WHERE rolname = %s", (role,)).fetchone()  # fmt: skip
        assert row == (True, False, False, False, False, False)
        missing = subprocess.run([str(script)], env={**env, "POSTGRES_APP_PASSWORD": ""},
                                 capture_output=True, text=True, timeout=60)  # fmt: skip
        assert missing.returncode != 0 and "POSTGRES_APP_PASSWORD" in missing.stderr
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP ROLE IF EXISTS "{role}"')


@pytest.mark.embedded
def test_the_embedded_default_runs_the_app_as_corec_app() -> None:
    from corec_tasks import services
    from corec_tasks.settings import load_settings

    # Not under pytest's tmp_path: another pytest run may chmod its root 0700, and the
    # embedded server runs as another user when started by root (as conftest does).
    data = Path(tempfile.mkdtemp(prefix="corec-test-roles-")) / "data"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env["COREC_DATA_DIR"] = str(data)
    state = services.up(data)
    try:
        assert make_url(state.database_url).username == services.APP_ROLE
        assert make_url(state.owner_database_url).username == "postgres"
        secret = data / "postgres" / "app_password"
        assert secret.stat().st_mode & 0o777 == 0o600
        wrong = make_url(state.database_url).set(password="wrong").render_as_string(False)
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(libpq_url(wrong)).close()
        corec = Path(sys.executable).with_name("corec")
        done = subprocess.run([str(corec), "db", "upgrade"], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert "warning" not in done.stdout, done.stdout
        config = ROOT / "corec_config.json"
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("COREC_DATA_DIR", str(data))
            mp.delenv("DATABASE_URL", raising=False)
            resolved = load_settings(config)
            assert resolved.database_url == state.database_url
            assert resolved.migrate_database_url == state.owner_database_url
            mp.setenv("COREC_MIGRATE_DATABASE_URL", "postgresql://o@h/d")
            assert load_settings(config).migrate_database_url == "postgresql://o@h/d"
            mp.setenv("DATABASE_URL", "postgresql://a@h/d")  # not the embedded server's
            mp.delenv("COREC_MIGRATE_DATABASE_URL")
            assert load_settings(config).migrate_database_url == "postgresql://a@h/d"
        with psycopg.connect(libpq_url(state.database_url), autocommit=True) as conn:
            assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
                                ).fetchone() == (False,)  # fmt: skip
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute("SET session_replication_role = replica")
            with pytest.raises(errors.RaiseException, match="append-only"):
                conn.execute("DELETE FROM capital_ledger")
        engine = make_engine(state.database_url)
        try:
            assert ensure_partitions(engine, months_ahead=0, now=datetime(2035, 7, 1)) == [
                "bloques_2035_07", "eventos_2035_07"]
        finally:
            engine.dispose()
        again = services.up(data)  # reused: same role, same password
        assert again.database_url == state.database_url
    finally:
        services.down(data)
        shutil.rmtree(data.parent, ignore_errors=True)
