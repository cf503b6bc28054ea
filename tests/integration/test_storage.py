"""Storage on a real PostgreSQL: migrations, monthly partitions, the batch writer.

Tests share the run's database, so each one writes under its own key prefix or into
months no other test touches.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import psycopg
import pytest
import zstandard
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine

from corec_tasks.db import libpq_url, make_engine
from corec_tasks.errors import CorecError, StorageError
from corec_tasks.storage import (
    Base,
    BlockRow,
    EventRow,
    ensure_partitions,
    list_partitions,
    migrate,
    month_bounds,
    months_from,
    partition_name,
    write_blocks,
    write_events,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def db_url(database_url: str) -> str:
    """The run's database, migrated to head."""
    migrate.upgrade(database_url)
    return database_url


@pytest.fixture(scope="module")
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture()
def pg(db_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(libpq_url(db_url)) as conn:
        yield conn
        conn.rollback()


@pytest.fixture()
def check(db_url: str) -> Iterator[psycopg.Connection]:
    """An autocommit connection for assertions, so they hold no locks between reads."""
    with psycopg.connect(libpq_url(db_url), autocommit=True) as conn:
        yield conn


def _ts(year: int, month: int, offset: float = 0.0) -> float:
    """A timestamp ten days into the month, plus ``offset`` seconds."""
    return month_bounds(year, month)[0] + 10 * 86_400 + offset


def _events(prefix: str, stamps: list[float]) -> list[EventRow]:
    return [
        EventRow(
            f"{prefix}:{i}-0",
            "market_data",
            json.dumps({"price": "43123.5", "seq": i, "texto": "añadir \\ \"x\""}),
            ts,
            "corec1",
        )
        for i, ts in enumerate(stamps)
    ]


def _blocks(prefix: str, stamps: list[float]) -> list[BlockRow]:
    packed = zstandard.ZstdCompressor(level=3).compress(json.dumps([{"v": 0.5}]).encode())
    return [
        BlockRow(f"{prefix}_b", i, 2, 1000, 0.75, 0.5, 1, ts, "corec1", packed if i else None)
        for i, ts in enumerate(stamps)
    ]


def _where(pg: psycopg.Connection, table: str, key: str, prefix: str) -> dict[str, int]:
    """How many rows under ``prefix`` sit in each partition."""
    rows = pg.execute(
        f"SELECT tableoid::regclass::text, count(*) FROM {table} "
        f"WHERE {key} LIKE %s GROUP BY 1",
        (prefix + "%",),
    ).fetchall()
    return {name: n for name, n in rows}


# (1) migrations ------------------------------------------------------------------


def test_upgrade_is_idempotent_and_reaches_head(db_url: str, engine: Engine) -> None:
    migrate.upgrade(db_url)
    migrate.upgrade(db_url)
    # The run's database: other configs may have added their plugins' branches too.
    assert migrate.up_to_date(db_url)
    names = {p.name for p in list_partitions(engine)}
    for table in ("bloques", "eventos"):
        assert f"{table}_default" in names
        for year, month in months_from(datetime.now(UTC), 3):
            assert partition_name(table, year, month) in names


def test_models_match_the_migrated_schema(engine: Engine) -> None:
    with engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn,
            opts={
                "compare_type": True,
                "include_name": lambda name, kind, _p: kind != "table"
                or name in ("bloques", "eventos"),
            },
        )
        assert compare_metadata(ctx, Base.metadata) == []


def test_concurrent_upgrades_then_downgrade_and_back(fresh_db: str) -> None:
    assert migrate.current(fresh_db) is None
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: migrate.upgrade(fresh_db), range(4)))
    assert migrate.current(fresh_db) == migrate.head()

    eng = make_engine(fresh_db)
    try:
        with eng.begin() as conn:
            cfg = migrate.alembic_config()
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "base")
        assert migrate.current(fresh_db) is None
        assert list_partitions(eng) == []
    finally:
        eng.dispose()
    migrate.upgrade(fresh_db)
    assert migrate.current(fresh_db) == migrate.head()


def test_user_errors_are_storage_errors(db_url: str) -> None:
    with pytest.raises(StorageError, match="cannot connect"):
        migrate.current("postgresql://postgres@127.0.0.1:1/nowhere")
    with pytest.raises(StorageError, match="cannot upgrade"):
        migrate.upgrade(db_url, "no-such-revision")
    with pytest.raises(CorecError):
        migrate.current("mysql://localhost/x")


