"""Flower's task-apply API is off unless the operator turns it on: real Flower processes
started as `make flower` and compose start them (``--conf=deploy/flower/flowerconfig.py``),
on the test's Redis, asked to send ``corec.ping`` through each task-apply route."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from corec_tasks.procs import celery_cmd, managed
from corec_tasks.settings import Settings
from tests.integration.own_redis import free_port
from tests.integration.test_flower_browser import status, wait_until

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "deploy" / "flower" / "flowerconfig.py"
USER, PASSWORD = "ops", "s3cret-flower"
ROUTES = ("apply", "async-apply", "send-task")


@contextmanager
def flower(tmp_path: Path, task_api: str | None, make: bool = False) -> Iterator[str]:
    """A Flower on loopback with basic auth and CoreC's config (``make flower`` itself
    when ``make``); its base URL."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "COREC_FLOWER_TASK_API"}
    if task_api is not None:
        env["COREC_FLOWER_TASK_API"] = task_api
    cmd = celery_cmd("flower", "--address=127.0.0.1", f"--port={port}",
                     f"--basic-auth={USER}:{PASSWORD}", f"--conf={CONF}")  # fmt: skip
    if make:
        env["FLOWER_BASIC_AUTH"] = f"{USER}:{PASSWORD}"
        cmd = ["make", "-s", "-C", str(ROOT), "flower", f"FLOWER_PORT={port}"]
    base = f"http://127.0.0.1:{port}"
    with managed(cmd, tmp_path / "flower.log", env):
        wait_until(lambda: status(base + "/api/workers", f"{USER}:{PASSWORD}") == 200,
                   "Flower did not answer")  # fmt: skip
        yield base


def post(url: str, credentials: bool = True) -> tuple[int, str]:
    req = urllib.request.Request(url, data=b"{}", method="POST",
                                 headers={"Content-Type": "application/json"})  # fmt: skip
    if credentials:
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def queued(client: redis.Redis, settings: Settings) -> list[str]:
    """The task names of every message waiting in any of this test's queues."""
    names = []
    for key in client.scan_iter(match=f"{settings.redis_prefix}*", count=1000):
        if client.type(key) == b"list":
            for raw in client.lrange(key, 0, -1):
                names.append(json.loads(raw)["headers"]["task"])
    return names


@pytest.mark.timeout(120)
def test_the_task_apply_api_is_off_by_default(
    settings: Settings, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """As the operator starts it: `make flower`, no switch set."""
    with flower(tmp_path, None, make=True) as base:
        for route in ROUTES:
            code, body = post(f"{base}/api/task/{route}/corec.ping")
            assert code == 403, (route, code, body)
            assert "task-apply API is off" in body and "COREC_FLOWER_TASK_API=1" in body
            assert post(f"{base}/api/task/{route}/corec.ping", credentials=False)[0] == 401
        # The rest of Flower is as it ships: pages and the read API answer.
        for path in ("/", "/tasks", "/api/tasks", "/api/task/types"):
            assert status(base + path, f"{USER}:{PASSWORD}") == 200, path
    assert queued(redis_client, settings) == []


@pytest.mark.timeout(120)
def test_the_operator_turns_it_on(
    settings: Settings, redis_client: redis.Redis, tmp_path: Path
) -> None:
    with flower(tmp_path, "1") as base:
        code, body = post(f"{base}/api/task/async-apply/corec.ping")
        assert code == 200 and json.loads(body)["task-id"], body
        code, body = post(f"{base}/api/task/send-task/corec.ping")
        assert code == 200 and json.loads(body)["task-id"], body
    assert sorted(queued(redis_client, settings)) == ["corec.ping", "corec.ping"]


@pytest.mark.parametrize("value", ["yes", "true", "2"])
def test_an_unclear_switch_stops_flower_naming_it(
    settings: Settings, tmp_path: Path, value: str
) -> None:
    cmd = celery_cmd("flower", "--address=127.0.0.1", f"--port={free_port()}",
                     f"--basic-auth={USER}:{PASSWORD}", f"--conf={CONF}")  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "COREC_FLOWER_TASK_API": value})  # fmt: skip
    assert res.returncode != 0
    assert "COREC_FLOWER_TASK_API: expected 1" in res.stderr + res.stdout, res.stderr[-2000:]
