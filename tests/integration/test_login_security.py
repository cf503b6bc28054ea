"""Logins through the API on real PostgreSQL and Redis: one answer for every refusal,
per-client limits, admins not lockable by strangers, bounded hashing, password changes."""

from __future__ import annotations

import socket
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2 as httpx
import psutil
import pytest
import redis
from click.testing import CliRunner
from fastapi.testclient import TestClient

from corec_tasks.cli import main
from corec_tasks.procs import managed
from corec_tasks.settings import Settings
from plugins.aaa.config import AAAConfig
from plugins.aaa.errors import AuthenticationError, TokenRevokedError
from plugins.aaa.limits import BusyError
from plugins.aaa.service import AAAPlugin
from plugins.capital_pool.service import CapitalPool
from plugins.core.api import DirectCapital, create_app
from tests.conftest import DATA

pytestmark = pytest.mark.integration

FAST = {"argon2_time_cost": 1, "argon2_memory_cost": 8, "argon2_parallelism": 1}
PASSWORD = "correct horse battery"
MiB = 1024 * 1024
#: The test client's address (TEST-NET-1).
PEER = "192.0.2.1"

Api = Callable[..., tuple[TestClient, AAAPlugin]]


@pytest.fixture()
def make_api(
    capital_settings: Settings,
    pool: CapitalPool,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Api]:
    """An API on its own AAA plugin (``config`` overrides), users root/alice/bob."""
    monkeypatch.setenv("COREC_JWT_SECRET", "x" * 40)
    made: list[tuple[TestClient, AAAPlugin]] = []

    monkeypatch.delenv("COREC_TRUSTED_PROXIES", raising=False)

    def make(**config: Any) -> tuple[TestClient, AAAPlugin]:
        aaa = AAAPlugin.from_url(capital_settings.database_url, config)
        if not made:
            for name, role in (("root", "admin"), ("alice", "member"), ("bob", "member")):
                aaa.add_user(name, PASSWORD, role, via="test")
        client = TestClient(create_app(aaa, DirectCapital(pool)), client=(PEER, 4000))
        made.append((client, aaa))
        return client, aaa

    yield make
    for client, aaa in made:
        client.close()
        aaa.close()


def _login(client: TestClient, user: str, password: str = PASSWORD) -> Any:
    return client.post("/login", json={"username": user, "password": password})


def _bearer(client: TestClient, user: str, password: str = PASSWORD) -> dict[str, str]:
    res = _login(client, user, password)
    assert res.status_code == 200, res.text
    return {"Authorization": f"Bearer {res.json()['access_token']}"}


def test_unknown_wrong_and_locked_answer_alike_at_the_default_cost(make_api: Api) -> None:
    """Default argon2 cost and lockout; only the per-client limit is raised for the count."""
    client, aaa = make_api(login_per_client=1000)
    assert aaa.config.argon2_memory_cost == 65536 and aaa.config.max_login_attempts == 5
    for _ in range(5):
        _login(client, "bob", "wrong password!")
    assert [u.locked_until is not None for u in aaa.list_users() if u.username == "bob"] == [True]
    cases = {"unknown": ("nobody", PASSWORD), "wrong": ("alice", "wrong password!"),
             "locked": ("bob", PASSWORD)}  # fmt: skip
    times: dict[str, list[float]] = {k: [] for k in cases}
    bodies: dict[str, set[str]] = {k: set() for k in cases}
    for _ in range(4):  # alice stays one below the lock
        for kind, (user, password) in cases.items():
            t0 = time.perf_counter()
            res = _login(client, user, password)
            times[kind].append(time.perf_counter() - t0)
            assert res.status_code == 401
            bodies[kind].add(res.text)
    assert len(set.union(*bodies.values())) == 1, bodies
    assert bodies["locked"] == {'{"ok":false,"error":"invalid username or password"}'}
    medians = {k: statistics.median(v) for k, v in times.items()}
    print("login refusal medians (s):", {k: round(v, 3) for k, v in medians.items()})
    assert max(medians.values()) < 3 * min(medians.values()), medians


def test_a_client_is_limited_and_others_are_not(make_api: Api) -> None:
    client, aaa = make_api(**FAST)
    assert (aaa.config.login_per_client, aaa.config.login_window_s) == (10, 60)
    for i in range(10):
        assert _login(client, f"ghost{i}").status_code == 401
    limited = _login(client, "alice")  # even the right password
    assert limited.status_code == 429 and "too many login attempts" in limited.json()["error"]
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    other = TestClient(client.app, client=("192.0.2.2", 4000))
    assert _login(other, "alice").status_code == 200
    # The password route is counted too.
    res = client.post("/password", headers=_bearer(other, "alice"),
                      json={"old_password": PASSWORD, "new_password": "x" * 20})  # fmt: skip
    assert res.status_code == 429