# (2) routing into partitions ---------------------------------------------------------


def test_rows_land_in_their_month_or_the_default(
    pg: psycopg.Connection, check: psycopg.Connection
) -> None:
    months = months_from(datetime.now(UTC), 2)
    stamps = [_ts(y, m) for y, m in months] + [_ts(2100, 1)]
    expected = {partition_name("eventos", y, m): 1 for y, m in months}
    prefix = f"route_{uuid.uuid4().hex[:8]}"

    events, blocks = _events(prefix, stamps), _blocks(prefix, stamps)
    assert write_events(pg, events) == 4
    assert write_blocks(pg, blocks) == 4
    pg.commit()

    assert _where(check, "eventos", "entry_key", prefix) == {**expected, "eventos_default": 1}
    assert _where(check, "bloques", "id", prefix) == {
        **{k.replace("eventos", "bloques"): 1 for k in expected},
        "bloques_default": 1,
    }
    got = pg.execute(
        "SELECT entry_key, canal, datos, timestamp, instance_id FROM eventos "
        "WHERE entry_key LIKE %s ORDER BY timestamp",
        (prefix + "%",),
    ).fetchall()
    assert got == [
        (e.entry_key, e.canal, json.loads(e.datos), e.timestamp, e.instance_id) for e in events
    ]
    stored = pg.execute(
        "SELECT ciclo, canal, fitness, errores, mensajes FROM bloques "
        "WHERE id = %s ORDER BY ciclo",
        (f"{prefix}_b",),
    ).fetchall()
    assert [s[:4] for s in stored] == [(i, 2, 0.75, 1) for i in range(4)]
    assert stored[0][4] is None
    assert json.loads(zstandard.ZstdDecompressor().decompress(stored[1][4])) == [{"v": 0.5}]


# (3) idempotency ----------------------------------------------------------------


def test_same_batch_twice_leaves_one_copy(
    pg: psycopg.Connection, check: psycopg.Connection
) -> None:
    prefix = f"twice_{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC).timestamp()
    events = _events(prefix, [now + i for i in range(50)])
    blocks = _blocks(prefix, [now + i for i in range(50)])

    assert write_events(pg, events) == 50
    assert write_blocks(pg, blocks) == 50
    pg.commit()
    assert write_events(pg, events) == 0
    assert write_blocks(pg, blocks) == 0
    pg.commit()
    # Half old, half new: only the new half counts.
    more = _events(prefix, [now + i for i in range(75)])
    assert write_events(pg, more[25:]) == 25
    pg.commit()

    assert sum(_where(check, "eventos", "entry_key", prefix).values()) == 75
    assert sum(_where(check, "bloques", "id", prefix).values()) == 50


def test_duplicates_inside_one_batch_and_one_transaction(
    pg: psycopg.Connection, check: psycopg.Connection
) -> None:
    prefix = f"dups_{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC).timestamp()
    events = _events(prefix, [now + i for i in range(10)])
    blocks = _blocks(prefix, [now + i for i in range(10)])

    assert write_events(pg, events + events[:3]) == 10
    assert write_blocks(pg, [*blocks, blocks[0]]) == 10
    # Again in the same transaction: the staging table must not replay the first batch.
    assert write_events(pg, events[:5]) == 0
    extra = _events(prefix + "x", [now])
    assert write_events(pg, extra + events[:1]) == 1
    pg.commit()
    assert sum(_where(check, "eventos", "entry_key", prefix).values()) == 11
    assert sum(_where(check, "bloques", "id", prefix).values()) == 10


def test_writer_leaves_commit_to_the_caller(
    pg: psycopg.Connection, check: psycopg.Connection, db_url: str
) -> None:
    prefix = f"nocommit_{uuid.uuid4().hex[:8]}"
    events = _events(prefix, [datetime.now(UTC).timestamp()])
    assert write_events(pg, events) == 1
    pg.rollback()
    assert _where(check, "eventos", "entry_key", prefix) == {}
    # An autocommit connection gets one transaction per batch.
    with psycopg.connect(libpq_url(db_url), autocommit=True) as auto:
        assert write_events(auto, events + events) == 1
        assert write_events(auto, events) == 0
    assert sum(_where(check, "eventos", "entry_key", prefix).values()) == 1


