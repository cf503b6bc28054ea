"""The HTTP API refuses odd number notations and odd identities with a 4xx, changes
nothing, and never echoes the whole body back."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from plugins.aaa.service import AAAPlugin
from plugins.capital_pool.service import CapitalPool
from tests.integration.test_core_api import _token, api  # noqa: F401 (the fixture)

pytestmark = pytest.mark.integration

ODD_AMOUNTS: list[Any] = ["1_000", "１００", "١٠٠", " 100", "100\n", "1e2", "1E2", "+100",
                          "100.001", "NaN", "Infinity", "-100", "0x64", "", "1" * 40,
                          "0100", "00.5", "0100.00", "00", "-0100",
                          True, 100, 100.5, None, ["100"], {"v": "100"}]  # fmt: skip


def test_odd_amounts_are_refused_and_change_nothing(
    api: tuple[TestClient, AAAPlugin],  # noqa: F811
) -> None:
    client, _ = api
    alice = _token(client, "alice")
    for amount in ODD_AMOUNTS:
        for path in ("/capital/contribute", "/capital/withdraw"):
            res = client.post(path, headers=alice,
                              json={"amount": amount, "idempotency_key": "x-1"})  # fmt: skip
            assert 400 <= res.status_code < 500, (amount, res.status_code, res.text)
            body = res.json()
            assert body["ok"] is False and "amount" in body["error"], body
            assert len(res.text) < 700
    after = client.get("/capital/status", headers=alice).json()
    assert (after["equity"], after["units"], after["members"]) == ("0.00", "0.00000000", {})


def test_odd_identities_and_unknown_fields_are_refused(
    api: tuple[TestClient, AAAPlugin],  # noqa: F811
) -> None:
    client, _ = api
    root = _token(client, "root")
    bad: list[dict[str, Any]] = [
        {"amount": "500", "idempotency_key": "k1", "user": "alice\n"},
        {"amount": "500", "idempotency_key": "k2", "user": "al ice"},
        {"amount": "500", "idempotency_key": "k3", "user": "a" * 129},
        {"amount": "500", "idempotency_key": "k4", "user": 7},
        {"amount": "500", "idempotency_key": "k\n5"},
        {"amount": "500", "idempotency_key": "k" * 201},
        {"amount": "500", "idempotency_key": "k6", "ammount": "5"},
        {"amount": "500"},
    ]
    for body in bad:
        res = client.post("/capital/contribute", headers=root, json=body)
        assert res.status_code == 422, (body, res.text)
        assert res.json()["ok"] is False and len(res.text) < 700, res.text
    for raw in (b"{not json", b"\xff\xfe", b"[1, 2]", b'"' + b"x" * 100_000 + b'"'):
        res = client.post("/capital/contribute", content=raw,
                          headers={**root, "Content-Type": "application/json"})  # fmt: skip
        assert res.status_code == 422 and res.json()["ok"] is False, res.text[:300]
        assert len(res.text) < 700
    assert client.get("/capital/members/alice%0A", headers=root).status_code == 422
    assert client.get("/capital/members/" + "a" * 200, headers=root).status_code == 422
    assert client.get("/capital/status", headers=root).json()["members"] == {}
    # the valid forms still work
    for i, amount in enumerate(["100", "100.5", "100.50"]):
        res = client.post("/capital/contribute", headers=root,
                          json={"amount": amount, "idempotency_key": f"ok-{i}", "user": "alice"})
        assert res.status_code == 200, res.text  # fmt: skip
    assert client.get("/capital/members/alice", headers=root).json()["contributed"] == "301.00"


def _ledger(pool: CapitalPool) -> tuple[Any, ...]:
    """The pool as the ledger has it: equity, cash, units, each member, the head entry."""
    state, holdings, head = pool.ledger.snapshot()
    return state.equity, state.cash, state.units, holdings, head


def _raw(client: TestClient, path: str, body: bytes, auth: dict[str, str]) -> Any:
    return client.post(path, content=body, headers={**auth, "Content-Type": "application/json"})


def test_duplicate_keys_are_refused_anywhere_and_change_nothing(
    api: tuple[TestClient, AAAPlugin],  # noqa: F811
    pool: CapitalPool,
) -> None:
    """Measured on main: {"amount": "100.00", "amount": "99999.00"} contributed $99,999.00
    (the last key won)."""
    client, _ = api
    alice, root = _token(client, "alice"), _token(client, "root")
    first = client.post("/capital/contribute", headers=alice,
                        json={"amount": "500.00", "idempotency_key": "a-1"})  # fmt: skip
    assert first.status_code == 200, first.text
    before = _ledger(pool)
    cases = [
        (b'{"amount": "100.00", "amount": "99999.00", "idempotency_key": "d-1"}', "'amount'"),
        (b'{"amount": "99999.00", "amount": "100.00", "idempotency_key": "d-2"}', "'amount'"),
        (b'{"amount": "100.00", "idempotency_key": "d-3", "idempotency_key": "a-1"}',
         "'idempotency_key'"),
        (b'{"amount": "100.00", "idempotency_key": "d-4", "user": "alice", "user": "bob"}',
         "'user'"),
        (b'{"amount": "100.00", "idempotency_key": "d-5", "x": {"k": 1, "k": 2}}', "'k'"),
        (b'{"amount": "100.00", "idempotency_key": "d-6", "x": [{"a": {"b": 1, "b": 1}}]}',
         "'b'"),
        (b'{"amount": "100.00", "idempotency_key": "d-7", "x": NaN}', "NaN"),
        (b'{"amount": "100.00", "idempotency_key": "d-8", "x": -Infinity}', "-Infinity"),
    ]
    for who in (alice, root):
        for path in ("/capital/contribute", "/capital/withdraw"):
            for body, named in cases:
                res = _raw(client, path, body, who)
                assert res.status_code == 422, (path, body, res.text)
                error = res.json()["error"]
                assert res.json()["ok"] is False and named in error, (body, error)
                if b"NaN" not in body and b"Infinity" not in body:
                    assert "duplicate key" in error, error
    # Logins too: the first username is not the one checked.
    res = _raw(client, "/login", b'{"username": "eve", "username": "root", "password": "x"}', {})
    assert res.status_code == 422 and "duplicate key 'username'" in res.json()["error"]
    res = _raw(client, "/password", b'{"old_password": "correct horse battery", '
               b'"new_password": "a new long password", "new_password": "x"}', alice)  # fmt: skip
    assert res.status_code == 422 and "'new_password'" in res.json()["error"], res.text
    assert _ledger(pool) == before
    assert client.get("/capital/members/alice", headers=alice).json()["contributed"] == "500.00"
    # One key once is fine; equal values in different objects are not duplicates.
    res = _raw(client, "/capital/contribute",
               b'{"amount": "100.00", "idempotency_key": "ok-1", "user": "alice"}', root)
    assert res.status_code == 200, res.text


def test_leading_zero_amounts_are_refused_and_change_nothing(
    api: tuple[TestClient, AAAPlugin],  # noqa: F811
    pool: CapitalPool,
) -> None:
    client, _ = api
    alice = _token(client, "alice")
    assert client.post("/capital/contribute", headers=alice,
                       json={"amount": "500.00", "idempotency_key": "a-1"}).status_code == 200
    before = _ledger(pool)
    for amount in ("0100", "0100.00", "00.5", "00100", "0500.00"):
        for path in ("/capital/contribute", "/capital/withdraw"):
            res = client.post(path, headers=alice,
                              json={"amount": amount, "idempotency_key": f"z-{amount}"})
            assert res.status_code == 422, (amount, res.text)
            assert res.json()["error"].startswith("body.amount: "), res.text
            assert "no leading zero" in res.json()["error"], res.text
    assert _ledger(pool) == before
    res = client.post("/capital/withdraw", headers=alice,
                      json={"amount": "0.50", "idempotency_key": "w-1"})  # fmt: skip
    assert res.status_code == 200, res.text
