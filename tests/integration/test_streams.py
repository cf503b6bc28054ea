"""Streams bus and persister on real Redis and PostgreSQL.

Every published entry must land in ``eventos`` exactly once or in the dead letter
with its reason: across consumers killed mid-batch, crashes between commit and ack,
and persisters running concurrently.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from corec_tasks.db import libpq_url
from corec_tasks.errors import StreamError
from corec_tasks.settings import Settings, load_settings
from corec_tasks.storage.migrate import upgrade
from corec_tasks.streams.bus import StreamBus
from corec_tasks.streams.names import ALERTS, DEAD_LETTER
from corec_tasks.streams.persister import GROUP, PersistStats, lag, persist_once
from plugins.trading.channels import CAPITAL_DATA, MACRO_DATA, MARKET_DATA

pytestmark = [pytest.mark.integration, pytest.mark.config("channels_config.json")]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def migrated(database_url: str) -> str:
    upgrade(database_url)
    return database_url


@pytest.fixture()
def db(migrated: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(libpq_url(migrated), autocommit=True) as conn:
        yield conn


@pytest.fixture()
def bus(settings: Settings, redis_client: redis.Redis) -> Iterator[StreamBus]:
    # redis_client (the fixture) removes this test's keys afterwards.
    with StreamBus(settings) as b:
        yield b


def reload(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    """Settings re-read after changing the environment (as a restarted worker would)."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_settings()


def landed(db: psycopg.Connection[Any], stream: str, ids: Sequence[str]) -> tuple[int, int]:
    """(rows, distinct keys) in ``eventos`` for these entry ids."""
    keys = [f"{stream}:{i}" for i in ids]
    row = db.execute(
        "SELECT count(*), count(DISTINCT entry_key) FROM eventos WHERE entry_key = ANY(%s)",
        (keys,),
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def ticks(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"symbol": "BTCUSDT", "price": 35_000.0 + i, "volume": 1.5} for i in range(start, n)]


