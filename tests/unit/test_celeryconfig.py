"""The at-least-once settings DESIGN.md requires, read back from the live app."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture()
def conf(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1/test")
    monkeypatch.setenv("COREC_CONFIG", str(DATA / "small_config.json"))
    monkeypatch.setenv("COREC_REDIS_PREFIX", "p1:")
    monkeypatch.setenv("COREC_TASK_TIME_LIMIT", "600")
    monkeypatch.setenv("COREC_DATA_DIR", str(tmp_path))
    from corec_tasks.runtime import reset as reset_runtime

    reset_runtime()
    sys.modules.pop("celeryconfig", None)
    yield importlib.import_module("celeryconfig")
    reset_runtime()
    sys.modules.pop("celeryconfig", None)


def test_at_least_once(conf) -> None:  # type: ignore[no-untyped-def]
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.worker_cancel_long_running_tasks_on_connection_loss
    assert conf.task_time_limit == 600
    for opts in (conf.broker_transport_options, conf.result_backend_transport_options):
        assert opts["global_keyprefix"] == "p1:"
    assert conf.result_expires > 0
    assert conf.result_backend_always_retry and 0 < conf.result_backend_max_retries < 100


def test_short_visibility_timeout_with_heartbeat(conf) -> None:  # type: ignore[no-untyped-def]
    """A dead node's tasks come back within a minute; a live worker's heartbeat
    refreshes its tasks 4 times per timeout, so a long task is not redelivered."""
    from corec_tasks.runtime import get_settings

    opts = conf.broker_transport_options
    assert opts["visibility_timeout"] == 30
    assert opts["unacked_restore_interval"] == 10 and opts["unacked_restore_throttle"] == 1
    assert get_settings().env.heartbeat_s == 7.5


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


def test_rabbitmq_broker(conf, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """COREC_BROKER_URL=amqp://... makes RabbitMQ the broker with quorum queues; Redis
    stays the result backend."""
    from corec_tasks.runtime import reset as reset_runtime

    monkeypatch.setenv("COREC_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/corec")
    reset_runtime()
    sys.modules.pop("celeryconfig", None)
    amqp = importlib.import_module("celeryconfig")
    assert amqp.broker_url.startswith("amqp://")
    assert amqp.result_backend.startswith("redis://")
    assert amqp.broker_transport_options == {}
    assert amqp.task_default_queue_type == "quorum"
    assert all(q.queue_arguments == {"x-queue-type": "quorum"} for q in amqp.task_queues)


def test_channels_are_queues(conf) -> None:  # type: ignore[no-untyped-def]
    names = [q.name for q in conf.task_queues]
    assert names == ["generic", "security", "analysis", "alerts", "generation", "celery"]
    assert set(conf.beat_schedule) >= {"persist-streams", "partition-upkeep"}
