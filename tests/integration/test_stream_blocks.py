"""Stream-fed blocks in-process on real Redis: each entry processed once, load measured."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from corec_tasks.blocks.builtin import default_registry
from corec_tasks.blocks.engine import Engine
from corec_tasks.blocks.model import specs_from_config
from corec_tasks.blocks.store import BlockStore, feed_group
from corec_tasks.settings import Settings, load_settings
from corec_tasks.streams.bus import StreamBus
from corec_tasks.streams.names import BLOCK_RESULTS
from plugins.trading.channels import MARKET_DATA

pytestmark = pytest.mark.integration
DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture()
def engine(
    settings: Settings, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> Engine:
    monkeypatch.setenv("COREC_CONFIG", str(DATA / "stream_config.json"))
    s = load_settings()
    store = BlockStore(s, redis_client)
    store.create(specs_from_config(s.config.all_blocks()))
    return Engine(s, store, default_registry())


def _publish(engine: Engine, n: int, start: int = 0) -> list[str]:
    bus = StreamBus(engine.settings, engine.redis)
    return bus.publish_many(MARKET_DATA, ({"symbol": "BTC", "price": 100 + (i % 7)}
                                          for i in range(start, start + n)))  # fmt: skip


def _results(engine: Engine) -> dict[tuple[str, int], dict]:
    out: dict[tuple[str, int], dict] = {}
    for _, f in engine.redis.xrange(engine.settings.key(BLOCK_RESULTS)):
        r = json.loads(f[b"d"])
        key = (r["block_id"], r["cycle"])
        assert out.get(key, r) == r  # a republished result is identical
        out[key] = r
    return out


def _feed_ids(engine: Engine) -> list[str]:
    return [m["spec"]["id"] for m in engine.store.metas() if m["spec"].get("stream")]


def test_entries_are_processed_once_and_acked_after_the_write(engine: Engine) -> None:
    feeds = _feed_ids(engine)
    assert len(feeds) == 4
    _publish(engine, 250)
    first = engine.run_blocks(engine.store.ids(), cycle=1, ts=1.0)
    assert sum(s.get("inputs") or 0 for s in first) == 250
    # A redelivered run of the same cycle republishes; it processes nothing again.
    again = engine.run_blocks(engine.store.ids(), cycle=1, ts=1.0)
    assert again == first
    key = engine.settings.key(MARKET_DATA)
    assert engine.redis.xpending(key, feed_group("feed"))["pending"] == 0
    _publish(engine, 30, 250)
    engine.run_blocks(engine.store.ids(), cycle=2, ts=2.0)
    results = _results(engine)
    assert sum(r["inputs"] for r in results.values()) == 280
    # Each payload entity processes one entry: a block runs as many entities as it got.
    for r in results.values():
        if r["block_id"] in feeds:
            assert r["selected"] == r["inputs"] <= 100


def test_entries_read_by_a_run_that_died_are_processed_by_its_rerun(engine: Engine) -> None:
    """A run that read its entries and died before its write: the rerun takes the same
    entries (its pending ones), and a lost ack after the write is redone, not rerun."""
    from corec_tasks.blocks import feed

    _publish(engine, 60)
    block = _feed_ids(engine)[0]
    (stored,) = engine.store.load_many([block])
    got = feed.take(engine.settings, engine.store, stored)  # read, then "killed"
    assert len(got.ids) == 60
    engine.run_blocks(engine.store.ids(), cycle=1, ts=1.0)
    results = _results(engine)
    assert results[(block, 1)]["inputs"] == 60
    assert sum(r["inputs"] for r in results.values()) == 60
    # The write landed but the ack was lost: the next cycle acks, never rereads.
    (stored,) = engine.store.load_many([block])
    key = engine.settings.key(MARKET_DATA)
    # Redeliver them to the block as if never acked (rewind the group, read again).
    engine.redis.xgroup_setid(key, feed_group("feed"), "0")
    engine.redis.xreadgroup(feed_group("feed"), block, {key: ">"}, count=60)
    assert engine.redis.xpending(key, feed_group("feed"))["pending"] == 60
    engine.run_blocks(engine.store.ids(), cycle=2, ts=2.0)
    assert _results(engine)[(block, 2)]["inputs"] == 0
    assert engine.redis.xpending(key, feed_group("feed"))["pending"] == 0


def test_load_is_measured_and_an_idle_fed_block_becomes_a_donor(engine: Engine) -> None:
    from corec_tasks.modules.sync import SyncModule

    ids = engine.store.ids()
    _publish(engine, 100)  # one block busy (all its 100 entities), three idle
    engine.run_blocks(ids, cycle=1, ts=1.0)
    loads = {m["spec"]["id"]: m["load"] for m in engine.store.metas()}
    fed = sorted(loads[b] for b in _feed_ids(engine))
    assert fed == [0.0, 0.0, 0.0, 1.0]
    assert loads["sensor-0000"] == 1.0  # no-input blocks run every entity (carga 1.0)
    report = SyncModule(engine.store).run()
    assert report["moves"] and all(m["src"] in _feed_ids(engine) for m in report["moves"])
    assert report["entities_before"] == report["entities_after"] == 1400
    alerts = StreamBus(engine.settings, engine.redis).tail("corec_alerts", 20)
    assert any(a["payload"]["source"] == "sync" for a in alerts)


def test_shipped_config_idle_fed_block_gives_entities_within_two_sync_periods(
    settings: Settings, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """corec_config.json as shipped: nodo_seguridad is fed by market_data. Busy, it keeps
    its entities; once its feed stops, the second sync after that gives half of them to
    a busy block, logged and alerted (cycles and sync both every 300 s by default)."""
    import logging

    from corec_tasks.modules.sync import SyncModule
    from corec_tasks.nucleus import Nucleus

    monkeypatch.setenv("COREC_CONFIG", str(DATA.parents[1] / "corec_config.json"))
    s = load_settings()
    assert s.env.sync_every_s == 300.0
    # The plugins' stream-fed blocks run more often: capital_intake 5 s, feeds_signal 60 s.
    assert {b.intervalo_s for b in s.config.bloques} == {300.0}
    nucleus = Nucleus(s)
    nucleus.initialize()
    nucleus.modules["registry"].run()
    store, engine = nucleus.store, nucleus.engine
    ids = store.ids()
    # The seed sample's 1,001,000 entities in `bloques`, plus example_plugin's,
    # capital_intake's and feeds_signal's 1,000 each.
    assert sum(b.entidades for b in s.config.bloques) == 1_001_000
    assert sum(m["num_entidades"] for m in store.metas()) == 1_004_000
    StreamBus(s, redis_client).publish_many(
        MARKET_DATA, ({"symbol": "BTC", "price": 100 + i % 5} for i in range(1000)))
    sync = SyncModule(store)
    engine.run_blocks(ids, 1, 1.0)  # busy: every entity of nodo_seguridad had input
    # (capital_intake, fed nothing, is idle from the start and may give entities away)
    assert all(m["src"] != "nodo_seguridad" for m in sync.run()["moves"])
    engine.run_blocks(ids, 2, 2.0)  # the feed stopped: idle from here
    first = sync.run()
    assert all(m["src"] != "nodo_seguridad" for m in first["moves"])
    engine.run_blocks(ids, 3, 3.0)
    with caplog.at_level(logging.INFO, logger="corec_tasks.modules.sync"):
        second = sync.run()
    moves = [m for m in second["moves"] if m["src"] == "nodo_seguridad"]
    assert moves and moves[0]["count"] == 500, second
    dst = next(m for m in store.metas() if m["spec"]["id"] == moves[0]["dst"])
    assert dst["load"] >= 0.8 and dst["fitness"] > 0.8  # a busy block received them
    assert second["entities_after"] == 1_004_000
    assert "[Sincronizacion] Entidades redirigidas" in caplog.text
    alerts = [a["payload"] for a in StreamBus(s, redis_client).tail("corec_alerts", 50)]
    assert any(a["source"] == "sync" and "nodo_seguridad" in a["message"] for a in alerts)
