"""Sync and audit on real Redis: redirection, merge and split conserve every entity,
even with cycles running at the same time; the audit raises alerts on corec_alerts."""

from __future__ import annotations

import json
import random
import threading
from types import SimpleNamespace
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import redis

from corec_tasks.blocks.builtin import default_registry
from corec_tasks.blocks.engine import Engine
from corec_tasks.blocks.model import specs_from_config
from corec_tasks.blocks.store import BlockStore, VersionConflict
from corec_tasks.config import BlockConfig
from corec_tasks.modules.audit import AuditModule
from corec_tasks.modules.sync import RedirectError, SyncModule, merge, redirect, split
from corec_tasks.settings import Settings
from corec_tasks.streams.names import ALERTS
from corec_tasks.streams.schemas import validate_payload

pytestmark = pytest.mark.integration

TS = 1_700_000_000.0


def _register(settings: Settings, *groups: tuple[str, int, int, float]) -> BlockStore:
    """Register (group, blocks, entities per block, carga) groups; return a store."""
    store = BlockStore(settings)
    configs = [BlockConfig(id=g, canal=1, entidades=n * per, entidades_por_bloque=per, carga=c)
               for g, n, per, c in groups]  # fmt: skip
    store.create(specs_from_config(configs))
    return store


def _set_fitness(store: BlockStore, fitness: dict[str, float]) -> None:
    """Set blocks' fitness with one CAS write of the loaded blocks."""
    loaded = store.load_many(list(fitness))
    for stored in loaded:
        stored.block.fitness = fitness[stored.block.id]
    assert store.write(loaded) == 0


def _census(store: BlockStore) -> npt.NDArray[np.uint32]:
    """Every entity id of every block, sorted."""
    return np.sort(np.concatenate([s.block.entities.ids for s in store.load_many(store.ids())]))


def _alerts(client: redis.Redis, settings: Settings) -> list[dict[str, Any]]:
    """The corec_alerts payloads, oldest first, each validated against the stream's schema."""
    return [validate_payload(ALERTS, f[b"d"]) for _, f in client.xrange(settings.key(ALERTS))]


# -- (1) conservation under concurrency -------------------------------------------------


def test_redirections_racing_concurrent_cycles_conserve_every_entity(
    settings: Settings, redis_client: redis.Redis
) -> None:
    store = _register(settings, ("g", 6, 200, 1.0))
    ids = store.ids()
    before = _census(store)
    assert before.size == 1200
    done = threading.Event()
    failures: list[BaseException] = []
    ran = [0, 0]
    conflicts = [0, 0]

    def cycles(worker: int) -> None:
        # Both workers run the same cycles 1..N over every block, like two Celery workers
        # given redelivered tasks; a run that keeps losing its CAS is retried, as Celery would.
        engine = Engine(settings, BlockStore(settings), default_registry())
        cycle = 1
        try:
            while not done.is_set() or cycle <= 20:
                try:
                    engine.run_blocks(ids, cycle, TS + cycle)
                except VersionConflict:
                    conflicts[worker] += 1
                    continue
                ran[worker] += 1
                cycle += 1
        except BaseException as exc:
            failures.append(exc)

    workers = [threading.Thread(target=cycles, args=(w,)) for w in (0, 1)]
    for t in workers:
        t.start()
    rng = random.Random(20240501)
    mover = BlockStore(settings)  # its own Redis client
    moved = 0
    try:
        for _ in range(100):
            sizes = {m["spec"]["id"]: m["num_entidades"] for m in mover.metas()}
            src = rng.choice([b for b in ids if sizes[b] > 1])
            dst = rng.choice([b for b in ids if b != src])
            moved += redirect(mover, src, dst, rng.randint(1, min(60, sizes[src] - 1)))
    finally:
        done.set()
        for t in workers:
            t.join(timeout=60)
    assert not failures, failures
    assert moved > 100 and min(ran) >= 20
    after = _census(store)
    assert after.size == before.size  # the same count ...
    assert np.array_equal(after, before)  # ... the same ids, each exactly once
    metas = store.metas()
    assert sum(m["num_entidades"] for m in metas) == 1200
    assert {m["spec"]["id"]: m["num_entidades"] for m in metas} == {
        s.block.id: len(s.block.entities) for s in store.load_many(ids)
    }


# -- (2) redirect, merge, split ---------------------------------------------------------


