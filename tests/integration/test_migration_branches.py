"""Plugin tables on their plugins' Alembic branches, on a real PostgreSQL: a plugin
disabled gets no tables, enabled later gets them; capital_pool alone brings the aaa
tables it writes to; a database upgraded by the old linear chain (one row in
alembic_version) is restamped and upgraded without creating anything twice."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import psycopg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import make_url

from corec_tasks.db import libpq_url, make_engine
from corec_tasks.runtime import reset as reset_runtime
from corec_tasks.storage import migrate
from plugins.capital_pool.models import CapitalBase
from plugins.trading.models import TradingBase

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests/data"
CAPITAL = {"name": "capital_pool", "enabled": True,
           "config_path": str(ROOT / "plugins/capital_pool/capital_pool.yaml")}  # fmt: skip


def _use(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, plugins: list[dict[str, object]]
         ) -> None:  # fmt: skip
    """Point COREC_CONFIG at small_config.json with exactly ``plugins``."""
    config = json.loads((DATA / "small_config.json").read_text())
    config["plugins"] = plugins
    path = tmp_path / f"config_{uuid.uuid4().hex[:6]}.json"
    path.write_text(json.dumps(config))
    monkeypatch.setenv("COREC_CONFIG", str(path))
    reset_runtime()


def _tables(url: str) -> set[str]:
    with psycopg.connect(libpq_url(url)) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {str(r[0]) for r in rows}


def _rows(url: str) -> set[str]:
    with psycopg.connect(libpq_url(url)) as conn:
        return {str(r[0]) for r in conn.execute("SELECT version_num FROM alembic_version")}


def _schema(url: str) -> list[tuple[str, ...]]:
    """Every table, column, constraint, index and trigger: to prove nothing was made twice."""
    with psycopg.connect(libpq_url(url)) as conn:
        out = conn.execute(
            "SELECT 'c', table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'public' UNION ALL "
            "SELECT 'k', conrelid::regclass::text, conname, contype::text FROM pg_constraint "
            "WHERE connamespace = 'public'::regnamespace UNION ALL "
            "SELECT 'i', tablename, indexname, '' FROM pg_indexes WHERE schemaname = 'public' "
            "UNION ALL SELECT 't', tgrelid::regclass::text, tgname, '' FROM pg_trigger "
            "WHERE NOT tgisinternal UNION ALL "
            "SELECT 'f', proname, '', '' FROM pg_proc WHERE pronamespace = 'public'::regnamespace"
        ).fetchall()
    return sorted(tuple(str(c) for c in row) for row in out)


CAPITAL_TABLES = {"pool_state", "capital_ledger", "capital_statements", "capital_pool_days"}
HEADS = "0005_users_guard, 0007_ledger_mac, app_role"
AAA_TABLES = {"users", "sessions", "audit_log", "portfolios", "orders", "positions"}


def test_a_disabled_plugin_gets_no_tables_and_enabled_later_gets_them(
    settings: object, fresh_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _use(monkeypatch, tmp_path, [{"name": "aaa", "enabled": True}, {**CAPITAL, "enabled": False}])
    migrate.upgrade(fresh_db)
    assert _rows(fresh_db) == {"app_role", "0005_users_guard"}
    assert _tables(fresh_db) >= AAA_TABLES and not CAPITAL_TABLES & _tables(fresh_db)
    _use(monkeypatch, tmp_path, [{"name": "aaa", "enabled": True}, CAPITAL])
    migrate.upgrade(fresh_db)
    assert _tables(fresh_db) >= CAPITAL_TABLES
    assert migrate.current(fresh_db) == migrate.head() == HEADS


def test_capital_pool_alone_brings_the_aaa_tables_it_writes_to(
    settings: object, fresh_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """capital_pool's 0004 depends on aaa's 0004_audit: the audit_log it writes exists
    and is append-only although aaa is not enabled."""
    _use(monkeypatch, tmp_path, [CAPITAL])
    migrate.upgrade(fresh_db)
    assert _tables(fresh_db) >= (CAPITAL_TABLES | AAA_TABLES)
    with psycopg.connect(libpq_url(fresh_db)) as conn, pytest.raises(
        psycopg.errors.RaiseException, match="append-only"
    ):
        conn.execute("DELETE FROM audit_log")
    assert migrate.up_to_date(fresh_db)


def test_no_plugin_branch_leaves_only_the_framework(
    settings: object, fresh_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _use(monkeypatch, tmp_path, [])
    migrate.upgrade(fresh_db)
    assert _rows(fresh_db) == {"app_role"}
    assert not (CAPITAL_TABLES | AAA_TABLES) & _tables(fresh_db)


def test_autogenerate_compares_the_enabled_plugins_tables(
    settings: object, fresh_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The environment's target metadata holds aaa's and capital_pool's models (their
    manifests' ``metadata``): the migrated schema matches, no table is to be dropped."""
    from corec_tasks.storage import autogen

    _use(monkeypatch, tmp_path, [{"name": "aaa", "enabled": True}, CAPITAL])
    migrate.upgrade(fresh_db)
    metadata = autogen.target_metadata()
    assert TradingBase.metadata in metadata and CapitalBase.metadata in metadata
    eng = make_engine(fresh_db)
    try:
        with eng.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={
                "compare_type": True, "include_object": autogen.include_object})  # fmt: skip
            assert compare_metadata(ctx, metadata) == []
    finally:
        eng.dispose()


