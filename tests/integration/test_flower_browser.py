"""Flower as an operator sees it: started as `make flower` starts it (loopback, basic
auth) against two worker nodes, read by a real headless Chromium. Flower's pages fill
in by JavaScript, so the browser gets a virtual-time budget before the DOM is dumped.
Without credentials every page and API answers 401."""

from __future__ import annotations

import base64
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from corec_tasks.procs import celery_cmd, managed
from corec_tasks.settings import Settings
from tests.integration.own_redis import free_port
from tests.integration.workers import celery, running_workers

pytestmark = [pytest.mark.integration, pytest.mark.browser]
USER, PASSWORD = "ops", "s3cret-flower"
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def chromium() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip(f"no Chromium binary ({', '.join(BROWSERS)}); .ci/run installs Debian's")


def status(url: str, credentials: str | None) -> int:
    """HTTP status of a GET, with ``user:password`` as basic auth when given."""
    req = urllib.request.Request(url)
    if credentials is not None:
        token = base64.b64encode(credentials.encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def get(url: str) -> str:
    req = urllib.request.Request(url)
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    req.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(req, timeout=5) as resp:
        return resp.read().decode()


def wait_until(check: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"{what} within {timeout:.0f}s")


def browse(browser: str, profile: Path, url: str, *action: str) -> subprocess.CompletedProcess[str]:
    """One headless Chromium run on ``url`` with a throwaway profile."""
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--no-first-run", f"--user-data-dir={profile}", "--virtual-time-budget=10000",
           *action, url]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


@pytest.mark.timeout(90)
def test_flower_shows_workers_and_corec_tasks_behind_basic_auth(
    settings: Settings, tmp_path: Path
) -> None:
    browser = chromium()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    flower = celery_cmd("flower", "--address=127.0.0.1", f"--port={port}",
                        f"--basic-auth={USER}:{PASSWORD}")  # fmt: skip
    with running_workers(["flowerA", "flowerB"], tmp_path) as nodes, managed(
        flower, tmp_path / "flower.log"
    ):
        wait_until(lambda: status(base + "/", f"{USER}:{PASSWORD}") == 200, "Flower did not answer")
        for path in ("/", "/workers", "/tasks", "/api/workers", "/api/tasks", "/broker"):
            assert status(base + path, None) == 401, path
        assert status(base + "/", f"{USER}:wrong") == 401

        call = celery("call", "corec.ping")
        assert call.returncode == 0, call.stderr
        wait_until(lambda: "corec.ping" in get(base + "/api/tasks"), "Flower saw no corec.ping")
        wait_until(lambda: all(n in get(base + "/api/workers") for n in nodes),
                   "Flower did not list both workers")  # fmt: skip

        authed = f"http://{USER}:{PASSWORD}@127.0.0.1:{port}"
        dom = browse(browser, tmp_path / "profile", authed + "/workers", "--dump-dom")
        assert dom.returncode == 0, dom.stderr[-2000:]
        for node in nodes:
            assert node in dom.stdout, (node, dom.stdout[-3000:])
        dom = browse(browser, tmp_path / "profile", authed + "/tasks", "--dump-dom")
        assert "corec.ping" in dom.stdout, dom.stdout[-3000:]

        shot = tmp_path / "workers.png"
        res = browse(browser, tmp_path / "profile", authed + "/workers",
                     f"--screenshot={shot}", "--window-size=1280,800")  # fmt: skip
        assert shot.exists(), res.stderr[-2000:]
        data = shot.read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 10_000, len(data)
