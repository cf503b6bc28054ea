"""Issue 19, part 4: a forged ``capital_pool:status`` cache shows no fake NAV or head
hash, in the pool, ``corec capital status`` or the API. The attack is made with redis-py
alone, on real Redis and PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from corec_tasks.settings import Settings
from corec_tasks.streams.bus import StreamBus
from corec_tasks.streams.names import ALERTS
from plugins.aaa.service import AAAPlugin
from plugins.capital_pool.service import STATUS_KEY, CapitalPool
from plugins.core.api import DirectCapital, create_app
from tests.conftest import DATA

pytestmark = pytest.mark.integration

FAST = {"argon2_time_cost": 1, "argon2_memory_cost": 8, "argon2_parallelism": 1}
PASSWORD = "correct horse battery"


def _alerts(bus: StreamBus, source: str) -> list[dict[str, Any]]:
    return [a["payload"] for a in bus.tail(ALERTS, 50) if a["payload"].get("source") == source]


@pytest.fixture()
def api(
    capital_settings: Settings, pool: CapitalPool, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TestClient]:
    monkeypatch.setenv("COREC_JWT_SECRET", "x" * 40)
    aaa = AAAPlugin.from_url(capital_settings.database_url, FAST)
    aaa.add_user("root", PASSWORD, "admin", via="test")
    with TestClient(create_app(aaa, DirectCapital(pool))) as client:
        yield client
    aaa.close()


def test_a_forged_status_cache_shows_no_fake_nav_or_head(
    pool: CapitalPool, api: TestClient
) -> None:
    """The cache overwritten (NAV 2.08, a made-up head hash), and an old genuine cache
    copied back after a change: the pool, ``corec capital status`` and the API show the
    true figures from PostgreSQL, and one ``error`` alert says why."""
    assert pool.contribute("alice", "1000.00", "a-1", principal="op:test")["ok"]
    assert pool.status()["cached"] is False and pool.status()["cached"] is True
    old = pool.redis.get(pool.k_status)
    assert old is not None
    assert pool.contribute("alice", "500.00", "a-2", principal="op:test")["ok"]
    true = pool.status(use_cache=False)
    attacker: Any = redis.Redis.from_url(pool.settings.redis_url)
    fake = dict(true, nav="2.080000", equity="3120.00",
                ledger={"entries": 9, "seq": 9, "hash": "f" * 64})  # fmt: skip
    attacker.set(pool.k_status, json.dumps(fake), ex=1800)

    shown = pool.status()
    assert (shown["nav"], shown["equity"], shown["ledger"]) == (
        true["nav"], true["equity"], true["ledger"])  # fmt: skip
    assert shown["cached"] is False and pool.status()["cached"] is True  # re-cached, sealed
    attacker.set(pool.k_status, json.dumps(fake), ex=1800)
    env = dict(os.environ, COREC_CONFIG=str(DATA / "capital_config.json"))
    cli = subprocess.run([sys.executable, "-m", "corec_tasks.cli", "capital", "status", "--json"],
                         capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    from_cli = json.loads(cli.stdout)
    assert (from_cli["nav"], from_cli["ledger"]) == (true["nav"], true["ledger"])

    attacker.set(pool.k_status, json.dumps(fake), ex=1800)
    token = api.post("/login", json={"username": "root", "password": PASSWORD}).json()
    got = api.get("/capital/status", headers={"Authorization": f"Bearer {token['access_token']}"})
    assert got.status_code == 200
    assert (got.json()["nav"], got.json()["ledger"]) == (true["nav"], true["ledger"])
    attacker.close()

    with StreamBus(pool.settings) as bus:
        alerts = _alerts(bus, "cache.signature")
    assert len(alerts) == 1 and alerts[0]["level"] == "error", alerts  # one per hour
    assert alerts[0]["subject"] == STATUS_KEY and "PostgreSQL" in alerts[0]["message"]

    # A genuine cache from before the second contribution, copied back half an hour on.
    attacker = redis.Redis.from_url(pool.settings.redis_url)
    attacker.set(pool.k_status, old, ex=1800)
    attacker.close()
    with pytest.MonkeyPatch.context() as later:
        later.setattr(time, "time", lambda real=time.time: real() + 1801)
        assert pool.status()["equity"] == "1500.00"
