"""The core HTTP API on real PostgreSQL and Redis: tokens, roles, capital, audit."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from corec_tasks.settings import Settings
from plugins.aaa.service import AAAPlugin
from plugins.capital_pool.service import CapitalPool
from plugins.core.api import DirectCapital, create_app
from plugins.trading.models import AuditLog, Portfolio, User

pytestmark = pytest.mark.integration

FAST = {"argon2_time_cost": 1, "argon2_memory_cost": 8, "argon2_parallelism": 1,
        "max_login_attempts": 3, "lockout_s": 900}  # fmt: skip
PASSWORD = "correct horse battery"


@pytest.fixture()
def api(
    capital_settings: Settings, pool: CapitalPool, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[TestClient, AAAPlugin]]:
    monkeypatch.setenv("COREC_JWT_SECRET", "x" * 40)
    aaa = AAAPlugin.from_url(capital_settings.database_url, FAST)
    for name, role in (("root", "admin"), ("alice", "member"), ("bob", "member"),
                       ("eve", "viewer")):  # fmt: skip
        aaa.add_user(name, PASSWORD, role, via="test")
    app = create_app(aaa, DirectCapital(pool), health_checks={"ping": lambda: "pong"})
    with TestClient(app) as client:
        yield client, aaa
    aaa.close()


def _token(client: TestClient, user: str) -> dict[str, str]:
    res = client.post("/login", json={"username": user, "password": PASSWORD})
    assert res.status_code == 200, res.text
    return {"Authorization": f"Bearer {res.json()['access_token']}"}


def _scrape(client: TestClient) -> str:
    """``/metrics`` as the host's own scraper reads it (from loopback)."""
    res = TestClient(client.app, client=("127.0.0.1", 9000)).get("/metrics")
    assert res.status_code == 200, res.text
    return res.text


def test_members_move_only_their_own_capital(api: tuple[TestClient, AAAPlugin]) -> None:
    client, aaa = api
    alice, bob, root = _token(client, "alice"), _token(client, "bob"), _token(client, "root")
    ok = client.post("/capital/contribute", headers=alice,
                     json={"amount": "500.00", "idempotency_key": "a-1"})  # fmt: skip
    assert ok.status_code == 200 and ok.json()["units"] == "500.00000000"
    assert client.post("/capital/contribute", headers=bob,
                       json={"amount": "300", "idempotency_key": "b-1"}).status_code == 200
    stolen = client.post("/capital/withdraw", headers=bob,
                         json={"amount": "100", "idempotency_key": "b-2", "user": "alice"})
    assert stolen.status_code == 403 and "may not" in stolen.json()["error"]
    assert client.post("/capital/withdraw", headers=_token(client, "eve"),
                       json={"amount": "100", "idempotency_key": "e-1"}).status_code == 403
    # An admin may act for a member; a refusal by the pool's rules is a 400 with its reason.
    small = client.post("/capital/contribute", headers=root,
                        json={"amount": "99.99", "idempotency_key": "r-1", "user": "alice"})
    assert small.status_code == 400 and "minimum contribution" in small.json()["error"]
    status = client.get("/capital/status", headers=bob).json()
    assert status["equity"] == "800.00" and set(status["members"]) == {"bob"}
    assert set(client.get("/capital/status", headers=root).json()["members"]) == {"alice", "bob"}
    assert client.get("/capital/members/alice", headers=bob).status_code == 403
    assert client.get("/capital/members/alice", headers=alice).json()["value"] == "500.00"
    with aaa._sessions() as db:
        actions = [(a.action, a.details) for a in db.scalars(select(AuditLog))]
    audited = [d for a, d in actions if a == "capital.contribute.result"]
    assert len(audited) == 3  # alice's, bob's and root's refused one
    assert any(a == "authorize.deny" and "capital.withdraw" in (d or "") for a, d in actions)
    # The ledger's own rows (in its transactions): one per action that reached it, naming
    # the logged-in principal and their users.id; bob's denied withdrawal never reached it.
    with aaa._sessions() as db:
        ids = {u.username: u.id for u in db.scalars(select(User))}
        ledger_rows = [(r.user_id, r.action, json.loads(r.details or "{}")) for r in
                       db.scalars(select(AuditLog).where(AuditLog.action.in_(
                           ["capital.contribute", "capital.withdraw"])).order_by(AuditLog.id))]
    assert [(u, a, d["principal"], d["member"], d["amount"], d["idempotency_key"], d["result"])
            for u, a, d in ledger_rows] == [
        (ids["alice"], "capital.contribute", "user:alice", "alice", "500.00", "a-1", "ok"),
        (ids["bob"], "capital.contribute", "user:bob", "bob", "300.00", "b-1", "ok"),
        (ids["root"], "capital.contribute", "user:root", "alice", "99.99", "r-1", "refused"),
    ]  # fmt: skip
    assert "minimum contribution" in ledger_rows[2][2]["reason"]