def test_redirect_moves_entities_with_their_state(
    settings: Settings, redis_client: redis.Redis
) -> None:
    store = BlockStore(settings)
    store.create(specs_from_config([
        BlockConfig(id="a", canal=1, entidades=100), BlockConfig(id="b", canal=2, entidades=50),
    ]))  # fmt: skip
    src = store.load("a")
    ent = src.block.entities
    ent.value[:] = np.linspace(0, 1, 100, dtype=np.float32)
    ent.active[::3] = False
    ent.failures[::3] = 1
    assert store.write([src]) == 0
    tail = ent.take(slice(70, 100))

    assert redirect(store, "a", "b", 30) == 30
    a, b = store.load_many(["a", "b"])
    assert len(a.block.entities) == 70 and len(b.block.entities) == 80
    arrived = b.block.entities.take(slice(50, 80))
    for field in ("ids", "value", "active", "failures"):
        assert np.array_equal(getattr(arrived, field), getattr(tail, field)), field
    assert (arrived.channel == 2).all()  # an entity's channel is its block's
    assert store.metas(["b"])[0]["num_entidades"] == 80


def test_redirect_refuses_what_it_cannot_do(settings: Settings, redis_client: redis.Redis) -> None:
    store = _register(settings, ("g", 2, 10, 1.0))
    a, b = store.ids()
    before = _census(store)
    with pytest.raises(RedirectError, match="itself"):
        redirect(store, a, a, 1)
    with pytest.raises(RedirectError, match=">= 1"):
        redirect(store, a, b, 0)
    with pytest.raises(RedirectError, match="leave it none"):
        redirect(store, a, b, 10)
    with pytest.raises(RedirectError, match="not registered"):
        redirect(store, "nope", b, 1)
    with pytest.raises(RedirectError, match="not registered"):
        merge(store, a, "nope")
    # A manual redirect may overfill the receiver (the next sync run splits it).
    assert redirect(store, a, b, 9) == 9
    assert np.array_equal(_census(store), before)


def test_merge_and_split_conserve_ids(settings: Settings, redis_client: redis.Redis) -> None:
    store = _register(settings, ("g", 3, 100, 1.0))
    Engine(settings, store, default_registry()).run_blocks(store.ids(), 1, TS)
    before = _census(store)
    a, b, c = store.ids()

    assert merge(store, a, b) == 100
    assert store.ids() == [a, c]
    assert len(store.load(a).block.entities) == 200
    assert np.array_equal(_census(store), before)

    new = split(store, a)
    assert new == f"{a}.1" and store.ids() == [a, c, new]
    parent, child = store.load_many([a, new])
    assert len(parent.block.entities) == len(child.block.entities) == 100
    assert child.block.spec.group == parent.block.spec.group == "g"
    assert child.block.spec.max_entities == parent.block.spec.max_entities
    # The new block does not rerun (or republish) the cycle its entities already ran in.
    assert child.last_cycle == 1 and child.last_result is None
    assert np.array_equal(_census(store), before)
    assert split(store, a) == f"{a}.2"
    assert np.array_equal(_census(store), before)

    summaries = Engine(settings, store, default_registry()).run_blocks(store.ids(), 1, TS)
    assert {s["block_id"] for s in summaries} == {a, c}  # republished, not rerun
    summaries = Engine(settings, store, default_registry()).run_blocks(store.ids(), 2, TS)
    assert {s["block_id"] for s in summaries} == {a, c, new, f"{a}.2"}


# -- (3) the sync module ----------------------------------------------------------------


def _sync(store: BlockStore, settings: Settings) -> dict[str, Any]:
    module = SyncModule()
    module.initialize(SimpleNamespace(settings=settings, store=store))
    return module.run()


def test_sync_moves_entities_from_an_idle_weak_block_to_a_strong_one(
    settings: Settings, redis_client: redis.Redis
) -> None:
    store = _register(settings, ("idle", 1, 200, 0.1), ("busy", 2, 200, 1.0))
    _set_fitness(store, {"idle": 0.1, "busy-0000": 0.95, "busy-0001": 0.5})
    before = _census(store)

    report = _sync(store, settings)
    assert report["moves"] == [{"src": "idle", "dst": "busy-0000", "count": 100}]
    assert report["merges"] == report["splits"] == report["skipped"] == []
    assert report["entities_before"] == report["entities_after"] == 600
    sizes = {m["spec"]["id"]: m["num_entidades"] for m in store.metas()}
    assert sizes == {"idle": 100, "busy-0000": 300, "busy-0001": 200}
    assert np.array_equal(_census(store), before)


