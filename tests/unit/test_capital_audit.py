"""Capital audit rows and principals as plain functions; the obsolete ``auth`` option."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from corec_tasks.errors import ConfigurationError
from plugins.capital_pool import audit
from plugins.capital_pool.config import parse_config


def test_a_row_names_principal_action_member_amount_key_and_result() -> None:
    ok = audit.params("user:alice", "withdraw", "alice", Decimal("100.00"), "k-1", {"ok": True})
    assert (ok["a_user"], ok["a_action"]) == ("alice", "capital.withdraw")
    assert json.loads(ok["a_details"]) == {"principal": "user:alice", "member": "alice",
                                           "amount": "100.00", "idempotency_key": "k-1",
                                           "result": "ok"}  # fmt: skip
    replay = audit.params("operator:ops@h", "contribute", "bob", "5", "k", {"ok": True,
                                                                           "replayed": True})
    assert replay["a_user"] is None and json.loads(replay["a_details"])["result"] == "replayed"
    refused = audit.params(audit.UNVERIFIED, "bogus", "x" * 500, "9" * 500, ["k"],
                           {"ok": False, "error": "why " * 400}, task_id="t-1")  # fmt: skip
    details = json.loads(refused["a_details"])
    assert refused["a_action"] == "capital.invalid" and refused["a_user"] is None
    assert details["result"] == "refused" and len(details["reason"]) == 500
    assert len(details["member"]) <= 40 and len(details["amount"]) <= 40
    assert details["idempotency_key"] == "['k']" and details["task_id"] == "t-1"


def test_principals_are_checked_and_operators_named() -> None:
    assert audit.operator("ops-1") == "operator:ops-1"
    assert audit.operator().startswith("operator:")
    for bad in ("has space", "", "a" * 101, "user:alice"):
        with pytest.raises(ValueError, match="operator name"):
            audit.operator(bad)
    assert audit.check_principal("user:alice") == "user:alice"
    for bad_principal in ("alice", "", None, "user:", "user:a b", 5):
        with pytest.raises(ValueError, match="a principal is"):
            audit.check_principal(bad_principal)


def test_an_old_config_with_require_token_is_read_and_the_option_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    for value in (True, False):
        assert not hasattr(parse_config({"auth": {"require_token": value}}), "auth")
    assert "obsolete" in caplog.text
    for bad in ({"auth": {"require_token": "yes"}}, {"auth": {"other": True}}):
        with pytest.raises(ConfigurationError, match="auth"):
            parse_config(bad)
