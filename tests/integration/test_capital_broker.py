"""The broker is not a way in, and every capital action is audited: real worker processes.

A plain Celery client that knows only the Redis URL (no CoreC code, no key) sends
capital tasks: its unsigned messages are refused before they run (corec_tasks/task_auth.py),
counted and alerted; nothing moves. Behind that, a client holding the task key but no
grant key (defence in depth) sends capital tasks with no grant, a forged, expired, reused
or mismatched one: nothing moves and each refusal is an ``audit_log`` row. A valid grant
applies once, audited with its principal; a copy of its message is refused, and if a
Redis holder deletes the "already ran" record the ledger's idempotency key still replays.
Operators' paths (``corec capital grant`` + ``celery call``, ``--via-celery``, direct)
are audited as ``operator:...``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import jwt
import psycopg
import pytest
import redis
from celery import Celery

from corec_tasks.config import CHANNEL_QUEUES
from corec_tasks.db import libpq_url
from corec_tasks.settings import Settings
from corec_tasks.task_auth import REFUSED, SigningAMQP, done_key
from plugins.aaa.service import AAAPlugin
from plugins.capital_pool import audit, grants
from plugins.capital_pool.config import load_config
from plugins.capital_pool.service import CapitalPool
from tests.conftest import DATA, ROOT
from tests.integration.workers import celery, running_workers

pytestmark = pytest.mark.integration

FAST = {"argon2_time_cost": 1, "argon2_memory_cost": 8, "argon2_parallelism": 1}


def _plain_client(settings: Settings, signing: bool = False) -> Celery:
    """What an intruder on the broker can build: the URL (and the deployment's key
    prefix, which is no secret; empty by default), and nothing of CoreC. ``signing``:
    the same client with CoreC's message signing and the node's task key."""
    opts = {"global_keyprefix": settings.redis_prefix} if settings.redis_prefix else {}
    app = Celery("insider" if signing else "intruder", broker=settings.redis_url,
                 backend=settings.redis_url, set_as_current=False,
                 amqp=SigningAMQP if signing else None)  # fmt: skip
    app.conf.update(broker_transport_options=opts, result_backend_transport_options=opts,
                    task_default_queue=CHANNEL_QUEUES[1])  # fmt: skip
    return app


def _refused(settings: Settings) -> int:
    return int(redis.Redis.from_url(settings.redis_url).get(settings.key(REFUSED)) or 0)


def _rows(settings: Settings, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(libpq_url(settings.database_url)) as conn:
        return conn.execute(sql, args).fetchall()


def _audit(settings: Settings) -> list[tuple[Any, ...]]:
    """(user_id, action, details) of every capital audit row, oldest first."""
    return [(u, a, json.loads(d)) for u, a, d in _rows(
        settings, "SELECT user_id, action, details FROM audit_log "
                  "WHERE action LIKE 'capital.%%' ORDER BY id")]  # fmt: skip


def test_a_plain_celery_client_moves_nothing_and_every_refusal_is_audited(
    capital_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COREC_CONFIG", str(DATA / "capital_config.json"))
    monkeypatch.delenv("COREC_GRANT_KEY", raising=False)
    aaa = AAAPlugin.from_url(capital_settings.database_url, FAST)
    alice_id = aaa.add_user("alice", "correct horse battery", "member", via="test").id
    aaa.close()
    pool = CapitalPool(capital_settings, load_config())
    assert pool.contribute("alice", "1000.00", "seed", principal="operator:tests")["ok"]
    key = grants.load_key(capital_settings, {})  # the node's key (data_dir/grant.key)
    old = datetime.now(UTC) - timedelta(seconds=grants.TTL_S + 1)  # the default TTL, 60 s

    def grant(member: str = "alice", action: str = "capital.withdraw", amount: str = "100.00",
              idem: str = "w-ok", **kw: Any) -> str:  # fmt: skip
        args: dict[str, Any] = {"user_id": alice_id, "username": "alice", "key": key} | kw
        return grants.mint(member, action, amount, idem, **args)

    good = grant()
    intruder = _plain_client(capital_settings)
    insider = _plain_client(capital_settings, signing=True)
    #: (task, args, kwargs, a fragment of the refusal)
    refused: list[tuple[str, list[Any], dict[str, Any], str]] = [
        ("withdraw", ["alice", "100.00", "w-1"], {}, "a capital grant is required"),
        ("contribute", ["mallory", "1000000.00", "m-1"], {}, "a capital grant is required"),
        ("withdraw", ["alice", "100.00", "w-ok"], {"grant": grant(key=b"f" * 40)}, "signature"),
        ("withdraw", ["alice", "100.00", "w-ok"], {"grant": grant(now=old)}, "expired"),
        ("withdraw", ["alice", "100.00", "w-ok"], {"grant": grant(member="bob")}, "grant is for"),
        ("withdraw", ["alice", "900.00", "w-ok"], {"grant": grant()}, "grant is for"),
        ("withdraw", ["alice", "100.00", "w-2"], {"grant": grant()}, "grant is for"),
        ("withdraw", ["alice", "100.00", "w-ok"],
         {"grant": grant(action="capital.contribute")}, "grant is for"),
        ("withdraw", ["alice", "100.00", "w-ok"], {"grant": "not.a.jwt"}, "well-formed"),
        ("withdraw", ["alice", "1e9", "w-3"], {}, "not a number in plain decimal digits"),
    ]  # fmt: skip
    client = redis.Redis.from_url(capital_settings.redis_url)
    try:
        with running_workers(["sec1"], tmp_path):
            # Unsigned: refused before running, even with a valid grant; nothing answers.
            unsigned = [intruder.send_task(f"capital_pool.{t}", args=a, kwargs=k)
                        for t, a, k, _ in refused[:2]]  # fmt: skip
            unsigned.append(intruder.send_task("capital_pool.withdraw",
                                               args=["alice", "100.00", "w-ok"],
                                               kwargs={"grant": good}))  # fmt: skip
            deadline = time.monotonic() + 60
            while _refused(capital_settings) < len(unsigned):
                assert time.monotonic() < deadline, _refused(capital_settings)
                time.sleep(0.1)
            assert all(r.state == "PENDING" for r in unsigned)
            answers = [insider.send_task(f"capital_pool.{t}", args=a, kwargs=k).get(timeout=60)
                       for t, a, k, _ in refused]  # fmt: skip
            first = insider.send_task("capital_pool.withdraw", args=["alice", "100.00", "w-ok"],
                                      kwargs={"grant": good})  # fmt: skip
            applied = first.get(timeout=60)
            # The same grant in another task: refused by the grant's single use.
            reused = insider.send_task("capital_pool.withdraw", args=["alice", "100.00", "w-ok"],
                                       kwargs={"grant": good}).get(timeout=60)  # fmt: skip
            # The same task again: refused as a copy of one that ran, never run.
            first.forget()  # else the first result would answer for the copy
            before = _refused(capital_settings)
            insider.send_task("capital_pool.withdraw", args=["alice", "100.00", "w-ok"],
                              kwargs={"grant": good}, task_id=first.id)  # fmt: skip
            while _refused(capital_settings) == before:
                assert time.monotonic() < deadline + 60, "the copy was not refused"
                time.sleep(0.1)
            # A Redis holder deletes the "ran" record: the copy runs, and the ledger's
            # idempotency key replays the first result (nothing moves twice).
            assert client.delete(done_key(capital_settings, first.id)) == 1
            redelivered = insider.send_task(
                "capital_pool.withdraw", args=["alice", "100.00", "w-ok"],
                kwargs={"grant": good}, task_id=first.id).get(timeout=60)  # fmt: skip
        member = pool.member("alice")
        verified = pool.verify()
        log = (tmp_path / "sec1.log").read_text()
    finally:
        pool.close()
        intruder.close()
        insider.close()
        client.close()
    assert log.count("unsigned task message (not run)") == len(unsigned)
    assert log.count("a copy of a task that already ran (not run)") == 1

    for answer, (task, args, _, fragment) in zip(answers, refused, strict=True):
        assert answer["ok"] is False and fragment in answer["error"], (task, args, answer)
        assert answer["error"].startswith(f"capital_pool.{task}: ")
    assert applied["ok"] and applied["amount"] == "100.00", applied
    assert reused["ok"] is False and "already used" in reused["error"], reused
    assert redelivered.get("replayed") is True and redelivered["units"] == applied["units"]
    # Nothing moved but the one withdrawal; no member "mallory"; the ledger holds.
    assert (member["contributed"], member["withdrawn"]) == ("1000.00", "100.00")
    assert verified == {"ok": True, "problems": []}
    assert _rows(capital_settings, "SELECT user_id FROM capital_members") == [("alice",)]
    assert _rows(capital_settings, "SELECT count(*) FROM capital_ledger") == [(2,)]

    rows = _audit(capital_settings)
    assert len(rows) == 1 + len(refused) + 3  # one per call: the seed, refusals, the rest
    seed, *refusals, ok, again, replay = rows
    assert (seed[0], seed[2]["principal"], seed[2]["result"]) == (None, "operator:tests", "ok")
    for (user_id, action, details), (task, args, _, fragment) in zip(refusals, refused,
                                                                     strict=True):  # fmt: skip
        assert (user_id, action, details["principal"], details["result"]) == (
            None, f"capital.{task}", audit.UNVERIFIED, "refused")  # fmt: skip
        assert details["member"] == args[0] and details["idempotency_key"] == args[2]
        assert fragment in details["reason"] and details["task_id"]
    assert ok == (alice_id, "capital.withdraw", {
        "principal": "user:alice", "member": "alice", "amount": "100.00",
        "idempotency_key": "w-ok", "result": "ok"})  # fmt: skip
    assert again[2]["result"] == "refused" and "already used" in again[2]["reason"]
    assert again[2]["task_id"] not in (first.id, None)
    assert (replay[0], replay[2]["principal"], replay[2]["result"]) == (
        alice_id, "user:alice", "replayed")  # fmt: skip
    assert Decimal(refusals[1][2]["amount"]) == Decimal("1000000.00")  # mallory's, on record


def _corec(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "corec_tasks.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_operators_grant_celery_call_via_celery_and_direct_are_audited(
    capital_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COREC_CONFIG", str(DATA / "capital_config.json"))
    monkeypatch.delenv("COREC_GRANT_KEY", raising=False)
    # Results read by id (not corec_tasks.celery.app: it keeps the first settings it saw).
    app = _plain_client(capital_settings, signing=True)
    me = audit.operator()
    assert me.startswith("operator:") and "@" in me
    # Direct: no worker, the ledger itself, as the OS user at this host.
    direct = _corec("capital", "contribute", "alice", "500.00", "--key", "cli-direct", "--json")
    assert direct.returncode == 0 and json.loads(direct.stdout)["ok"], direct.stderr
    printed = _corec("capital", "grant", "alice", "contribute", "200.00", "cli-grant")
    assert printed.returncode == 0, printed.stderr
    token = printed.stdout.strip()
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == grants.TTL_S == 60 and claims["by"] == me
    bad = _corec("capital", "grant", "alice", "withdraw", "1", "k", "--as", "no spaces")
    assert bad.returncode != 0 and "operator name" in bad.stderr
    with running_workers(["sec2"], tmp_path):
        called = celery("call", "capital_pool.contribute", "--args",
                        json.dumps(["alice", "200.00", "cli-grant"]), "--kwargs",
                        json.dumps({"grant": token}))  # fmt: skip
        assert called.returncode == 0, called.stderr
        result = app.AsyncResult(called.stdout.strip()).get(timeout=60)
        via = _corec("capital", "withdraw", "alice", "100", "--key", "cli-vc", "--via-celery",
                     "--as", "ops-bob", "--json")  # fmt: skip
        # The printed grant is spent: a second `celery call` with it moves nothing.
        again = celery("call", "capital_pool.contribute", "--args",
                       json.dumps(["alice", "200.00", "cli-grant"]), "--kwargs",
                       json.dumps({"grant": token}))  # fmt: skip
        reused = app.AsyncResult(again.stdout.strip()).get(timeout=60)
    app.close()
    assert result["ok"] and result["amount"] == "200.00", result
    assert via.returncode == 0 and json.loads(via.stdout)["ok"], via.stderr
    assert reused["ok"] is False and "already used" in reused["error"]
    rows = [(u, a, d["principal"], d["idempotency_key"], d["result"])
            for u, a, d in _audit(capital_settings)]  # fmt: skip
    assert rows == [
        (None, "capital.contribute", me, "cli-direct", "ok"),
        (None, "capital.contribute", me, "cli-grant", "ok"),
        (None, "capital.withdraw", "operator:ops-bob", "cli-vc", "ok"),
        (None, "capital.contribute", audit.UNVERIFIED, "cli-grant", "refused"),
    ]
