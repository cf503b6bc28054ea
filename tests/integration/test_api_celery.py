"""`corec api` as served (uvicorn, capital through Celery) with real workers, or none.

The API stays up for everyone: a burst of refused actions is answered 4xx within the
bound with an audit row each, a missing worker is a 503 to retry (at the default
``COREC_API_TASK_TIMEOUT_S``), and no login token rests in Redis.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
import redis
from sqlalchemy import func, select

from corec_tasks.errors import ConfigurationError
from corec_tasks.procs import managed
from corec_tasks.settings import Settings
from plugins.aaa.service import AAAPlugin
from plugins.aaa.tokens import Claims
from plugins.capital_pool import grants
from plugins.core.api import DEFAULT_TASK_TIMEOUT_S, Caller, grant_kwargs, task_timeout
from plugins.trading.models import AuditLog, Role, User
from tests.conftest import DATA
from tests.integration.workers import running_workers

pytestmark = pytest.mark.integration

FAST = {"argon2_time_cost": 1, "argon2_memory_cost": 8, "argon2_parallelism": 1}
PASSWORD = "correct horse battery"
BURST = 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(port: int, log: Path) -> Any:
    cmd = [sys.executable, "-m", "corec_tasks.cli", "api", "--port", str(port)]
    return managed(cmd, log)


def _wait_up(http: httpx.Client, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            http.get("/health")
            return
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError(f"the API did not start:\n{log.read_text()[-3000:]}")


def _values(client: redis.Redis, match: str = "*") -> bytes:
    """Every key and every value of every type in Redis (``match``), concatenated."""
    out = []
    for key in client.scan_iter(match=match, count=1000):
        out.append(key)
        kind = client.type(key)
        if kind == b"string":
            out.append(client.get(key) or b"")
        elif kind == b"list":
            out.extend(client.lrange(key, 0, -1))
        elif kind == b"hash":
            for field, value in client.hgetall(key).items():
                out.extend((field, value))
        elif kind == b"set":
            out.extend(client.smembers(key))
        elif kind == b"zset":
            out.extend(client.zrange(key, 0, -1))
        elif kind == b"stream":
            for _, fields in client.xrange(key):
                for field, value in fields.items():
                    out.extend((field, value))
    return b"\n".join(out)


def test_refusals_stay_fast_with_workers_and_503_without(
    capital_settings: Settings,
    redis_client: redis.Redis,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COREC_CONFIG", str(DATA / "capital_config.json"))
    monkeypatch.setenv("COREC_JWT_SECRET", "j" * 40)
    monkeypatch.delenv("COREC_API_TASK_TIMEOUT_S", raising=False)
    assert task_timeout() == DEFAULT_TASK_TIMEOUT_S == 5.0
    aaa = AAAPlugin.from_url(capital_settings.database_url, FAST)
    aaa.add_user("alice", PASSWORD, "member", via="test")
    port = _free_port()
    try:
        with _serve(port, tmp_path / "api.log"), \
                httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:  # fmt: skip
            _wait_up(http, tmp_path / "api.log")

            def login() -> dict[str, str]:
                res = http.post("/login", json={"username": "alice", "password": PASSWORD})
                assert res.status_code == 200, res.text
                return {"Authorization": f"Bearer {res.json()['access_token']}"}

            early, burst_auth = login(), login()

            def contribute(amount: str, key: str, auth: dict[str, str]) -> tuple[int, Any, float]:
                t0 = time.perf_counter()
                res = http.post("/capital/contribute", headers=auth,
                                json={"amount": amount, "idempotency_key": key})  # fmt: skip
                return res.status_code, res.json(), time.perf_counter() - t0

            # No worker: a 503 to retry, after the default bound, not a 500 after 30 s.
            code, body, took = contribute("500.00", "queued-1", early)
            assert code == 503 and body["retry"] is True, body
            assert "no capital worker answered within 5 s" in body["error"]
            assert DEFAULT_TASK_TIMEOUT_S <= took < DEFAULT_TASK_TIMEOUT_S + 2, took
            # The queued message carries the grant in its body, but the kwargsrepr that
            # task events (Flower, `celery events`) copy hides it.
            queued = [json.loads(m) for m in
                      redis_client.lrange(capital_settings.key("generic"), 0, -1)]  # fmt: skip
            assert [m["headers"]["task"] for m in queued] == ["capital_pool.contribute"]
            assert queued[0]["headers"]["kwargsrepr"] == "{'grant': '<grant>'}"

            with running_workers(["apicap"], tmp_path, concurrency=2):
                with ThreadPoolExecutor(BURST) as pool:
                    answers = list(pool.map(
                        lambda i: contribute("99.99", f"small-{i}", burst_auth), range(BURST)))
                # The queued contribution applied once; its retry answers with its result.
                code, body, _ = contribute("500.00", "queued-1", early)
                assert code == 200 and body["units"] == "500.00000000", body
    finally:
        with aaa._sessions() as db:
            audited = db.scalar(select(func.count()).select_from(AuditLog)
                                .where(AuditLog.action == "capital.contribute.result"))  # fmt: skip
            ledger_rows = [(r.user_id, json.loads(r.details or "{}")) for r in db.scalars(
                select(AuditLog).where(AuditLog.action == "capital.contribute"))]  # fmt: skip
            alice_id = db.scalar(select(User.id).where(User.username == "alice"))
        aaa.close()
    took_s = sorted(t for _, _, t in answers)
    print(f"{BURST} parallel refused contributions: median {took_s[BURST // 2]:.3f} s, "
          f"max {took_s[-1]:.3f} s")
    assert [c for c, _, _ in answers] == [400] * BURST, answers
    assert all("minimum contribution" in b["error"] for _, b, _ in answers)
    assert took_s[-1] < 5.0
    assert audited == BURST + 2
    # The ledger audits every action the workers ran, as alice (by her grant): the queued
    # one (applied, or refused if its grant expired first), its retry, the burst.
    assert len(ledger_rows) == BURST + 2
    assert {(u, d["principal"]) for u, d in ledger_rows} == {(alice_id, "user:alice")}
    assert [d["result"] for _, d in ledger_rows].count("refused") >= BURST
    # No login token and no grant key anywhere in Redis: tasks carry single-use grants,
    # and results (celery-task-meta-*) are deleted once read.
    rest = _values(redis_client)
    for auth in (early, burst_auth):
        assert auth["Authorization"].split()[1].encode() not in rest
    grant_key = grants.load_key(capital_settings, {})
    assert grant_key not in rest


def test_grant_kwargs_carry_a_grant_the_workers_accept(
    settings: Settings, redis_client: redis.Redis
) -> None:
    now = datetime.now(UTC)
    claims = Claims(user_id=3, username="root", role=Role.ADMIN, session_id="s",
                    issued_at=now, expires_at=now)  # fmt: skip
    key = grants.load_key(settings, {})
    kwargs = grant_kwargs(Caller(claims), "withdraw", "alice", "100.00", "k", key)
    assert list(kwargs) == ["grant"]
    who = grants.verify(kwargs["grant"], "alice", "capital.withdraw", "100.00", "k",
                        settings=settings, redis_client=redis_client)  # fmt: skip
    assert (who.user_id, who.username, who.member) == (3, "root", "alice")


def test_the_task_timeout_is_read_from_the_environment() -> None:
    assert task_timeout({}) == 5.0
    assert task_timeout({"COREC_API_TASK_TIMEOUT_S": "2.5"}) == 2.5
    for bad in ("abc", "0", "-1", "301", "nan"):
        with pytest.raises(ConfigurationError, match="COREC_API_TASK_TIMEOUT_S"):
            task_timeout({"COREC_API_TASK_TIMEOUT_S": bad})