def test_bad_json_is_a_storage_error_and_rolls_back(pg: psycopg.Connection) -> None:
    prefix = f"bad_{uuid.uuid4().hex[:8]}"
    bad = EventRow(f"{prefix}:1-0", "market_data", "{not json", 1.7e9, "corec1")
    with pytest.raises(StorageError, match="eventos: batch of 1 rows rejected"):
        write_events(pg, [bad])
    pg.rollback()
    assert write_events(pg, []) == 0
    assert write_events(pg, _events(prefix, [1.7e9])) == 1
    pg.rollback()


# (4) partition upkeep -------------------------------------------------------------


def test_ensure_partitions_moves_default_rows_and_is_idempotent(
    pg: psycopg.Connection, check: psycopg.Connection, engine: Engine
) -> None:
    # 2090-03 belongs to this test alone; 2100 rows stay in DEFAULT throughout.
    prefix = f"move_{uuid.uuid4().hex[:8]}"
    stamps = [_ts(2090, 3, i) for i in range(20)] + [_ts(2100, 6)]
    assert write_events(pg, _events(prefix, stamps)) == 21
    assert write_blocks(pg, _blocks(prefix, stamps)) == 21
    pg.commit()
    assert _where(check, "eventos", "entry_key", prefix) == {"eventos_default": 21}

    when = datetime(2090, 3, 15, tzinfo=UTC)
    created = ensure_partitions(engine, months_ahead=1, now=when)
    assert created == ["bloques_2090_03", "bloques_2090_04", "eventos_2090_03", "eventos_2090_04"]
    assert ensure_partitions(engine, months_ahead=1, now=when) == []

    assert _where(check, "eventos", "entry_key", prefix) == {
        "eventos_2090_03": 20,
        "eventos_default": 1,
    }
    assert _where(check, "bloques", "id", prefix) == {"bloques_2090_03": 20, "bloques_default": 1}
    # The moved partition is a full member: its key still refuses a second copy.
    assert write_events(pg, _events(prefix, stamps)) == 0
    pg.commit()


def test_concurrent_upkeep_creates_each_partition_once(engine: Engine) -> None:
    when = datetime(2091, 7, 1, tzinfo=UTC)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: ensure_partitions(engine, 2, when), range(4)))
    created = sorted(name for names in results for name in names)
    assert created == sorted(
        partition_name(t, 2091, m) for t in ("bloques", "eventos") for m in (7, 8, 9)
    )


def test_upkeep_gives_up_on_a_busy_table(db_url: str, engine: Engine) -> None:
    when = datetime(2093, 2, 1, tzinfo=UTC)
    with psycopg.connect(libpq_url(db_url)) as reader:
        reader.execute("SELECT count(*) FROM eventos_default").fetchone()  # holds its lock
        with pytest.raises(StorageError, match="retry later"):
            ensure_partitions(engine, 0, when, tables=("eventos",), lock_timeout_s=0.2)
    assert ensure_partitions(engine, 0, when, tables=("eventos",)) == ["eventos_2093_02"]


def test_upkeep_needs_the_tables(fresh_db: str) -> None:
    eng = make_engine(fresh_db)
    try:
        with pytest.raises(StorageError, match="run `corec db upgrade` first"):
            ensure_partitions(eng)
    finally:
        eng.dispose()


# (5) listing ----------------------------------------------------------------------


def test_list_partitions_reports_bounds_and_rows(pg: psycopg.Connection, engine: Engine) -> None:
    ensure_partitions(engine, months_ahead=0, now=datetime(2092, 6, 1, tzinfo=UTC))
    prefix = f"list_{uuid.uuid4().hex[:8]}"
    assert write_events(pg, _events(prefix, [_ts(2092, 6, i) for i in range(7)])) == 7
    pg.commit()

    parts = list_partitions(engine)
    info = next(p for p in parts if p.name == "eventos_2092_06")
    assert (info.table, info.is_default, info.rows) == ("eventos", False, 7)
    assert (info.range_from, info.range_to) == month_bounds(2092, 6)
    assert next(p for p in parts if p.name == "bloques_2092_06").rows == 0

    for table in ("bloques", "eventos"):
        mine = [p for p in parts if p.table == table]
        assert mine[-1].is_default and mine[-1].name == f"{table}_default"
        assert all(p.range_from is not None for p in mine[:-1])
        starts = [p.range_from for p in mine[:-1]]
        assert starts == sorted(starts)  # type: ignore[type-var]

    estimated = {p.name: p.rows for p in list_partitions(engine, exact=False)}
    assert set(estimated) == {p.name for p in parts}
