"""The block engine in-process on real Redis and PostgreSQL: idempotent per (block, cycle)."""

from __future__ import annotations

import time

import psycopg
import pytest
import redis

from corec_tasks.blocks.builtin import default_registry
from corec_tasks.blocks.engine import Engine, persist_block_results
from corec_tasks.blocks.model import specs_from_config
from corec_tasks.blocks.store import BlockStore
from corec_tasks.db import libpq_url
from corec_tasks.nucleus import Nucleus
from corec_tasks.settings import Settings
from corec_tasks.storage.migrate import upgrade

pytestmark = pytest.mark.integration


@pytest.fixture()
def engine(settings: Settings, redis_client: redis.Redis) -> Engine:
    upgrade(settings.database_url)
    store = BlockStore(settings, redis_client)
    store.create(specs_from_config(settings.config.all_blocks()))
    return Engine(settings, store, default_registry())


def _rows(settings: Settings, cycle: int, ts: float) -> list[tuple[str, int]]:
    with psycopg.connect(libpq_url(settings.database_url)) as conn:
        q = "SELECT id, count(*) FROM bloques WHERE ciclo = %s AND timestamp = %s GROUP BY id"
        return conn.execute(q, (cycle, ts)).fetchall()


def test_cycle_lands_one_row_per_block_even_when_run_twice(
    engine: Engine, settings: Settings, redis_client: redis.Redis
) -> None:
    ids = engine.store.ids()
    assert len(ids) == 3  # small_config: sensor 2000/1000 -> 2 shards, seguridad 1
    ts = time.time()  # unique: other tests share this run's `bloques`
    first = engine.run_blocks(ids, cycle=1, ts=ts)
    before = [s.block.entities.to_state() for s in engine.store.load_many(ids)]
    versions = [s.version for s in engine.store.load_many(ids)]
    # A redelivery of the same cycle: same summaries, no state change, republished.
    again = engine.run_blocks(ids, cycle=1, ts=ts)
    assert again == first
    assert [s.block.entities.to_state() for s in engine.store.load_many(ids)] == before
    assert [s.version for s in engine.store.load_many(ids)] == versions
    stats = persist_block_results(settings, redis_client)
    assert stats["read"] == 6 and stats["inserted"] == 3
    assert sorted(_rows(settings, 1, ts)) == sorted((i, 1) for i in ids)
    assert persist_block_results(settings, redis_client)["read"] == 0


def test_ids_are_conserved_and_fitness_is_bounded(engine: Engine) -> None:
    ids = engine.store.ids()
    before = sorted(int(i) for s in engine.store.load_many(ids) for i in s.block.entities.ids)
    for cycle in range(1, 6):
        for summary in engine.run_blocks(ids, cycle, ts=1_700_000_000.0 + cycle):
            assert 0.0 <= summary["fitness"] <= 1.0
    after = sorted(int(i) for s in engine.store.load_many(ids) for i in s.block.entities.ids)
    assert after == before and len(set(after)) == 2500


def test_nucleus_lifecycle(settings: Settings, redis_client: redis.Redis) -> None:
    upgrade(settings.database_url)
    nucleus = Nucleus(settings)
    nucleus.initialize()
    assert set(nucleus.modules) == {"registry", "execution", "sync", "audit"}
    assert nucleus.modules["registry"].run() == {"registered": 3, "blocks": 3}
    assert nucleus.modules["registry"].run() == {"registered": 0, "blocks": 3}
    nucleus.engine.run_blocks(nucleus.store.ids(), 7, 1_700_000_100.0)
    flushed = nucleus.stop()
    assert flushed["inserted"] == 3