def run_child(code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter with this test's environment."""
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


# -- (1) the bus -----------------------------------------------------------------------


def test_publish_read_ack_roundtrip(bus: StreamBus, settings: Settings) -> None:
    payloads = [{"symbol": "BTC", "price": 1.5}, {"symbol": "ETH", "price": 2}]
    first = bus.publish(MARKET_DATA, payloads[0])
    ids = [first, *bus.publish_many(MARKET_DATA, payloads[1:])]
    assert bus.ensure_group(MARKET_DATA, "g") is True
    assert bus.ensure_group(MARKET_DATA, "g") is False  # BUSYGROUP is fine

    entries = bus.read(MARKET_DATA, "g", "c1", count=10)
    assert [e.id for e in entries] == ids
    assert [json.loads(e.payload) for e in entries] == payloads
    assert all(e.stream == MARKET_DATA for e in entries)
    assert entries[0].instance_id == settings.instance_id
    assert abs(int(entries[0].fields[b"t"]) - entries[0].millis) < 5_000
    assert bus.read(MARKET_DATA, "g", "c1", count=10) == []
    assert bus.delivery_counts(MARKET_DATA, "g", ids) == {i: 1 for i in ids}
    assert bus.pending(MARKET_DATA, "g") == 2

    assert bus.ack(MARKET_DATA, "g", ids) == 2
    assert bus.pending(MARKET_DATA, "g") == 0
    assert bus.delivery_counts(MARKET_DATA, "g", ids) == {}
    tail = bus.tail(MARKET_DATA, 5)
    assert [t["id"] for t in tail] == ids[::-1]
    assert tail[0]["payload"] == payloads[-1]
    # the key really is prefixed
    assert bus.client.xlen(settings.key(MARKET_DATA)) == 2


def test_a_stream_without_groups_is_capped_near_maxlen(
    monkeypatch: pytest.MonkeyPatch, redis_client: redis.Redis
) -> None:
    s = reload(monkeypatch, COREC_STREAM_MAXLEN="100")
    with StreamBus(s) as bus:
        bus.publish_many(MARKET_DATA, ticks(2_000), chunk=500)
        for p in ticks(50):
            bus.publish(MARKET_DATA, p)
        length = bus.client.xlen(s.key(MARKET_DATA))
    # "~" trims whole radix-tree nodes (100 entries each by default), never below maxlen
    assert 100 <= length <= 250


def test_unread_entries_are_never_trimmed_and_a_backlog_alerts_once(
    monkeypatch: pytest.MonkeyPatch, redis_client: redis.Redis, db: psycopg.Connection[Any]
) -> None:
    s = reload(monkeypatch, COREC_STREAM_MAXLEN="1000")
    assert persist_once(s, streams=[MARKET_DATA]).read == 0  # the group exists; then it stops
    with StreamBus(s) as bus:
        # Twice the cap while the persister is stopped, in bulk and one by one.
        ids = bus.publish_many(MARKET_DATA, ticks(1_800), chunk=300)
        for p in ticks(200):
            ids.append(bus.publish(MARKET_DATA, p))
            bus.trim(MARKET_DATA)  # as often as anyone could
        assert bus.client.xlen(s.key(MARKET_DATA)) == 2_000
        # A second group that keeps 10 entries pending from the middle.
        bus.ensure_group(MARKET_DATA, "slow", ids[999])
        held = bus.read(MARKET_DATA, "slow", "c", count=10)
        assert [e.id for e in held] == ids[1000:1010]

        stats = persist_once(s, streams=[MARKET_DATA], max_batches=1_000)

        assert (stats.inserted, stats.dead_lettered) == (2_000, 0)
        assert landed(db, MARKET_DATA, ids) == (2_000, 2_000)
        # Trimmed (by the persister's round), but not below what "slow" still needs.
        key = s.key(MARKET_DATA)
        left = [i.decode() for i, _ in bus.client.xrange(key, ids[1000], "+")]
        assert left == ids[1000:]
        assert bus.client.xlen(key) < 2_000
        bus.ack(MARKET_DATA, "slow", ids[1000:1010])
        bus.client.xgroup_destroy(key, "slow")
        bus.trim(MARKET_DATA)
        assert 1_000 <= bus.client.xlen(key) <= 1_100  # back to the cap ("~": whole nodes)
        alerts = bus.tail(ALERTS, 10)
    # One alert for the backlog, however many trims saw it.
    assert len(alerts) == 1
    alert = alerts[0]["payload"]
    assert (alert["level"], alert["source"]) == ("warning", "streams")
    assert "market_data" in alert["message"] and "corec_persister" in alert["message"]


def test_blocking_read(bus: StreamBus) -> None:
    bus.ensure_group(MARKET_DATA, "g")
    assert bus.read(MARKET_DATA, "g", "c", count=5, block_ms=20) == []
    entry_id = bus.publish(MARKET_DATA, {"symbol": "BTC", "price": 1})
    [entry] = bus.read(MARKET_DATA, "g", "c", count=5, block_ms=20)
    assert (entry.id, json.loads(entry.payload)) == (entry_id, {"symbol": "BTC", "price": 1})


def test_entries_in_other_layouts_are_read_whole_and_persisted_if_they_carry_d(
    bus: StreamBus, settings: Settings, db: psycopg.Connection[Any]
) -> None:
    key = settings.key(MARKET_DATA)
    pretty = json.dumps({"symbol": "BTC", "price": 2}, indent=2).encode()  # has newlines
    ids = [
        bus.publish(MARKET_DATA, {"symbol": "BTC", "price": 1}),
        bus.client.xadd(key, {"d": pretty, "i": b"node\n7", "t": b"1"}).decode(),
        bus.client.xadd(key, {"d": pretty, "source": b"cli"}).decode(),  # no i / t
        bus.publish(MARKET_DATA, {"symbol": "BTC", "price": 3}),
    ]
    bus.ensure_group(MARKET_DATA, "g")
    entries = bus.read(MARKET_DATA, "g", "c", count=10)
    assert [e.id for e in entries] == ids  # id order, whatever the layout
    assert entries[1].fields[b"i"] == b"node\n7"
    assert entries[2].fields == {b"d": pretty, b"source": b"cli"}
    assert entries[2].payload == pretty

    stats = persist_once(settings, streams=[MARKET_DATA], consumer="c")
    assert (stats.inserted, stats.dead_lettered) == (4, 0)
    assert landed(db, MARKET_DATA, ids) == (4, 4)
    row = db.execute(
        "SELECT instance_id, datos FROM eventos WHERE entry_key = %s", (f"{MARKET_DATA}:{ids[1]}",)
    ).fetchone()
    assert row == ("node\n7", {"symbol": "BTC", "price": 2})
    row = db.execute(
        "SELECT instance_id FROM eventos WHERE entry_key = %s", (f"{MARKET_DATA}:{ids[2]}",)
    ).fetchone()
    assert row == (settings.instance_id,)  # no i: the persisting instance


def test_reclaim_drops_entries_trimmed_while_pending(bus: StreamBus, settings: Settings) -> None:
    ids = bus.publish_many(MARKET_DATA, ticks(5))
    bus.ensure_group(MARKET_DATA, "g")
    assert len(bus.read(MARKET_DATA, "g", "dead-consumer", count=10)) == 5
    bus.client.xdel(settings.key(MARKET_DATA), ids[0], ids[3])
    time.sleep(0.15)

    got = bus.reclaim(MARKET_DATA, "g", "rescuer", min_idle_ms=100, count=10)

    assert [e.id for e in got] == [ids[1], ids[2], ids[4]]
    bus.ack(MARKET_DATA, "g", [e.id for e in got])
    # Gone from the PEL too (Redis 7 does it; on 6.2 the bus acks them), not pending forever.
    assert bus.pending(MARKET_DATA, "g") == 0


def test_bus_errors_are_clear(bus: StreamBus) -> None:
    with pytest.raises(StreamError, match="must be a JSON object"):
        bus.publish(MARKET_DATA, [1, 2])  # type: ignore[arg-type]
    with pytest.raises(StreamError, match="cannot be sent as JSON"):
        bus.publish(MARKET_DATA, {"symbol": "BTC", "price": float("nan")})
    with pytest.raises(StreamError, match="cannot be sent as JSON"):
        bus.publish(MARKET_DATA, {"symbol": object()})
    with pytest.raises(StreamError, match="no consumer group 'nope'"):
        bus.read(MARKET_DATA, "nope", "c", count=1)


# -- (2) a consumer killed between read and ack ----------------------------------------

VICTIM = f"""
import os, signal
from corec_tasks.settings import load_settings
from corec_tasks.streams.bus import StreamBus
bus = StreamBus(load_settings())
bus.ensure_group({MARKET_DATA!r}, {GROUP!r})
entries = bus.read({MARKET_DATA!r}, {GROUP!r}, "victim", count=COUNT)
print(len(entries), flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # no ack, no cleanup: the entries stay pending
"""


def test_consumer_killed_between_read_and_ack(
    bus: StreamBus, db: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = bus.publish_many(MARKET_DATA, ticks(500))
    child = run_child(VICTIM.replace("COUNT", "200"))
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert child.stdout.strip() == "200"
    assert bus.pending(MARKET_DATA, GROUP) == 200

    s = reload(monkeypatch, COREC_STREAM_CLAIM_IDLE_MS="100", COREC_STREAM_BATCH="150")
    time.sleep(0.2)
    stats = persist_once(s, streams=[MARKET_DATA], consumer="rescuer")

    assert stats.reclaimed == 200
    assert (stats.read, stats.inserted, stats.duplicates, stats.dead_lettered) == (500, 500, 0, 0)
    assert landed(db, MARKET_DATA, ids) == (500, 500)
    assert bus.pending(MARKET_DATA, GROUP) == 0
    again = persist_once(s, streams=[MARKET_DATA], consumer="rescuer")
    assert (again.read, again.inserted) == (0, 0)


def test_entry_delivered_too_often_goes_to_dead_letter(
    bus: StreamBus, db: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = bus.publish_many(MARKET_DATA, ticks(3))
    assert run_child(VICTIM.replace("COUNT", "1")).returncode == -signal.SIGKILL
    s = reload(monkeypatch, COREC_STREAM_CLAIM_IDLE_MS="100", COREC_STREAM_MAX_DELIVERIES="1")
    time.sleep(0.2)
    stats = persist_once(s, streams=[MARKET_DATA], consumer="rescuer")

    assert (stats.reclaimed, stats.dead_lettered, stats.inserted) == (1, 1, 2)
    [dead] = bus.dead_letters(10)
    assert (dead["id"], dead["deliveries"]) == (ids[0], 2)
    assert dead["reason"] == f"delivered 2 times without being processed by {GROUP}"
    assert json.loads(dead["payload"]) == ticks(1)[0]
    assert landed(db, MARKET_DATA, ids) == (2, 2)
    assert bus.pending(MARKET_DATA, GROUP) == 0


# -- (3) invalid messages go to the dead letter; the valid ones around them land --------


def test_invalid_messages_are_dead_lettered_with_reason(
    bus: StreamBus, settings: Settings, db: psycopg.Connection[Any]
) -> None:
    good_before = bus.publish_many(MARKET_DATA, ticks(5))
    key = settings.key(MARKET_DATA)
    bad = {
        bus.publish(MARKET_DATA, {"symbol": "BTC", "price": -5}): "price: Input should be greater",
        bus.publish(MARKET_DATA, {"price": 1}): "symbol: Field required",
        # A foreign producer that ignores the wire format.
        bus.client.xadd(key, {"symbol": "BTC"}).decode(): "no 'd' field",
        # Valid JSON that PostgreSQL's numeric cannot hold (json.dumps cannot write it):
        # found by splitting the batch until the bad row is alone.
        bus.client.xadd(
            key, {"d": b'{"symbol":"BTC","price":1,"n":1e1000000}', "i": b"x", "t": b"0"}
        ).decode(): "rejected by PostgreSQL: value overflows numeric format",
    }
    negative, *_, overflow = bad
    good_after = bus.publish_many(MARKET_DATA, ticks(15, 5))

    stats = persist_once(settings, streams=[MARKET_DATA], consumer="c")

    assert (stats.read, stats.inserted, stats.dead_lettered) == (19, 15, 4)
    assert landed(db, MARKET_DATA, good_before + good_after) == (15, 15)
    assert landed(db, MARKET_DATA, list(bad)) == (0, 0)
    dead = {d["id"]: d for d in bus.dead_letters(10)}
    assert set(dead) == set(bad)
    for entry_id, reason in bad.items():
        assert reason in dead[entry_id]["reason"]
        assert dead[entry_id]["stream"] == MARKET_DATA
    assert json.loads(dead[negative]["payload"]) == {"symbol": "BTC", "price": -5}
    assert json.loads(dead[overflow]["payload"])["n"] > 1e300
    assert bus.pending(MARKET_DATA, GROUP) == 0
    assert bus.client.xlen(settings.key(DEAD_LETTER)) == 4
    # One alert for the incident, not one per entry nor per batch.
    alerts = [a["payload"] for a in bus.tail("corec_alerts", 20)]
    assert [(a["level"], a["source"], a["subject"]) for a in alerts] == [
        ("warning", "stream.dead_letter", MARKET_DATA)], alerts
    persist_once(settings, streams=[MARKET_DATA], consumer="c")
    bus.publish(MARKET_DATA, {"symbol": "BTC", "price": -6})
    assert persist_once(settings, streams=[MARKET_DATA], consumer="c").dead_lettered == 1
    assert len(bus.tail("corec_alerts", 20)) == 1  # the same incident within the hour


# -- (4) counts over thousands of mixed messages, persisters in parallel ----------------


def _mixed(bus: StreamBus, n: int) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Publish ``n`` messages over three streams, every 17th invalid."""
    good: dict[str, list[str]] = {MARKET_DATA: [], MACRO_DATA: [], CAPITAL_DATA: []}
    bad: dict[str, list[str]] = {MARKET_DATA: [], MACRO_DATA: [], CAPITAL_DATA: []}
    for i in range(n):
        invalid = i % 17 == 0
        stream, payload = [
            (MARKET_DATA, {"symbol": "ETH", "price": -1 if invalid else 2000 + i}),
            (MACRO_DATA, {"vix_price": 18.0, **({} if invalid else {"sp500_price": 4500})}),
            (CAPITAL_DATA, {"action": "contribute", "amount": 5.0 if invalid else f"{i}.00"}),
        ][i % 3]
        (bad if invalid else good)[stream].append(bus.publish(stream, payload))
    return good, bad


def test_thousands_mixed_nothing_lost_nothing_twice_with_concurrent_persisters(
    bus: StreamBus, db: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    streams = [MARKET_DATA, MACRO_DATA, CAPITAL_DATA]
    published = 3_000
    good, bad = _mixed(bus, published)
    s = reload(monkeypatch, COREC_STREAM_BATCH="100")

    results: list[PersistStats] = []
    errors: list[BaseException] = []

    start = threading.Barrier(2)

    def worker(name: str) -> None:
        try:
            start.wait(timeout=10)
            results.append(persist_once(s, streams=streams, consumer=name, max_batches=1_000))
        except BaseException as exc:  # surfaced in the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(f"node-{k}",)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    results.append(persist_once(s, streams=streams, consumer="node-0"))  # and once more

    inserted = sum(r.inserted for r in results)
    dead = sum(r.dead_lettered for r in results)
    assert sum(r.duplicates for r in results) == 0
    assert inserted + dead == published
    assert dead == sum(len(v) for v in bad.values())
    for stream in streams:
        assert landed(db, stream, good[stream]) == (len(good[stream]), len(good[stream]))
        assert landed(db, stream, bad[stream]) == (0, 0)
        assert bus.pending(stream, GROUP) == 0
    dead_ids = {(d["stream"], d["id"]) for d in bus.dead_letters(1_000)}
    assert dead_ids == {(st, i) for st, ids in bad.items() for i in ids}
    info = lag(s, streams)
    assert all(info[st]["pending"] == 0 for st in streams)
    assert sum(info[st]["length"] for st in streams) == published


# -- (5) a crash after commit but before ack inserts nothing twice ----------------------

CRASH_AFTER_COMMIT = f"""
import os, signal
from corec_tasks.settings import load_settings
from corec_tasks.streams import bus, persister
def crash(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)  # the batch is committed; the ack never happens
bus.StreamBus.settle = crash
persister.persist_once(load_settings(), streams=[{MARKET_DATA!r}], consumer="crasher")
"""


def test_crash_after_commit_before_ack_inserts_nothing_twice(
    bus: StreamBus, db: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = bus.publish_many(MARKET_DATA, ticks(300))
    child = run_child(CRASH_AFTER_COMMIT)
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert landed(db, MARKET_DATA, ids) == (300, 300)  # committed ...
    assert bus.pending(MARKET_DATA, GROUP) == 300  # ... but never acked

    s = reload(monkeypatch, COREC_STREAM_CLAIM_IDLE_MS="100")
    time.sleep(0.2)
    stats = persist_once(s, streams=[MARKET_DATA], consumer="rescuer")

    assert (stats.reclaimed, stats.inserted, stats.duplicates) == (300, 0, 300)
    assert landed(db, MARKET_DATA, ids) == (300, 300)
    assert bus.pending(MARKET_DATA, GROUP) == 0


def test_lag_of_unknown_stream_and_caller_connection(
    settings: Settings, bus: StreamBus, migrated: str
) -> None:
    assert lag(settings, ["nothing_here"]) == {
        "nothing_here": {"length": 0, "pending": 0, "lag": None, "last_id": None}
    }
    ids = bus.publish_many(MARKET_DATA, ticks(3))
    with psycopg.connect(libpq_url(migrated)) as conn:
        stats = persist_once(settings, streams=[MARKET_DATA], consumer="c", conn=conn)
        assert stats.inserted == 3
        assert not conn.closed  # the caller's connection is left open
        row = conn.execute(
            "SELECT count(*) FROM eventos WHERE entry_key = ANY(%s)",
            ([f"{MARKET_DATA}:{i}" for i in ids],),
        ).fetchone()
        assert row == (3,)
    assert lag(settings, [MARKET_DATA])[MARKET_DATA]["last_id"] == ids[-1]
