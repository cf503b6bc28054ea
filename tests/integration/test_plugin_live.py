"""echo_plugin (tests/data/outside) on a real worker and beat: beat runs its entry, its
block runs in a cycle, its consumer receives its stream. Its copy here ticks every
second (the shipped 30 s schedule is checked in test_plugin_boundary)."""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from corec_tasks.db import libpq_url
from corec_tasks.procs import celery_cmd, managed, worker_cmd
from corec_tasks.settings import Settings, load_settings
from corec_tasks.storage.migrate import upgrade
from corec_tasks.streams.bus import StreamBus
from tests.integration.workers import wait_for_nodes

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture()
def fast_echo(settings: Settings, tmp_path: Path, servers: dict[str, str], run_id: str,
              monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:  # fmt: skip
    """A copy of echo_plugin that ticks and consumes every second, on a fresh database."""
    from sqlalchemy.engine import make_url

    outside = tmp_path / "outside"
    shutil.copytree(DATA / "outside" / "echo_plugin", outside / "echo_plugin")
    manifest_path = outside / "echo_plugin" / "plugin.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["beat"][0]["every"] = 1
    manifest["consumers"][0]["every_s"] = 1
    manifest_path.write_text(json.dumps(manifest))
    config = json.loads((DATA / "echo_config.json").read_text())
    config["plugins"][1]["config_path"] = str(outside / "echo_plugin" / "config.json")
    config["plugins"][1]["bloque"]["intervalo_s"] = 1
    (tmp_path / "corec_config.json").write_text(json.dumps(config))
    admin = libpq_url(servers["database_url"])
    name = f"corec_t_{run_id}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(servers["database_url"]).set(database=name).render_as_string(False)
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("COREC_PLUGIN_PATH", str(outside))
    monkeypatch.setenv("COREC_CONFIG", str(tmp_path / "corec_config.json"))
    monkeypatch.setenv("COREC_PERSIST_EVERY_S", "1")
    try:
        echo = load_settings()
        upgrade(url)
        yield echo
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _until(check, timeout: float = 60):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.3)
    raise AssertionError(f"{check.__name__} stayed false for {timeout:.0f} s")


def test_beat_block_and_consumer_on_a_real_worker(fast_echo: Settings, tmp_path: Path,
                                                   redis_client: redis.Redis) -> None:  # fmt: skip
    env = dict(os.environ)
    logs = tmp_path / "logs"
    worker = worker_cmd(f"echo-{os.getpid()}", 2)
    beat = celery_cmd("beat", "--loglevel", "INFO", "--schedule", str(tmp_path / "beat-sched"))
    url = libpq_url(fast_echo.database_url)
    with managed(worker, logs / "worker.log", env), managed(beat, logs / "beat.log", env):
        wait_for_nodes(1, logs)
        with StreamBus(fast_echo) as bus:
            bus.publish("echo_events", {"word": "ping"})

        def ticked() -> bool:
            return int(redis_client.get(fast_echo.key("echo_plugin:ticks")) or 0) >= 2

        def consumed() -> list[str]:
            with psycopg.connect(url) as conn:
                return [r[0] for r in conn.execute("SELECT word FROM echo_words")]

        def block_ran() -> int:
            with psycopg.connect(url) as conn:
                row = conn.execute("SELECT count(*) FROM bloques WHERE id = 'echo_block'")
                return int(row.fetchone()[0])  # type: ignore[index]

        _until(ticked)
        assert _until(consumed) == ["ping"]
        assert _until(block_ran) >= 1
