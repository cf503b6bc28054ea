"""Every capital task answers ``{"ok": false, "error": ...}`` to arguments it cannot use,
through a real Celery worker process: wrong types, wrong arity, unknown keyword
arguments, odd number notations, huge strings. None becomes a task failure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
from celery import Celery

from corec_tasks.celeryconfig import build
from corec_tasks.db import libpq_url
from corec_tasks.settings import Settings, load_settings
from corec_tasks.task_auth import SigningAMQP
from plugins.capital_pool import grants
from tests.conftest import DATA
from tests.integration.workers import running_workers

pytestmark = pytest.mark.integration

HUGE = "k" * 10_240

#: (task, args, kwargs, a fragment of the error)
HOSTILE: list[tuple[str, list[Any], dict[str, Any], str]] = [
    # the calls measured on main: each raised inside the worker
    ("member", [["x"]], {}, "user_id: Input should be a valid string"),
    ("allocate", [{"k": 1}], {}, "key: Input should be a valid string"),
    ("allocate", [HUGE], {}, "key: String should have at most 200 characters"),
    ("consume", ["many"], {}, "count: Input should be a valid integer"),
    # arity and names
    ("contribute", [], {}, "user_id: Field required"),
    ("contribute", ["alice"], {}, "amount: Field required"),
    ("contribute", ["alice", "100", "k1", None, "extra"], {}, "takes 4 argument(s) at most"),
    ("contribute", ["alice", "100"], {"user_id": "bob"}, "both by position and by name"),
    ("withdraw", ["alice", "100", "k1"], {"bogus": 1}, "bogus: unknown argument"),
    ("status", [1], {}, "takes 0 argument(s) at most"),
    ("verify", [], {"deep": True}, "deep: unknown argument"),
    ("member", [], {}, "user_id: Field required"),
    ("consume", [0], {}, "count: Input should be greater than or equal to 1"),
    ("consume", [True], {}, "count: Input should be a valid integer"),
    # identity and money
    ("member", ["alice\n"], {}, "user_id: String should match pattern"),
    ("member", [HUGE], {}, "user_id: String should have at most 128 characters"),
    ("contribute", ["alice", True, "k2"], {}, "amount: is required"),
    ("contribute", ["alice", "1_000", "k3"], {}, "not a number in plain decimal digits"),
    ("contribute", ["alice", "１００", "k4"], {}, "not a number in plain decimal digits"),
    ("contribute", ["alice", "١٠٠", "k5"], {}, "not a number in plain decimal digits"),
    ("contribute", ["alice", " 100", "k6"], {}, "not a number in plain decimal digits"),
    ("contribute", ["alice", "100\n", "k7"], {}, "not a number in plain decimal digits"),
    ("contribute", ["alice", "1e2", "k8"], {}, "not a number in plain decimal digits"),
    ("contribute", ["alice", "100.001", "k9"], {}, "more than 2 decimal places"),
    ("contribute", ["alice", HUGE, "k10"], {}, "not a number in plain decimal digits"),
    ("withdraw", ["alice", "100", "k\n11"], {}, "idempotency_key: String should match"),
    ("withdraw", ["alice", "100", "k12"], {"grant": 5}, "grant: Input should be a valid string"),
    ("withdraw", ["alice", "100", "k13"], {"grant": "a\x00b"}, "grant: String should match"),
    ("withdraw", ["alice", "100", "k14"], {"token": "x"}, "token: unknown argument"),
    ("member", ["alice"], {"token": "x"}, "token: unknown argument"),
    ("member", ["a\x00b"], {}, "user_id: String should match pattern"),
]


def test_every_capital_task_answers_bad_arguments_with_ok_false(
    capital_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COREC_CONFIG", str(DATA / "capital_config.json"))
    # A client app on this test's settings (its key prefix): the process's own app keeps
    # the configuration it first read, which may be an earlier test's.
    app = Celery("capital-task-args", set_as_current=False, amqp=SigningAMQP)
    app.conf.update(build(load_settings()))
    with running_workers(["args1"], tmp_path):
        pending = [
            app.send_task(f"capital_pool.{task}", args=args, kwargs=kwargs)
            for task, args, kwargs, _ in HOSTILE
        ]
        # consume ignores its result: its answers are checked by calling it directly below.
        results = [
            None if task == "consume" else res.get(timeout=60, propagate=False)
            for (task, *_), res in zip(HOSTILE, pending, strict=True)
        ]
        for res, (task, *_) in zip(pending, HOSTILE, strict=True):
            if task != "consume":
                assert res.state == "SUCCESS", (task, res.state, res.result)
        # The valid forms still work through the same worker (with a grant each).
        key = grants.load_key(capital_settings)
        good = [
            app.send_task("capital_pool.contribute", args=["alice", amount, f"good-{i}"],
                          kwargs={"grant": grants.mint(
                              "alice", "capital.contribute", str(amount), f"good-{i}",
                              user_id=None, username="operator:tests", key=key)})
            for i, amount in enumerate(["100", "100.5", "100.50", 100, 100.5])
        ]  # fmt: skip
        answers = [g.get(timeout=60) for g in good]
        member = app.send_task("capital_pool.member", args=["alice"]).get(timeout=60)
        status = app.send_task("capital_pool.status").get(timeout=60)
        verify = app.send_task("capital_pool.verify").get(timeout=60)
    log = (tmp_path / "args1.log").read_text(errors="replace")
    assert "raised unexpected" not in log and "Traceback" not in log, log[-3000:]
    assert log.count("capital_pool.consume[") >= 2  # consume's calls ran, and answered
    for result, (task, args, kwargs, fragment) in zip(results, HOSTILE, strict=True):
        if result is None:
            continue
        assert result["ok"] is False, (task, args, kwargs, result)
        assert result["error"].startswith(f"capital_pool.{task}: "), result
        assert fragment in result["error"], (task, args, kwargs, result["error"])
        assert len(result["error"]) <= 600  # never the whole 10 KiB input
    assert [a["ok"] for a in answers] == [True] * 5, answers
    assert [a["amount"] for a in answers] == ["100.00", "100.50", "100.50", "100.00", "100.50"]
    assert member["ok"] and member["contributed"] == "501.50", member
    assert status["ok"] and list(status["members"]) == ["alice"]  # no "alice\n" member
    assert verify == {"ok": True, "problems": []}
    with psycopg.connect(libpq_url(capital_settings.database_url)) as conn:
        keys = [r[0] for r in conn.execute("SELECT idempotency_key FROM capital_actions")]
        audited = conn.execute("SELECT action, details::json->>'result', "
                               "details::json->>'principal' FROM audit_log").fetchall()
    assert sorted(keys) == [f"good-{i}" for i in range(5)]  # no hostile call wrote anything
    # Every money call is audited: the hostile ones as refused by an unverified caller.
    moves = [c for c in HOSTILE if c[0] in ("contribute", "withdraw")]
    assert sorted(audited) == sorted(
        [(f"capital.{t}", "refused", "celery:unverified") for t, *_ in moves]
        + [("capital.contribute", "ok", "operator:tests")] * 5
    )


def test_consume_answers_bad_arguments_in_process() -> None:
    """consume's result is ignored by Celery (beat fires it): its answer, checked here."""
    from plugins.capital_pool import tasks

    for args, kwargs in [(["many"], {}), ([0], {}), ([1, 2], {}), ([], {"x": 1}), ([1.5], {})]:
        answer = tasks.consume(*args, **kwargs)
        assert answer["ok"] is False and answer["error"].startswith("capital_pool.consume: ")
