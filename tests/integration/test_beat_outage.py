"""Beat, a worker and a producer through a Redis ``kill -9`` and restart from its AOF.

The test owns its Redis (tests/integration/own_redis.py); PostgreSQL is the run's
database, untouched. Beat must still be alive afterwards and lead again, persistence
must resume, and every entry the producer got an id for must land in ``eventos``.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psycopg
import pytest
import redis

from corec_tasks.db import libpq_url
from corec_tasks.settings import Settings, load_settings
from corec_tasks.storage.migrate import upgrade
from corec_tasks.streams.bus import StreamBus
from corec_tasks.streams.names import ALERTS
from tests.integration.own_redis import own_redis
from tests.integration.workers import worker_and_beat

pytestmark = pytest.mark.integration


def _landed(settings: Settings, ids: list[str]) -> int:
    keys = [f"{ALERTS}:{i}" for i in ids]
    with psycopg.connect(libpq_url(settings.database_url)) as conn:
        row = conn.execute(
            "SELECT count(*) FROM eventos WHERE entry_key = ANY(%s)", (keys,)
        ).fetchone()
    return int(row[0]) if row else 0


class _Producer(threading.Thread):
    """Publishes an alert every 20 ms; keeps the ids Redis acknowledged."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(daemon=True)
        self.settings = settings
        self.ids: list[str] = []
        self.failures = 0
        self.halt = threading.Event()

    def run(self) -> None:
        client = redis.Redis.from_url(self.settings.redis_url, socket_timeout=2,
                                      socket_connect_timeout=2)  # fmt: skip
        bus = StreamBus(self.settings, client)
        n = 0
        while not self.halt.is_set():
            n += 1
            try:
                self.ids.append(bus.publish(ALERTS, {"level": "info", "source": "producer",
                                                     "message": f"m{n}"}))  # fmt: skip
            except Exception:  # an outage: this one was never acknowledged
                self.failures += 1
            time.sleep(0.02)
        bus.close()  # its publishing client (publishes do not use ``client``)
        client.close()


def test_beat_worker_and_producer_survive_redis_kill_and_aof_restart(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with own_redis(tmp_path / "redis") as server:
        monkeypatch.setenv("REDIS_URL", server.url)
        monkeypatch.setenv("COREC_PERSIST_EVERY_S", "1")
        settings = load_settings()
        upgrade(settings.database_url)
        with worker_and_beat(tmp_path) as (beat, beat_log):
            producer = _Producer(settings)
            producer.start()
            time.sleep(3)
            server.kill()
            time.sleep(4)
            server.start()
            time.sleep(4)
            producer.halt.set()
            producer.join(10)
            assert producer.ids, "the producer never got an entry in"
            # Persistence resumes: every acknowledged entry lands, once.
            deadline = time.monotonic() + 60
            while _landed(settings, producer.ids) < len(producer.ids):
                assert time.monotonic() < deadline, (
                    f"{_landed(settings, producer.ids)} of {len(producer.ids)} landed")
                time.sleep(0.5)
            assert beat.poll() is None, beat_log.read_text()[-3000:]
            log = beat_log.read_text()
        assert "Redis unavailable" in log, log[-3000:]
        assert "Redis is back" in log, log[-3000:]
        # Beat still sends jobs after the outage.
        after = log.split("Redis is back", 1)[1]
        assert "Sending due task persist-streams" in after, after[-3000:]
    with psycopg.connect(libpq_url(settings.database_url)) as conn:
        row = conn.execute(
            "SELECT count(*) - count(DISTINCT entry_key) FROM eventos WHERE canal = %s",
            (ALERTS,)).fetchone()  # fmt: skip
    assert row == (0,)
