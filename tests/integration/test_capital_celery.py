"""Concurrency through real Celery workers on real Redis and PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from corec_tasks.db import libpq_url
from corec_tasks.settings import Settings
from plugins.capital_pool.config import load_config
from plugins.capital_pool.service import CapitalPool
from tests.conftest import DATA, ROOT
from tests.integration.workers import celery, running_workers

pytestmark = pytest.mark.integration

CLIENTS = 3
ACTIONS = 150


def test_many_clients_many_workers_each_key_applied_once(
    capital_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COREC_CONFIG", str(DATA / "capital_config.json"))
    with running_workers(["cap1", "cap2"], tmp_path, concurrency=2):
        # A user's own command works too.
        called = celery("call", "capital_pool.status")
        assert called.returncode == 0, called.stderr
        clients = [
            subprocess.Popen([sys.executable, "-m", "tests.integration.capital_client", str(seed),
                              str(ACTIONS), "0.1"], cwd=ROOT, env=dict(os.environ),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for seed in range(CLIENTS)
        ]  # fmt: skip
        outputs = [c.communicate(timeout=300) for c in clients]
    for client, (_, err) in zip(clients, outputs, strict=True):
        assert client.returncode == 0, err[-3000:]
    rows = [json.loads(line) for out, _ in outputs for line in out.splitlines()]
    assert len(rows) == CLIENTS * ACTIONS

    by_key: dict[str, list[dict[str, object]]] = {}
    for _kind, _user, _amount, key, result in rows:
        by_key.setdefault(key, []).append(result)
    repeated = sum(len(v) - 1 for v in by_key.values())
    assert repeated >= CLIENTS * ACTIONS * 0.1  # retries plus the keys shared by clients
    accepted = set()
    for key, results in by_key.items():
        firsts = [{k: v for k, v in r.items() if k != "replayed"} for r in results]
        assert all(f == firsts[0] for f in firsts), (key, results)  # one answer per key
        assert sum(1 for r in results if not r.get("replayed")) == 1, (key, results)
        if firsts[0]["ok"]:
            accepted.add(key)
    assert len(accepted) > CLIENTS * ACTIONS // 2

    with psycopg.connect(libpq_url(capital_settings.database_url)) as conn:
        applied = [r[0] for r in conn.execute(
            "SELECT idempotency_key FROM contributions UNION ALL "
            "SELECT idempotency_key FROM withdrawals").fetchall()]  # fmt: skip
        audited = conn.execute(
            "SELECT details::json->>'idempotency_key', details::json->>'result', "
            "details::json->>'principal' FROM audit_log WHERE action LIKE 'capital.%'"
        ).fetchall()
    assert sorted(applied) == sorted(accepted)  # each accepted key exactly once
    # One audit row per task, naming its client; exactly one "ok" per accepted key.
    assert len(audited) == CLIENTS * ACTIONS
    assert {p for _, _, p in audited} == {f"operator:client-{s}" for s in range(CLIENTS)}
    assert sorted(k for k, r, _ in audited if r == "ok") == sorted(accepted)
    pool = CapitalPool(capital_settings, load_config())
    try:
        assert pool.verify() == {"ok": True, "problems": []}
    finally:
        pool.close()