def test_sync_merges_idle_blocks_and_splits_oversized_ones(
    settings: Settings, redis_client: redis.Redis
) -> None:
    store = _register(settings, ("idle", 2, 100, 0.1), ("busy", 2, 100, 1.0))
    # No receiver (fitness > 0.8; a block that never ran has 1.0, so set them all).
    _set_fitness(store, {"idle-0000": 0.1, "idle-0001": 0.2, "busy-0000": 0.5, "busy-0001": 0.5})
    redirect(store, "busy-0001", "busy-0000", 99)
    redirect(store, "idle-0001", "busy-0000", 2)  # busy-0000: 201 > max_entities 200
    before = _census(store)

    report = _sync(store, settings)
    assert report["splits"] == [{"block_id": "busy-0000", "new_id": "busy-0000.1"}]
    assert report["merges"] == [{"keep": "idle-0000", "absorb": "idle-0001"}]
    assert report["moves"] == []
    assert report["entities_before"] == report["entities_after"] == 400
    sizes = {m["spec"]["id"]: m["num_entidades"] for m in store.metas()}
    assert sizes == {"idle-0000": 198, "busy-0000": 101, "busy-0001": 1, "busy-0000.1": 100}
    assert np.array_equal(_census(store), before)


# -- (4) the audit ----------------------------------------------------------------------


def _audited_store(settings: Settings, blocks: int = 40) -> BlockStore:
    store = _register(settings, ("sensor", blocks, 100, 1.0))
    engine = Engine(settings, store, default_registry())
    for cycle in (1, 2, 3):
        engine.run_blocks(store.ids(), cycle, TS + cycle)
    return store


def _audit(store: BlockStore, settings: Settings, **kw: Any) -> dict[str, Any]:
    module = AuditModule(**kw)
    module.initialize(SimpleNamespace(settings=settings, store=store))
    return module.run()


@pytest.mark.parametrize("contamination", ["auto", 0.05])
def test_audit_alerts_on_an_injected_anomalous_block(
    settings: Settings, redis_client: redis.Redis, contamination: Any
) -> None:
    store = _audited_store(settings)
    assert _audit(store, settings, contamination=contamination)["anomalies"] == []
    assert _alerts(redis_client, settings) == []  # healthy blocks: no alert

    victim = store.load(store.ids()[7])
    assert victim.last_result is not None
    selected = victim.last_result["selected"]
    victim.last_result = dict(victim.last_result, errors=selected * 7 // 10, fitness=0.1)
    victim.block.fitness = 0.1
    assert store.write([victim]) == 0

    report = _audit(store, settings, contamination=contamination)
    assert report["checked"] == 40 and report["alerts_published"] == 1
    assert [a["block_id"] for a in report["anomalies"]] == [victim.block.id]
    (alert,) = _alerts(redis_client, settings)
    assert alert["level"] == "warning" and alert["source"] == "audit"
    assert alert["block_id"] == victim.block.id and alert["cycle"] == 3
    assert alert["message"].startswith(f"{victim.block.id} looks anomalous: ")
    assert "error rate 0.700 vs median 0.0" in alert["message"]
    assert 0.5 < alert["score"] <= 1.0

    # The same results audited again: the anomaly is reported, but not alerted twice.
    again = _audit(store, settings, contamination=contamination)
    assert len(again["anomalies"]) == 1 and again["alerts_published"] == 0
    assert len(_alerts(redis_client, settings)) == 1


def test_audit_checks_a_small_group_against_its_own_history(
    settings: Settings, redis_client: redis.Redis
) -> None:
    store = _audited_store(settings, blocks=5)
    report = _audit(store, settings)
    assert report["checked"] == 0 and report["checked_own_history"] == 5
    assert report["anomalies"] == [] and _alerts(redis_client, settings) == []
    victim = store.load(store.ids()[0])
    assert victim.last_result is not None
    victim.last_result = dict(victim.last_result, errors=victim.last_result["selected"])
    assert store.write([victim]) == 0
    report = _audit(store, settings)
    assert report["skipped_peers"] == {"sensor_swarm": 5}
    assert [a["block_id"] for a in report["anomalies"]] == [victim.block.id]
    assert "error rate 1.000 vs its own mean" in report["anomalies"][0]["reason"]
    (alert,) = _alerts(redis_client, settings)
    assert alert["source"] == "audit" and alert["block_id"] == victim.block.id
    assert _audit(store, settings)["alerts_published"] == 0  # once per (block, cycle)
    assert json.dumps(report)  # the report travels as a Celery result
