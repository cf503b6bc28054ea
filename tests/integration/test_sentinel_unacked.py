"""A worker holding an unacknowledged task when the Sentinel master dies reconnects.

The path of corec_tasks/broker_transport.py: the worker runs one long task (delivered,
not acknowledged) and waits on BRPOP for the next when the master is killed. Celery
collects the broken connection, then closes it; that close restores the unacknowledged
task through a detached transport, which in kombu's own Sentinel channel raises
``AttributeError`` and stops the worker. The servers are the test's own (a master, a
replica, three sentinels); the delivery settings are the shipped defaults.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from corec_tasks.procs import managed, worker_cmd
from corec_tasks.redis_conn import redis_client
from corec_tasks.settings import Settings, load_settings
from corec_tasks.unacked import unacked_stats
from tests.integration.own_redis import OwnRedis, own_redis
from tests.integration.test_node_loss import SLOW_TASKS
from tests.integration.test_sentinel import MASTER, _master_port, _ready, _sentinels, _until
from tests.integration.workers import celery, wait_for_nodes

pytestmark = pytest.mark.integration


def _sleep(seconds: float, name: str) -> None:
    call = celery("call", "corec.test.sleep", "--args", f'[{seconds}, "{name}"]',
                  "--queue", "generic")  # fmt: skip
    assert call.returncode == 0, call.stderr


@pytest.mark.timeout(300)
def test_worker_holding_an_unacked_task_reconnects_after_failover(
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
            monkeypatch.setenv(
                "COREC_REDIS_SENTINELS", ",".join(f"127.0.0.1:{p}" for p in sentinel_ports)
            )
            monkeypatch.setenv("COREC_REDIS_MASTER", MASTER)
            settings = load_settings()
            log = tmp_path / "w1.log"
            # Two pool processes: one runs the long task, the consumer waits on BRPOP.
            worker = worker_cmd("w1", 2, "generic", *SLOW_TASKS)
            with managed(worker, log) as proc:
                wait_for_nodes(1, tmp_path)
                client = redis_client(settings)

                def count(name: str, what: str) -> int:
                    return int(client.get(settings.key(f"test:sleep:{name}:{what}")) or 0)

                _sleep(8, "held")
                _until(lambda: count("held", "runs") >= 1, 30, "the long task to start")
                stats = unacked_stats(client, settings.key(""), settings.env.visibility_timeout_s)
                assert stats["count"] == 1, stats
                master.kill()
                _until(lambda: _master_port(sentinel_ports[0]) == replica.port, 60,
                       "the sentinels to promote the replica")  # fmt: skip
                master.start()  # back as the new master's replica
                for i in range(3):
                    _sleep(0.1, f"after{i}")
                # The worker consumes again at once, and the task it held is requeued by
                # the sweep (visibility timeout 30 s, sweep every 10 s) and runs again.
                names = ["after0", "after1", "after2", "held"]
                deadline = time.monotonic() + 120
                while not all(count(name, "done") >= 1 for name in names):
                    assert proc.poll() is None, f"the worker stopped: {log.read_text()[-4000:]}"
                    assert time.monotonic() < deadline, (
                        f"{[(n, count(n, 'done')) for n in names]}; "
                        f"worker log: {log.read_text()[-4000:]}"
                    )
                    time.sleep(0.5)
                assert proc.poll() is None
                client.close()
            assert "Unrecoverable error" not in log.read_text()
    finally:
        master.kill()
