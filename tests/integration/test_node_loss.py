"""Delivery when a worker node dies, at the SHIPPED defaults (30 s visibility timeout,
a 7.5 s unacked heartbeat, a 10 s restore sweep): a killed node's tasks are done by
another worker within 2 minutes, a long task on a live worker is not delivered twice,
a cycle overtaken by later ones says it is incomplete, a connection error is retried,
and a plain Celery client's ``send_task`` is served when it signs."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import psycopg
import pytest
import redis
from celery import Celery

from corec_tasks.blocks.engine import persist_block_results
from corec_tasks.db import libpq_url
from corec_tasks.nucleus import Nucleus
from corec_tasks.procs import managed, start, worker_cmd
from corec_tasks.settings import Settings, load_settings
from corec_tasks.storage.migrate import upgrade
from corec_tasks.streams.bus import StreamBus
from corec_tasks.streams.names import ALERTS, BLOCK_RESULTS
from corec_tasks.task_auth import SigningAMQP
from tests.integration.own_redis import OwnRedis
from tests.integration.test_cycle import _corec
from tests.integration.workers import Beat, celery, cycle_rows, running_workers, wait_for_nodes

pytestmark = pytest.mark.integration
DATA = Path(__file__).resolve().parents[1] / "data"
SLOW_TASKS = ("-I", "tests.integration.slow_tasks")
DELIVERY_ENV = ("COREC_VISIBILITY_TIMEOUT", "COREC_UNACKED_HEARTBEAT_S",
                "COREC_RESTORE_INTERVAL_S", "COREC_TASK_TIME_LIMIT", "COREC_BROKER_URL")


@pytest.fixture()
def defaults(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The test's settings with every delivery setting at its shipped default."""
    for name in DELIVERY_ENV:
        monkeypatch.delenv(name, raising=False)
    s = load_settings()
    assert s.env.visibility_timeout_s == 30 and s.env.heartbeat_s == 7.5
    return s


def _registered(settings: Settings) -> tuple[int, redis.Redis]:
    """The database migrated and the config's blocks registered: their count, and a
    client on the test's Redis."""
    upgrade(settings.database_url)
    nucleus = Nucleus(settings)
    nucleus.initialize()
    nucleus.modules["registry"].run()
    return nucleus.store.count(), redis.Redis.from_url(settings.redis_url)


def _task_ids(log: Path, state: str) -> set[str]:
    pattern = rf"Task corec\.blocks\.run_chunk\[([0-9a-f-]+)\] {state}"
    return set(re.findall(pattern, log.read_text(errors="replace")))


