"""Cycles through real Celery worker processes: a full cycle, a worker SIGKILLed
mid-cycle, and two beats at once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from corec_tasks.blocks.engine import persist_block_results
from corec_tasks.nucleus import Nucleus
from corec_tasks.procs import celery_cmd, start, stop, worker_cmd
from corec_tasks.settings import Settings, load_settings
from corec_tasks.storage.migrate import upgrade
from tests.integration.workers import celery, cycle_rows, running_workers, wait_for_nodes

pytestmark = pytest.mark.integration
DATA = Path(__file__).resolve().parents[1] / "data"


def _corec(*args: str) -> subprocess.CompletedProcess[str]:
    """The CLI as a user types it (a fresh process: its own Celery app and settings)."""
    return subprocess.run([sys.executable, "-m", "corec_tasks.cli", *args], capture_output=True,
                          text=True, timeout=300, env=dict(os.environ))  # fmt: skip


def test_full_cycle_through_two_workers(settings: Settings, tmp_path: Path) -> None:
    upgrade(settings.database_url)
    with running_workers(["w1", "w2"], tmp_path):
        res = _corec("blocks", "run", "--cycles", "2", "--chunk", "1", "--json")
    assert res.returncode == 0, res.stderr
    records = json.loads(res.stdout)
    assert [r["ran"] for r in records] == [3, 3]
    for record in records:
        assert cycle_rows(settings, record["cycle"]) == (3, 3)


def test_worker_killed_mid_cycle_every_result_lands_once(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A shortened visibility timeout, to stay fast with the rescuer started after the
    # kill; test_node_loss.py proves the same at the shipped defaults (30 s, heartbeat).
    monkeypatch.setenv("COREC_CONFIG", str(DATA / "kill_config.json"))
    monkeypatch.setenv("COREC_VISIBILITY_TIMEOUT", "12")
    monkeypatch.setenv("COREC_RESTORE_INTERVAL_S", "1")
    settings = load_settings()
    upgrade(settings.database_url)
    nucleus = Nucleus(settings)
    nucleus.initialize()
    nucleus.modules["registry"].run()
    assert nucleus.store.count() == 40
    client = redis.Redis.from_url(settings.redis_url)

    victim = start(worker_cmd("victim", concurrency=2), tmp_path / "victim.log")
    try:
        wait_for_nodes(1, tmp_path)
        # As beat does: the cycle task runs on the worker and dispatches the chord.
        call = celery("call", "corec.blocks.cycle", "--kwargs", '{"chunk": 1}')
        assert call.returncode == 0, call.stderr
        deadline = time.monotonic() + 30
        while client.get(settings.key("corec:cycle:seq")) is None:
            assert time.monotonic() < deadline, "the cycle was never dispatched"
            time.sleep(0.05)
        time.sleep(0.6)  # a few chunks done, several in flight, most still queued
    finally:
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait()
    cycle = int(client.get(settings.key("corec:cycle:seq")) or 0)
    assert cycle_rows(settings, cycle)[0] < 40, "the cycle finished before the kill"

    with running_workers(["rescuer"], tmp_path, concurrency=2):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            persist_block_results(settings, client, claim_idle_ms=500)
            if cycle_rows(settings, cycle)[0] >= 40:
                break
            time.sleep(0.5)
    persist_block_results(settings, client, claim_idle_ms=0)
    unacked = client.hlen(settings.key("unacked"))
    client.close()
    assert cycle_rows(settings, cycle) == (40, 40), {"unacked": unacked}


def test_two_beats_run_each_job_once_per_slot(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Two beats with a 1 s persistence job for ~8 s: about 8 runs, not 16."""
    monkeypatch.setenv("COREC_PERSIST_EVERY_S", "1")
    settings = load_settings()
    upgrade(settings.database_url)
    beats = []
    with running_workers(["jobs"], tmp_path, concurrency=2):
        for i in (1, 2):
            cmd = celery_cmd("beat", "--schedule", str(tmp_path / f"beat{i}"), "--loglevel", "INFO")
            beats.append(start(cmd, tmp_path / f"beat{i}.log"))
        time.sleep(9)
        # The standby first: a leader stopping first releases its lock, and a standby
        # still alive under load would rightly take over before it stops.
        led = ["is the leader" in (tmp_path / f"beat{i}.log").read_text() for i in (1, 2)]
        for _, proc in sorted(zip(led, beats, strict=True), key=lambda pair: pair[0]):
            stop(proc)
        time.sleep(1)
    client = redis.Redis.from_url(settings.redis_url)
    runs = int(client.get(settings.key("corec:jobs:corec.streams.persist:runs")) or 0)
    client.close()
    logs = [(tmp_path / f"beat{i}.log").read_text() for i in (1, 2)]
    leaders = [log for log in logs if "is the leader" in log]
    assert len(leaders) == 1, logs
    assert 5 <= runs <= 11, runs