def _xff(hop: str) -> dict[str, str]:
    return {"X-Forwarded-For": hop}


def _ghost(client: Any, forwarded: str) -> int:
    """A failed login sent with ``X-Forwarded-For: forwarded``; its status."""
    res = client.post("/login", json={"username": "ghost", "password": "x"},
                      headers=_xff(forwarded))  # fmt: skip
    return int(res.status_code)


def test_rotating_x_forwarded_for_does_not_escape_the_limit(
    make_api: Api, redis_client: redis.Redis, capital_settings: Settings
) -> None:
    """Measured on main: 100+ logins with a new X-Forwarded-For each, no 429. With no
    trusted proxy (the default) the header is ignored: the peer is the client."""
    client, _ = make_api(**FAST)
    codes = [_ghost(client, f"203.0.113.{i}") for i in range(40)]
    assert codes[:10] == [401] * 10 and codes[10:] == [429] * 30, codes
    mine = f"{capital_settings.redis_prefix}aaa:login:client:*"  # this test's keys only
    keys = sorted(k.decode() for k in redis_client.scan_iter(mine))
    assert [k.rsplit(":", 1)[1] for k in keys] == [PEER], keys
    # The right password from a "new" forwarded address is still this client: 429.
    assert _login(client, "alice").status_code == 429


