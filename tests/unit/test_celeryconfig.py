"""The at-least-once settings DESIGN.md requires, as build(settings) gives them to the app."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from corec_tasks.celeryconfig import build
from corec_tasks.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"


@pytest.fixture()
def conf(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> SimpleNamespace:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1/test")
    monkeypatch.setenv("COREC_CONFIG", str(DATA / "small_config.json"))
    monkeypatch.setenv("COREC_REDIS_PREFIX", "p1:")
    monkeypatch.setenv("COREC_TASK_TIME_LIMIT", "600")
    monkeypatch.setenv("COREC_DATA_DIR", str(tmp_path))
    return SimpleNamespace(**build(load_settings()))


def test_at_least_once(conf: SimpleNamespace) -> None:
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.worker_cancel_long_running_tasks_on_connection_loss
    assert conf.task_time_limit == 600
    for opts in (conf.broker_transport_options, conf.result_backend_transport_options):
        assert opts["global_keyprefix"] == "p1:"
    assert conf.result_expires > 0
    assert conf.result_backend_always_retry and 0 < conf.result_backend_max_retries < 100


def test_short_visibility_timeout_with_heartbeat(conf: SimpleNamespace) -> None:
    """A dead node's tasks come back within a minute; a live worker's heartbeat
    refreshes its tasks 4 times per timeout, so a long task is not redelivered."""
    opts = conf.broker_transport_options
    assert opts["visibility_timeout"] == 30
    assert opts["unacked_restore_interval"] == 10 and opts["unacked_restore_throttle"] == 1
    assert load_settings().env.heartbeat_s == 7.5


def test_visibility_timeout_must_exceed_heartbeat(monkeypatch: pytest.MonkeyPatch) -> None:
    from corec_tasks.errors import ConfigurationError
    from corec_tasks.settings import load_env

    monkeypatch.setenv("COREC_VISIBILITY_TIMEOUT", "20")
    monkeypatch.setenv("COREC_UNACKED_HEARTBEAT_S", "10")
    with pytest.raises(ConfigurationError, match="COREC_VISIBILITY_TIMEOUT"):
        load_env()
    monkeypatch.setenv("COREC_UNACKED_HEARTBEAT_S", "5")
    assert load_env().visibility_timeout_s == 20


def test_cycle_rescue_waits_for_the_brokers_own_redelivery(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """COREC_CYCLE_RESCUE_S defaults to 60 s (30 s visibility + 10 s sweep + 7.5 s
    heartbeat, plus 10 s), follows a longer visibility timeout, and is refused at or
    under the broker's redelivery time, naming the key."""
    from corec_tasks.errors import ConfigurationError
    from corec_tasks.settings import load_env

    for name in ("COREC_VISIBILITY_TIMEOUT", "COREC_UNACKED_HEARTBEAT_S",
                 "COREC_RESTORE_INTERVAL_S", "COREC_CYCLE_RESCUE_S"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    assert load_env().cycle_rescue_s == 60
    monkeypatch.setenv("COREC_VISIBILITY_TIMEOUT", "120")
    assert load_env().cycle_rescue_s == 120 + 10 + 30 + 10
    monkeypatch.setenv("COREC_CYCLE_RESCUE_S", "150")
    with pytest.raises(ConfigurationError, match="COREC_CYCLE_RESCUE_S"):
        load_env()
    monkeypatch.setenv("COREC_CYCLE_RESCUE_S", "170")
    assert load_env().cycle_rescue_s == 170
    monkeypatch.setenv("COREC_CYCLE_RESCUE_S", "ten")
    with pytest.raises(ConfigurationError, match="COREC_CYCLE_RESCUE_S"):
        load_env()


def test_rabbitmq_broker(conf: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    """COREC_BROKER_URL=amqp://... makes RabbitMQ the broker with quorum queues; Redis
    stays the result backend."""
    monkeypatch.setenv("COREC_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/corec")
    amqp = SimpleNamespace(**build(load_settings()))
    assert amqp.broker_url.startswith("amqp://")
    assert amqp.result_backend.startswith("redis://")
    assert amqp.broker_transport_options == {}
    assert amqp.task_default_queue_type == "quorum"
    assert all(q.queue_arguments == {"x-queue-type": "quorum"} for q in amqp.task_queues)


def test_channels_are_queues(conf: SimpleNamespace) -> None:
    names = [q.name for q in conf.task_queues]
    assert names == ["generic", "security", "analysis", "alerts", "generation", "celery"]
    assert set(conf.beat_schedule) >= {"persist-streams", "partition-upkeep"}


def test_the_app_and_the_root_module_apply_build(conf: SimpleNamespace) -> None:
    """The app reads its configuration from build(settings) on first use; the root
    celeryconfig module (``celery --config celeryconfig``) holds the same values. In a
    child process: this process's app keeps the configuration it first read, and a later
    test that sends through it needs its own key prefix."""
    code = ("import json, celeryconfig; from corec_tasks.celery import app; "
            "print(json.dumps([app.conf.include, app.conf.broker_transport_options, "
            "celeryconfig.include, celeryconfig.broker_transport_options]))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout  # fmt: skip
    app_include, app_opts, root_include, root_opts = json.loads(out)
    assert app_include == root_include == conf.include
    assert app_opts == root_opts == conf.broker_transport_options