def test_tokens_are_required_and_checked(api: tuple[TestClient, AAAPlugin]) -> None:
    client, _ = api
    missing = client.get("/capital/status")
    assert missing.status_code == 401 and "bearer token is required" in missing.json()["error"]
    token = _token(client, "alice")["Authorization"]
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    assert client.get("/capital/status", headers={"Authorization": tampered}).status_code == 401
    assert client.post("/logout", headers={"Authorization": token}).status_code == 200
    revoked = client.get("/capital/status", headers={"Authorization": token})
    assert revoked.status_code == 401 and "revoked" in revoked.json()["error"]


def test_wrong_passwords_lock_the_account(api: tuple[TestClient, AAAPlugin]) -> None:
    client, aaa = api
    for _ in range(3):
        bad = client.post("/login", json={"username": "bob", "password": "wrong password!"})
        assert bad.status_code == 401
    locked = client.post("/login", json={"username": "bob", "password": PASSWORD})
    # A locked account answers like a wrong password: a stranger learns nothing.
    assert locked.status_code == 401 and locked.json() == bad.json()
    assert [u.locked_until is not None for u in aaa.list_users() if u.username == "bob"] == [True]


def test_portfolios_health_metrics_openapi(api: tuple[TestClient, AAAPlugin]) -> None:
    client, aaa = api
    with aaa._sessions.begin() as db:
        ids = {u.username: u.id for u in db.scalars(select(User))}
        db.add_all([Portfolio(user_id=ids["alice"], name="a"),
                    Portfolio(user_id=ids["bob"], name="b")])  # fmt: skip
    mine = client.get("/portfolios", headers=_token(client, "alice")).json()
    assert [p["name"] for p in mine] == ["a"]
    assert len(client.get("/portfolios", headers=_token(client, "root")).json()) == 2
    assert client.get("/orders", headers=_token(client, "alice")).json() == []
    assert client.get("/positions", headers=_token(client, "eve")).json() == []
    health = client.get("/health")
    assert health.status_code == 200 and health.json()["checks"]["ping"]["detail"] == "pong"
    metrics = _scrape(client)
    assert 'corec_api_requests_total{method="GET",route="/portfolios",status="200"}' in metrics
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/login", "/capital/contribute", "/capital/withdraw", "/capital/status",
            "/portfolios", "/orders", "/positions", "/health", "/metrics"} <= set(paths)


def test_a_burst_of_refusals_answers_fast_with_an_audit_row_each(
    api: tuple[TestClient, AAAPlugin],
) -> None:
    """20 parallel refused contributions in-process (DirectCapital: one breaker lock):
    no request holds a pooled connection while it queues, so none waits for one."""
    client, aaa = api
    alice = _token(client, "alice")

    def refused(i: int) -> tuple[int, float]:
        t0 = time.perf_counter()
        res = client.post("/capital/contribute", headers=alice,
                          json={"amount": "99.99", "idempotency_key": f"s-{i}"})  # fmt: skip
        return res.status_code, time.perf_counter() - t0

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(refused, range(20)))
    assert [c for c, _ in answers] == [400] * 20
    assert max(t for _, t in answers) < 5.0
    with aaa._sessions() as db:
        rows = db.scalar(select(func.count()).select_from(AuditLog)
                         .where(AuditLog.action == "capital.contribute.result"))  # fmt: skip
    assert rows == 20