def test_a_trusted_proxy_forwarded_for_is_honoured(
    make_api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """COREC_TRUSTED_PROXIES lists the test client: each forwarded client has its own
    allowance, and what a client prepends to the header itself does not count."""
    monkeypatch.setenv("COREC_TRUSTED_PROXIES", f"{PEER}, 10.0.0.0/8")
    client, _ = make_api(**FAST)
    # 12 clients behind the proxy, one attempt each: none limited.
    assert [_ghost(client, f"198.51.100.{i}") for i in range(12)] == [401] * 12
    for _ in range(10):  # one forwarded client uses up its own allowance...
        assert _ghost(client, "203.0.113.5, 10.1.1.1") == 401
    for spoofed in ("203.0.113.5", "6.6.6.6, 203.0.113.5", "6.6.6.6, 203.0.113.5, 10.2.2.2"):
        res = client.post("/login", json={"username": "alice", "password": PASSWORD},
                          headers=_xff(spoofed))  # fmt: skip
        assert res.status_code == 429, (spoofed, res.text)  # ...whatever it prepends
    assert client.post("/login", json={"username": "alice", "password": PASSWORD},
                       headers=_xff("198.51.100.200")).status_code == 200  # fmt: skip
    # A peer that is not a listed proxy is counted as itself, whatever it forwards.
    other = TestClient(client.app, client=("192.0.2.2", 4000))
    codes = [_ghost(other, f"198.51.100.{100 + i}") for i in range(11)]
    assert codes == [401] * 10 + [429], codes


def test_served_api_ignores_x_forwarded_for_from_loopback(
    capital_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`corec api` as served: uvicorn used to take X-Forwarded-For from 127.0.0.1 as the
    peer (its proxy_headers default), so the header alone reset the limit."""
    monkeypatch.setenv("COREC_CONFIG", str(DATA / "capital_config.json"))
    monkeypatch.setenv("COREC_JWT_SECRET", "j" * 40)
    monkeypatch.delenv("COREC_TRUSTED_PROXIES", raising=False)
    monkeypatch.delenv("FORWARDED_ALLOW_IPS", raising=False)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    log = tmp_path / "api.log"
    cmd = [sys.executable, "-m", "corec_tasks.cli", "api", "--port", str(port)]
    with managed(cmd, log), httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
        deadline = time.monotonic() + 60
        while True:
            try:
                http.get("/health")
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.2)
        codes = [_ghost(http, f"203.0.113.{i}") for i in range(12)]
    assert codes == [401] * 10 + [429] * 2, codes


def test_strangers_cannot_lock_an_admin_out(make_api: Api) -> None:
    client, aaa = make_api(**FAST, max_login_attempts=3)
    for _ in range(3):
        assert _login(client, "root", "guess guess guess").status_code == 401
    # The stranger's client is locked out of root, right password or not...
    assert _login(client, "root").json() == _login(client, "nobody").json()
    # ...root, from anywhere else, is not.
    admin = TestClient(client.app, client=("198.51.100.7", 4000))
    assert _login(admin, "root").status_code == 200
    assert [u.locked_until for u in aaa.list_users() if u.username == "root"] == [None]
    # A member's account still locks (the per-client limit bounds a stranger's guesses).
    for _ in range(3):
        _login(client, "bob", "guess guess guess")
    assert _login(admin, "bob").status_code == 401


def test_concurrent_hashes_are_bounded_in_memory(make_api: Api) -> None:
    """20 parallel logins at the default argon2 cost (64 MiB each) and the default bound
    of 2 hashes at once; the wait is raised only so a loaded machine cannot flake."""
    _, aaa = make_api(hash_wait_s=60)
    assert aaa.config.max_concurrent_hashes == 2
    proc = psutil.Process()
    base = peak = proc.memory_info().rss
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, proc.memory_info().rss)
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        with ThreadPoolExecutor(20) as pool:
            tokens = list(pool.map(lambda _: aaa.authenticate("alice", PASSWORD), range(20)))
    finally:
        done.set()
        sampler.join()
    assert len(set(tokens)) == 20
    delta = (peak - base) / MiB
    print(f"20 parallel logins: RSS {base / MiB:.0f} -> {peak / MiB:.0f} MiB (+{delta:.0f})")
    assert delta < 2 * 64 + 100, delta


def test_logins_beyond_the_bound_wait_briefly_then_503(make_api: Api) -> None:
    client, aaa = make_api(**{**FAST, "argon2_memory_cost": 65536}, hash_wait_s=0.05,
                           login_per_client=1000)  # fmt: skip
    assert AAAConfig().hash_wait_s == 5.0

    def login(_: int) -> tuple[int, Any]:
        res = _login(client, "alice")
        return res.status_code, res.json()

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(login, range(12)))
    codes = [c for c, _ in answers]
    assert set(codes) <= {200, 503} and 200 in codes and 503 in codes, codes
    busy = next(body for code, body in answers if code == 503)
    assert busy["retry"] is True and "too many logins at once" in busy["error"]
    with pytest.raises(BusyError), aaa._slots.slot(), aaa._slots.slot():
        aaa.authenticate("alice", PASSWORD)


def test_password_change_revokes_the_other_sessions(make_api: Api) -> None:
    client, _ = make_api(**FAST)
    mine, other = _bearer(client, "alice"), _bearer(client, "alice")
    body = {"old_password": "not it at all", "new_password": "a new long password"}
    wrong = client.post("/password", headers=mine, json=body)
    assert wrong.status_code == 401 and "current password is wrong" in wrong.json()["error"]
    short = client.post("/password", headers=mine,
                        json={"old_password": PASSWORD, "new_password": "short"})  # fmt: skip
    assert short.status_code == 400 and "at least 12" in short.json()["error"]
    done = client.post("/password", headers=mine, json={**body, "old_password": PASSWORD})
    assert done.status_code == 200 and done.json() == {"ok": True, "sessions_revoked": 1}
    assert client.get("/capital/status", headers=mine).status_code == 200
    assert client.get("/capital/status", headers=other).status_code == 401
    assert _login(client, "alice").status_code == 401
    assert _login(client, "alice", "a new long password").status_code == 200
    assert client.post("/password", json=body).status_code == 401


def test_corec_users_passwd_reads_stdin_and_revokes_every_session(make_api: Api) -> None:
    _, aaa = make_api(**FAST)
    token = aaa.authenticate("bob", PASSWORD)
    res = CliRunner().invoke(main, ["users", "passwd", "bob", "--password-stdin"],
                             input="bob's new password\n", catch_exceptions=False)  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "password of 'bob' changed; 1 session(s) revoked" in res.output
    with pytest.raises(TokenRevokedError):
        aaa.verify(token)
    with pytest.raises(AuthenticationError):
        aaa.authenticate("bob", PASSWORD)
    aaa.authenticate("bob", "bob's new password")
    # Without --password-stdin it prompts twice (hidden); never from argv.
    res = CliRunner().invoke(main, ["users", "passwd", "bob"],
                             input="third password!!\nthird password!!\n")  # fmt: skip
    assert res.exit_code == 0, res.output
    aaa.authenticate("bob", "third password!!")
    assert "--password " not in CliRunner().invoke(main, ["users", "passwd", "--help"]).output
    missing = CliRunner().invoke(main, ["users", "passwd", "nobody", "--password-stdin"],
                                 input="whatever password\n")  # fmt: skip
    assert missing.exit_code != 0 and "no user named 'nobody'" in missing.output
