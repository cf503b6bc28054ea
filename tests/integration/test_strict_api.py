"""The HTTP API refuses odd number notations and odd identities with a 4xx, changes
nothing, and never echoes the whole body back."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from plugins.aaa.service import AAAPlugin
from tests.integration.test_core_api import _token, api  # noqa: F401 (the fixture)

pytestmark = pytest.mark.integration

ODD_AMOUNTS: list[Any] = ["1_000", "１００", "١٠٠", " 100", "100\n", "1e2", "1E2", "+100",
                          "100.001", "NaN", "Infinity", "-100", "0x64", "", "1" * 40,
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