def test_openapi_lists_every_status_and_metrics_hide_logins(
    api: tuple[TestClient, AAAPlugin],
) -> None:
    client, _ = api
    for _ in range(2):
        client.post("/login", json={"username": "bob", "password": "wrong password!"})
    _token(client, "alice")
    metrics = _scrape(client)
    assert "/login" not in metrics and "bob" not in metrics and "alice" not in metrics
    paths = client.get("/openapi.json").json()["paths"]
    documented = {(path, method): set(op["responses"]) for path, ops in paths.items()
                  for method, op in ops.items()}  # fmt: skip
    expected = {
        ("/login", "post"): {"200", "401", "422", "429", "503"},
        ("/logout", "post"): {"200", "401"},
        ("/password", "post"): {"200", "400", "401", "422", "429", "503"},
        ("/health", "get"): {"200", "503"},
        ("/metrics", "get"): {"200", "403"},
        ("/capital/status", "get"): {"200", "400", "401", "403", "500", "503"},
        ("/capital/members/{user}", "get"):
            {"200", "400", "401", "403", "404", "422", "500", "503"},
        ("/capital/contribute", "post"):
            {"200", "400", "401", "403", "404", "422", "500", "503"},
        ("/capital/withdraw", "post"): {"200", "400", "401", "403", "404", "422", "500", "503"},
        ("/portfolios", "get"): {"200", "401", "403"},
        ("/orders", "get"): {"200", "401", "403", "422"},
        ("/positions", "get"): {"200", "401", "403"},
    }  # fmt: skip
    assert documented == expected
    error = paths["/capital/contribute"]["post"]["responses"]["503"]
    assert error["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorOut")
    # A 422 is documented as what it is: ErrorOut, not FastAPI's {"detail": [...]}.
    document = client.get("/openapi.json").json()
    for (path, method), codes in documented.items():
        if "422" in codes:
            invalid = paths[path][method]["responses"]["422"]
            assert invalid["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/ErrorOut"}, (path, invalid)
    assert "HTTPValidationError" not in document["components"]["schemas"]
    answer = client.post("/login", json={"username": "bob"})
    assert answer.status_code == 422 and set(answer.json()) == {"ok", "error"}


def test_direct_capital_refuses_an_action_without_a_caller_and_audits_it(
    api: tuple[TestClient, AAAPlugin], pool: CapitalPool
) -> None:
    _, aaa = api
    out = DirectCapital(pool).contribute("alice", "500.00", "no-caller")
    assert out == {"ok": False, "error": "capital.contribute needs a logged-in caller"}
    assert pool.status()["members"] == {}
    with aaa._sessions() as db:
        row = db.scalars(select(AuditLog).where(AuditLog.action == "capital.contribute")).one()
    details = json.loads(row.details or "{}")
    assert (row.user_id, details["principal"], details["result"]) == (None, "api:no-caller",
                                                                      "refused")  # fmt: skip


def test_metrics_are_served_to_loopback_and_named_readers_only(
    api: tuple[TestClient, AAAPlugin], pool: CapitalPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The API's /metrics, like `corec metrics serve`, is for this host by default."""
    client, aaa = api
    for host in ("127.0.0.1", "127.0.0.53", "::1"):
        res = TestClient(client.app, client=(host, 9000)).get("/metrics")
        assert res.status_code == 200 and "corec_api_requests_total" in res.text, host
    for host in ("192.0.2.9", "10.0.0.1", "testclient"):
        res = TestClient(client.app, client=(host, 9000)).get("/metrics")
        assert res.status_code == 403, (host, res.text)
        assert res.json() == {"ok": False, "error": "/metrics is served to loopback and "
                              f"COREC_API_METRICS_FROM only, not to {host!r}"}  # fmt: skip
    # A forwarded header from an untrusted peer changes nothing...
    res = TestClient(client.app, client=("192.0.2.9", 9000)).get(
        "/metrics", headers={"X-Forwarded-For": "127.0.0.1"})
    assert res.status_code == 403
    # ...and a proxy on loopback, once listed, no longer makes every client loopback.
    monkeypatch.setenv("COREC_TRUSTED_PROXIES", "127.0.0.1")
    monkeypatch.setenv("COREC_API_METRICS_FROM", "10.0.0.0/8")
    app = create_app(aaa, DirectCapital(pool))
    proxied = TestClient(app, client=("127.0.0.1", 9000))
    assert proxied.get("/metrics", headers={"X-Forwarded-For": "203.0.113.4"}).status_code == 403
    assert proxied.get("/metrics", headers={"X-Forwarded-For": "10.1.2.3"}).status_code == 200
    assert proxied.get("/metrics").status_code == 200  # the host itself, no header
    assert TestClient(app, client=("10.9.9.9", 9000)).get("/metrics").status_code == 200