@pytest.mark.timeout(240)  # the test allows 120 s after the kill, plus its set-up
def test_killed_node_tasks_done_elsewhere_within_2_minutes_at_defaults(
    defaults: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("COREC_CONFIG", str(DATA / "node_loss_config.json"))
    settings = load_settings()
    blocks, client = _registered(settings)
    assert blocks == 200
    rescuer = managed(worker_cmd("rescuer", 2), tmp_path / "rescuer.log")
    with rescuer:
        victim = start(worker_cmd("victim", 2), tmp_path / "victim.log")
        try:
            wait_for_nodes(2, tmp_path)
            call = celery("call", "corec.blocks.cycle", "--kwargs", '{"chunk": 1}')
            assert call.returncode == 0, call.stderr
            deadline = time.monotonic() + 60
            log = tmp_path / "victim.log"
            # Mid-cycle, and the victim mid-task (received, not yet done).
            while client.xlen(settings.key(BLOCK_RESULTS)) < 20 or not (
                    _task_ids(log, "received") - _task_ids(log, "succeeded")):  # fmt: skip
                assert time.monotonic() < deadline, "the cycle never started on the victim"
                time.sleep(0.005)
        finally:
            os.killpg(victim.pid, signal.SIGKILL)  # the whole node: main process and pool
            killed = time.monotonic()
            victim.wait()
        cycle = int(client.get(settings.key("corec:cycle:seq")) or 0)
        assert client.xlen(settings.key(BLOCK_RESULTS)) < blocks, "finished before the kill"
        # The dead node's tasks sit unacknowledged; `corec status` shows them.
        status = json.loads(_corec("status", "--json").stdout)
        assert status["delivery"]["unacked"]["count"] >= 1, status["delivery"]

        landed_at = None
        beat = Beat()
        while time.monotonic() - killed < 120:
            beat.tick()
            persist_block_results(settings, client, claim_idle_ms=500)
            if cycle_rows(settings, cycle)[0] >= blocks:
                landed_at = time.monotonic() - killed
                break
            time.sleep(0.5)
        record_at = None
        while time.monotonic() - killed < 120:
            beat.tick()
            if client.hget(settings.key(f"corec:cycle:{cycle}"), "complete") == b"True":
                record_at = time.monotonic() - killed
                break
            time.sleep(0.5)
        # The victim held tasks it never reported done (one may have finished just
        # before the kill, unacknowledged): the rescuer gets every one of them.
        lost = _task_ids(tmp_path / "victim.log", "received") - _task_ids(
            tmp_path / "victim.log", "succeeded")  # fmt: skip
        while not lost <= _task_ids(tmp_path / "rescuer.log", "succeeded"):
            assert time.monotonic() - killed < 120, "the killed node's tasks never came back"
            time.sleep(0.5)
        persist_block_results(settings, client, claim_idle_ms=500)
    client.close()
    assert landed_at is not None and landed_at < 120, cycle_rows(settings, cycle)
    assert cycle_rows(settings, cycle) == (blocks, blocks)  # each block once
    assert record_at is not None, "the cycle's chord never finished"
    assert lost, "the victim held no task when killed"
    print(f"\nlanded {landed_at:.1f}s after SIGKILL; {len(lost)} tasks redelivered")


@pytest.mark.timeout(240)
def test_lost_task_message_is_rescued_at_defaults(
    defaults: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A chunk's message lost by the broker (what a worker killed, or a Redis stopped,
    between ``BRPOP`` and kombu's unacked bookkeeping leaves: the message is gone from
    the queue and from ``unacked``): beat's persister sends those blocks again once the
    cycle has stalled for COREC_CYCLE_RESCUE_S (60 s by default), the cycle is recorded
    complete, every block once, with one warning on corec_alerts."""
    assert defaults.env.cycle_rescue_s == 60
    monkeypatch.setenv("COREC_CONFIG", str(DATA / "node_loss_config.json"))
    settings = load_settings()
    blocks, client = _registered(settings)
    queue = settings.key("generic")  # where the `lento` blocks' chunks go (channel 1)
    # A dispatcher that serves every queue but the blocks': the chunks wait in theirs.
    with managed(worker_cmd("dispatcher", 1, "alerts,celery"), tmp_path / "d.log"):
        wait_for_nodes(1, tmp_path)
        call = celery("call", "corec.blocks.cycle", "--kwargs", '{"chunk": 8}')
        assert call.returncode == 0, call.stderr
        dispatched = time.monotonic()
        deadline = dispatched + 60
        while client.llen(queue) < blocks // 8:
            assert time.monotonic() < deadline, "the cycle was never dispatched"
            time.sleep(0.05)
        lost = json.loads(client.rpop(queue) or b"{}")  # the next message a worker would take
        assert lost["headers"]["task"] == "corec.blocks.run_chunk", lost
        cycle = int(client.get(settings.key("corec:cycle:seq")) or 0)
        with managed(worker_cmd("w", 2), tmp_path / "w.log"):
            beat, record = Beat(), {}
            while time.monotonic() - dispatched < 150:
                beat.tick()
                record = {k.decode(): v.decode() for k, v in
                          client.hgetall(settings.key(f"corec:cycle:{cycle}")).items()}
                if record.get("complete") == "True":
                    break
                time.sleep(0.5)
            took = time.monotonic() - dispatched
    persist_block_results(settings, client, claim_idle_ms=0)
    alerts = [a["payload"] for a in StreamBus(settings).tail(ALERTS, 50)
              if a["payload"].get("source") == "cycle.rescue"]  # fmt: skip
    client.close()
    assert record.get("complete") == "True", (record, took)
    assert record["rescued"] == "8" and record["persisted"] == str(blocks), record
    assert cycle_rows(settings, cycle) == (blocks, blocks)  # each block once
    assert 60 <= took < 100, took  # not before the broker's own redelivery had its chance
    assert len(alerts) == 1 and alerts[0]["level"] == "warning", alerts
    assert "8 of 200 blocks" in alerts[0]["message"], alerts[0]
    print(f"\nrescued {took:.1f}s after dispatch")


def test_cycle_whose_blocks_never_run_is_given_up_after_three_rescues(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """No worker serves the blocks' queue, so neither the chunks nor their rescues ever
    run: after three rescues the cycle is recorded incomplete, naming the blocks, with
    one error alert, instead of being sent again for ever. (Short delivery settings;
    the default rescue is the test above.)"""
    for name, value in (("COREC_VISIBILITY_TIMEOUT", "3"), ("COREC_UNACKED_HEARTBEAT_S", "1"),
                        ("COREC_RESTORE_INTERVAL_S", "1"), ("COREC_CYCLE_RESCUE_S", "6")):
        monkeypatch.setenv(name, value)  # fmt: skip
    settings = load_settings()
    blocks, client = _registered(settings)
    with managed(worker_cmd("dispatcher", 1, "alerts,celery"), tmp_path / "d.log"):
        wait_for_nodes(1, tmp_path)
        call = celery("call", "corec.blocks.cycle", "--kwargs", '{"chunk": 4}')
        assert call.returncode == 0, call.stderr
        started = time.monotonic()
        queues = [settings.key(q) for q in ("generic", "security")]  # channels 1 and 2
        while not (chunks := sum(client.llen(q) for q in queues)):
            assert time.monotonic() - started < 30, "the cycle was never dispatched"
            time.sleep(0.05)
        beat, record = Beat(every=2), {}
        while time.monotonic() - started < 100 and "complete" not in record:
            beat.tick()
            cycle = int(client.get(settings.key("corec:cycle:seq")) or 0)
            record = {k.decode(): v.decode() for k, v in
                      client.hgetall(settings.key(f"corec:cycle:{cycle}")).items()}
            time.sleep(0.5)
        queued = sum(client.llen(q) for q in queues)
    alerts = [a["payload"] for a in StreamBus(settings).tail(ALERTS, 50)]
    client.close()
    assert record.get("complete") == "False", record
    assert record["persisted"] == "0" and record["rescued"] == "0", record
    assert queued == 4 * chunks, (queued, chunks)  # the cycle's chunks, then 3 rescues
    rescues = [a for a in alerts if a.get("source") == "cycle.rescue"]
    assert [a["level"] for a in rescues] == ["warning"] * 3, rescues
    (final,) = [a for a in alerts if a.get("source") == "cycle"]
    assert final["level"] == "error" and len(final["never_ran"]) == blocks, final
    assert f"{blocks} never ran after every rescue" in final["message"], final


def test_long_task_not_delivered_twice_while_its_worker_lives(
    defaults: Settings, tmp_path: Path
) -> None:
    """A 45 s task (longer than the 30 s visibility timeout) on one worker while another
    sweeps every 10 s: the heartbeat keeps it, so it runs once. So does a task held for
    a 40 s countdown (an ETA, as a retry's backoff is)."""
    client = redis.Redis.from_url(defaults.redis_url)
    with managed(worker_cmd("w1", 1, "generic", *SLOW_TASKS), tmp_path / "w1.log"), \
            managed(worker_cmd("w2", 1, "generic", *SLOW_TASKS), tmp_path / "w2.log"):
        wait_for_nodes(2, tmp_path)
        sent = celery("call", "corec.test.sleep", "--args", '[45, "long"]', "--queue", "generic")
        assert sent.returncode == 0, sent.stderr
        eta = celery("call", "corec.test.sleep", "--args", '[1, "eta"]', "--queue", "generic",
                     "--countdown", "40")  # fmt: skip
        assert eta.returncode == 0, eta.stderr
        started = time.monotonic()
        done = defaults.key("test:sleep:long:done")
        seen_ages = []
        while not client.get(done):
            assert time.monotonic() - started < 80, "the long task never finished"
            if time.monotonic() - started > 32 and not seen_ages:
                delivery = json.loads(_corec("status", "--json").stdout)["delivery"]
                seen_ages.append(delivery["unacked"])
            time.sleep(0.5)
        while not client.get(defaults.key("test:sleep:eta:done")):
            assert time.monotonic() - started < 80, "the countdown task never finished"
            time.sleep(0.5)
        time.sleep(12)  # one more sweep: a duplicate would have started by now
        runs = int(client.get(defaults.key("test:sleep:long:runs")) or 0)
        eta_runs = int(client.get(defaults.key("test:sleep:eta:runs")) or 0)
    client.close()
    assert runs == 1 and eta_runs == 1, (runs, eta_runs)
    # Mid-run, status showed the task unacknowledged and freshly refreshed, not stale.
    unacked = seen_ages[0]
    assert unacked["count"] == 2 and unacked["stale"] == 0, unacked
    assert unacked["oldest_age_s"] < 15, unacked


def test_overtaken_cycle_is_incomplete_alerts_and_fails_the_cli(
    defaults: Settings, tmp_path: Path
) -> None:
    """A cycle whose block a later cycle already ran (its task came back late): the block
    is not rerun, the cycle is recorded incomplete, one alert, `corec blocks run` exits 1."""
    upgrade(defaults.database_url)
    nucleus = Nucleus(defaults)
    nucleus.initialize()
    nucleus.modules["registry"].run()
    ids = sorted(m["spec"]["id"] for m in nucleus.store.metas())
    nucleus.engine.run_blocks([ids[0]], 1000, time.time())  # "cycle 1000" ran it already
    with running_workers(["w1"], tmp_path):
        res = _corec("blocks", "run", "--json")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "incomplete" in res.stderr and "overtaken" in res.stderr, res.stderr
    (record,) = json.loads(res.stdout)
    assert record["complete"] is False and record["overtaken"] == 1
    assert record["ran"] == len(ids) - 1 == record["persisted"]
    alerts = [a["payload"] for a in StreamBus(defaults).tail(ALERTS, 50)
              if a["payload"].get("source") == "cycle"]  # fmt: skip
    assert len(alerts) == 1 and alerts[0]["level"] == "error", alerts
    assert ids[0] in alerts[0]["message"]
    cycles = json.loads(_corec("status", "--json").stdout)["delivery"]["cycles"]
    assert cycles["incomplete"] == [record["cycle"]]
    assert _corec("status").stdout.count("incomplete") == 1


def test_finish_cycle_retries_while_the_database_is_unreachable(
    defaults: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """PostgreSQL refuses the connection (the database is not there yet): the chord
    callback is retried with backoff, not failed, and completes once it is back."""
    admin = libpq_url(os.environ["DATABASE_URL"])
    late = f"{admin.rsplit('/', 1)[-1]}_late"
    url = defaults.database_url.rsplit("/", 1)[0] + f"/{late}"
    monkeypatch.setenv("DATABASE_URL", url)
    settings = load_settings()
    nucleus = Nucleus(settings)
    nucleus.initialize()
    nucleus.modules["registry"].run()
    try:
        with running_workers(["w1"], tmp_path):
            cli = subprocess.Popen([sys.executable, "-m", "corec_tasks.cli", "blocks", "run",
                                    "--json", "--timeout", "80"], env=dict(os.environ),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            deadline = time.monotonic() + 40
            while "finish_cycle" not in (log := (tmp_path / "w1.log").read_text()) or \
                    "retry" not in log:  # fmt: skip
                assert time.monotonic() < deadline, log[-3000:]
                time.sleep(0.2)
            # The database appears at once, already migrated: built aside, then renamed.
            aside = url.rsplit("/", 1)[0] + f"/{late}_aside"
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{late}_aside"')
            upgrade(aside)
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                             "WHERE datname = %s", (f"{late}_aside",))  # fmt: skip
                conn.execute(f'ALTER DATABASE "{late}_aside" RENAME TO "{late}"')
            out, err = cli.communicate(timeout=90)
        assert cli.returncode == 0, err
        (record,) = json.loads(out)
        assert record["complete"] is True and record["persisted"] == record["blocks"]
        assert "Retry in" in (tmp_path / "w1.log").read_text()
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            for name in (late, f"{late}_aside"):
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_plain_client_send_task_is_served_when_it_signs(
    capital_settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A plain Celery client (no CoreC config, no routes) with CoreC's message signing
    (``amqp=SigningAMQP``, the node's task key) sends to Celery's default queue `celery`,
    which CoreC workers serve; the same client without it is refused."""
    monkeypatch.setenv("COREC_CONFIG", str(DATA / "capital_config.json"))
    prefix = {"global_keyprefix": capital_settings.redis_prefix}
    clients = [Celery(name, broker=capital_settings.redis_url, set_as_current=False,
                      backend=capital_settings.redis_url, amqp=amqp)
               for name, amqp in (("signing", SigningAMQP), ("plain", None))]  # fmt: skip
    for client in clients:
        client.conf.broker_transport_options = prefix
        client.conf.result_backend_transport_options = prefix
    with running_workers(["cap"], tmp_path):
        status = clients[0].send_task("capital_pool.status").get(timeout=30)
        refused = clients[1].send_task("capital_pool.status")
        log = tmp_path / "cap.log"
        deadline = time.monotonic() + 30
        while "unsigned task message (not run)" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.1)
    assert isinstance(status, dict) and status, status
    assert refused.state == "PENDING"


@contextmanager
def _rabbit_vhost(name: str) -> Iterator[str]:
    """A RabbitMQ vhost of this test's own (deleted after); skips if none can be made."""
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=2).close()
    except OSError as exc:
        print(f"\nSKIP: RabbitMQ not reachable on 127.0.0.1:5672 ({exc})")
        pytest.skip(f"RabbitMQ not reachable on 127.0.0.1:5672: {exc}")
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        print("\nSKIP: rabbitmqctl not found; cannot create a vhost of this test's own")
        pytest.skip("rabbitmqctl not found; cannot create a vhost of this test's own")
    subprocess.run([ctl, "add_vhost", name], check=True, capture_output=True, timeout=60)
    try:
        subprocess.run([ctl, "set_permissions", "-p", name, "guest", ".*", ".*", ".*"],
                       check=True, capture_output=True, timeout=60)  # fmt: skip
        yield f"amqp://guest:guest@127.0.0.1:5672/{name}"
    finally:
        subprocess.run([ctl, "delete_vhost", name], capture_output=True, timeout=60)


def test_rabbitmq_broker_returns_a_killed_workers_task_at_once(
    defaults: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """COREC_BROKER_URL=amqp://...: quorum queues; a SIGKILLed worker's unacknowledged
    task is delivered to the other worker within seconds, not after a timeout."""
    client = redis.Redis.from_url(defaults.redis_url)
    runs, done = (defaults.key(f"test:sleep:rabbit:{k}") for k in ("runs", "done"))
    with _rabbit_vhost(f"corec_t_{uuid.uuid4().hex[:8]}") as url:
        monkeypatch.setenv("COREC_BROKER_URL", url)
        cmd = ("generic", *SLOW_TASKS)
        victim = start(worker_cmd("victim", 1, *cmd), tmp_path / "victim.log")
        try:
            wait_for_nodes(1, tmp_path)
            sent = celery("call", "corec.test.sleep", "--args", '[15, "rabbit"]',
                          "--queue", "generic")  # fmt: skip
            assert sent.returncode == 0, sent.stderr
            deadline = time.monotonic() + 30
            while not client.get(runs):
                assert time.monotonic() < deadline, "the task never started"
                time.sleep(0.1)
            with managed(worker_cmd("rescuer", 1, *cmd), tmp_path / "rescuer.log"):
                wait_for_nodes(2, tmp_path)
                os.killpg(victim.pid, signal.SIGKILL)
                killed = time.monotonic()
                victim.wait()
                while int(client.get(runs) or 0) < 2:
                    assert time.monotonic() - killed < 10, "not redelivered at once"
                    time.sleep(0.05)
                back_after = time.monotonic() - killed
                while not client.get(done):
                    assert time.monotonic() - killed < 60, "the redelivered task never finished"
                    time.sleep(0.2)
        finally:
            with suppress(ProcessLookupError):
                os.killpg(victim.pid, signal.SIGKILL)
            victim.wait()
        queues = subprocess.run(["rabbitmqctl", "list_queues", "-p", url.rsplit("/", 1)[1],
                                 "name", "type"], capture_output=True, text=True,
                                timeout=60).stdout  # fmt: skip
    client.close()
    assert re.search(r"generic\s+quorum", queues), queues
    print(f"\nredelivered {back_after:.2f}s after SIGKILL")


@pytest.mark.timeout(240)  # the test allows 120 s after the restart, plus its set-up
def test_redis_restart_mid_cycle_every_block_lands_once(
    defaults: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The Redis that is broker and block store restarts (5 s down) mid-cycle: chunks that
    hit the outage are retried or requeued, not failed; every block lands once."""
    server = OwnRedis(tmp_path / "redis")
    server.start()
    try:
        monkeypatch.setenv("REDIS_URL", server.url)
        monkeypatch.setenv("COREC_CONFIG", str(DATA / "node_loss_config.json"))
        settings = load_settings()
        blocks, client = _registered(settings)
        with running_workers(["r1", "r2"], tmp_path, concurrency=2):
            call = celery("call", "corec.blocks.cycle", "--kwargs", '{"chunk": 1}')
            assert call.returncode == 0, call.stderr
            deadline = time.monotonic() + 60
            while client.xlen(settings.key(BLOCK_RESULTS)) < 20:
                assert time.monotonic() < deadline, "the cycle never started"
                time.sleep(0.02)
            cycle = int(client.get(settings.key("corec:cycle:seq")) or 0)
            server.stop()  # a clean stop: clients dropped, AOF flushed
            time.sleep(5)
            server.start()
            back = time.monotonic()
            done_at = None
            beat = Beat()
            while time.monotonic() - back < 120:
                beat.tick()
                with suppress(redis.ConnectionError):
                    persist_block_results(settings, client, claim_idle_ms=500)
                    if client.hget(settings.key(f"corec:cycle:{cycle}"), "complete") == b"True":
                        done_at = time.monotonic() - back
                        break
                time.sleep(0.5)
            logs = "".join(p.read_text(errors="replace") for p in tmp_path.glob("r?.log"))
        persist_block_results(settings, client, claim_idle_ms=0)
        landed = cycle_rows(settings, cycle)
        client.close()
        assert done_at is not None, (landed, logs[-4000:])
        assert landed == (blocks, blocks)
        print(f"\ncycle complete {done_at:.1f}s after Redis came back; retried "
              f"{logs.count('Retry in')}, requeued {logs.count('celery.exceptions.Reject')}")
    finally:
        server.kill()
