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
    from corec_tasks.settings import get_settings

    get_settings.cache_clear()
    sys.modules.pop("celeryconfig", None)
    yield importlib.import_module("celeryconfig")
    get_settings.cache_clear()
    sys.modules.pop("celeryconfig", None)


def test_at_least_once(conf) -> None:  # type: ignore[no-untyped-def]
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.worker_cancel_long_running_tasks_on_connection_loss
    assert conf.task_time_limit == 600
    for opts in (conf.broker_transport_options, conf.result_backend_transport_options):
        assert opts["visibility_timeout"] > conf.task_time_limit
        assert opts["global_keyprefix"] == "p1:"
    assert conf.result_expires > 0


def test_channels_are_queues(conf) -> None:  # type: ignore[no-untyped-def]
    names = [q.name for q in conf.task_queues]
    assert names == ["generic", "security", "analysis", "alerts", "generation"]
    assert set(conf.beat_schedule) >= {"persist-streams", "partition-upkeep"}
