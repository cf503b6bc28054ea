"""The Celery app on real Redis: several nodes answer, `celery call` works."""

from __future__ import annotations

from pathlib import Path

import pytest

from corec_tasks.settings import Settings
from tests.integration.workers import celery, running_workers

pytestmark = pytest.mark.integration


def test_two_nodes_answer_inspect_ping_and_celery_call(
    settings: Settings, tmp_path: Path
) -> None:
    with running_workers(["node1", "node2"], tmp_path) as nodes:
        assert len(nodes) == 2 and nodes[0].startswith("node1@")
        res = celery("inspect", "ping", "--timeout", "2")
        assert "node1@" in res.stdout and "node2@" in res.stdout, res.stdout + res.stderr
        call = celery("call", "corec.ping")
        assert call.returncode == 0, call.stderr
        task_id = call.stdout.strip()
        result = celery("result", task_id)
        assert result.returncode == 0, result.stderr
        assert "'ok': True" in result.stdout or '"ok": true' in result.stdout


def test_partition_upkeep_task_through_a_worker(settings: Settings, tmp_path: Path) -> None:
    from corec_tasks.storage.migrate import upgrade

    upgrade(settings.database_url)
    with running_workers(["upkeep"], tmp_path):
        call = celery("call", "corec.db.partitions")
        result = celery("result", call.stdout.strip())
        assert result.returncode == 0, result.stderr
        assert "ok" in result.stdout