# The old linear chain ------------------------------------------------------------------


def test_the_legacy_map_follows_the_old_order() -> None:
    """Each old head means everything at or below it: the rows that say so today."""
    script = ScriptDirectory.from_config(migrate.alembic_config())
    expected = {
        "0001": None,  # the same revision in both
        "0002": None,  # capital_pool's root, on 0001: it meant that already
        "0003": ["0002", "0003"],
        "0004": None,  # 0004 stands on 0002 and (depends_on) 0004_audit, 0003
        "0005_app_role": ["0004", "app_role"],
        "0006_settlement": ["0006_settlement", "app_role"],
    }
    for old, rows in expected.items():
        assert migrate.legacy_equivalent(script, [old]) == rows, old
    # a row of another branch is kept; today's rows are left alone
    assert migrate.legacy_equivalent(script, ["0003", "app_role"]) == ["0002", "0003", "app_role"]
    assert migrate.legacy_equivalent(script, ["0006_settlement", "app_role"]) is None
    assert migrate.legacy_equivalent(script, ["0004_audit", "app_role"]) is None
    assert migrate.legacy_equivalent(script, ["app_role"]) is None
    # a lone 0006_settlement without the partition function: today's graph, left alone
    assert migrate.legacy_equivalent(script, ["0006_settlement"], False) is None


def _old_code_upgrade(url: str, old: str) -> None:
    """Migrate ``url`` to ``old`` with the old linear chain's own scripts."""
    cfg = Config()
    cfg.set_main_option("script_location", str(migrate.MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("version_locations", str(DATA / "legacy_chain"))
    eng = make_engine(url)
    try:
        with eng.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, old)
    finally:
        eng.dispose()


def _reference_schema(url: str) -> list[tuple[str, ...]]:
    """The schema today's code gives a fresh database, beside ``url``'s."""
    name = f"{make_url(url).database}_ref"
    reference = make_url(url).set(database=name).render_as_string(False)
    admin = libpq_url(make_url(url).set(database="postgres").render_as_string(False))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        migrate.upgrade(reference)
        return _schema(reference)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.parametrize("old", ["0002", "0003", "0004", "0005_app_role", "0006_settlement"])
def test_a_database_of_the_old_linear_chain_is_restamped_and_upgraded(
    old: str, settings: object, fresh_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Built by the old code (tests/data/legacy_chain) up to ``old``, a member in the
    ledger: upgrade keeps the row, creates nothing twice, ends at today's heads, and the
    schema is exactly the one a fresh database gets today."""
    _use(monkeypatch, tmp_path, [{"name": "aaa", "enabled": True}, CAPITAL])
    _old_code_upgrade(fresh_db, old)
    assert _rows(fresh_db) == {old}
    with psycopg.connect(libpq_url(fresh_db)) as conn:
        conn.execute("INSERT INTO capital_members (user_id, units, contributed, withdrawn) "
                     "VALUES ('alice', 10, 10, 0)")  # fmt: skip

    migrate.upgrade(fresh_db)
    migrate.upgrade(fresh_db)  # and again: nothing left to do

    assert migrate.current(fresh_db) == migrate.head() == HEADS
    with psycopg.connect(libpq_url(fresh_db)) as conn:
        assert conn.execute("SELECT user_id, units FROM capital_members").fetchall() == [
            ("alice", 10)]  # fmt: skip
    after = _schema(fresh_db)
    assert len(after) == len(set(after))
    assert after == _reference_schema(fresh_db)


def test_an_old_database_upgrades_with_capital_pool_disabled(
    settings: object, fresh_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its capital tables stay as they are; only the enabled branches move on."""
    _use(monkeypatch, tmp_path, [{"name": "aaa", "enabled": True}, {**CAPITAL, "enabled": False}])
    _old_code_upgrade(fresh_db, "0006_settlement")
    migrate.upgrade(fresh_db)
    assert _rows(fresh_db) == {"0006_settlement", "0005_users_guard", "app_role"}
    assert migrate.up_to_date(fresh_db)
