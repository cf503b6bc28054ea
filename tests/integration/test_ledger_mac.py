"""Insider attack (b), on real PostgreSQL, connected AS the application role: the ledger's
MACs make a forged, well-chained entry fail ``verify`` (seq, kind, why); the role cannot
rewrite accounts or delete idempotency records, while the normal paths still work; a
missing, short or wrong ledger key gives a clear error."""

from __future__ import annotations

import json
import secrets
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import errors

from corec_tasks.db import libpq_url
from corec_tasks.errors import ConfigurationError
from plugins.aaa.main import AAAPlugin
from plugins.aaa.tokens import SECRET_ENV
from plugins.capital_pool import chain, ledger_key
from plugins.capital_pool.config import load_config
from plugins.capital_pool.ledger import Ledger
from plugins.capital_pool.ledger_key import LedgerKeyError
from tests.integration.test_app_role import migrated, roles  # noqa: F401  (fixtures)

pytestmark = pytest.mark.integration

KEY = secrets.token_hex(32).encode()
OP = "operator:test"
FAST = {"argon2_time_cost": 1, "argon2_memory_cost": 8, "argon2_parallelism": 1}


def _app(urls: dict[str, str]) -> psycopg.Connection[Any]:
    return psycopg.connect(libpq_url(urls["app"]), autocommit=True)


def _forge_contribution(conn: psycopg.Connection[Any], member: str, amount: Decimal) -> int:
    """What attacker (b) did: the next entry computed from the documented format, with
    matching pool_state, capital_members, contributions and an audit row naming an
    operator who did nothing. Returns the forged entry's seq."""
    with conn.transaction():
        equity, cash, active, units, seq, head = conn.execute(
            "SELECT equity, cash, active, units, seq, head_hash FROM pool_state FOR UPDATE"
        ).fetchone()  # type: ignore[misc]
        nav = equity / units
        moved = (amount / nav).quantize(Decimal("0.00000001"))
        when = conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
        entry = chain.Entry(seq + 1, when, "forged-1", "contribute", member, None, amount,
                            Decimal(0), moved, equity + amount, cash + amount, active,
                            units + moved)  # fmt: skip
        digest = chain.entry_hash(head, entry)
        conn.execute(
            "INSERT INTO capital_ledger (idempotency_key, kind, user_id, cash_delta, "
            "active_delta, units_delta, equity_after, cash_after, active_after, units_after, "
            "seq, created_at, prev_hash, hash, mac) "
            "VALUES (%s, 'contribute', %s, %s, 0, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            ("forged-1", member, amount, moved, equity + amount, cash + amount, active,
             units + moved, seq + 1, when, head, digest, secrets.token_hex(32)),
        )  # fmt: skip
        conn.execute("UPDATE pool_state SET equity = %s, cash = %s, units = %s, seq = %s, "
                     "head_hash = %s", (equity + amount, cash + amount, units + moved,
                                        seq + 1, digest))  # fmt: skip
        conn.execute("UPDATE capital_members SET units = units + %s, "
                     "contributed = contributed + %s WHERE user_id = %s",
                     (moved, amount, member))  # fmt: skip
        conn.execute("INSERT INTO contributions (user_id, amount, units, nav, idempotency_key) "
                     "VALUES (%s, %s, %s, %s, 'forged-1')", (member, amount, moved, nav))
        details = {"principal": "operator:alice-ops", "member": member, "amount": f"{amount}",
                   "idempotency_key": "forged-1", "result": "ok"}  # fmt: skip
        conn.execute("INSERT INTO audit_log (user_id, action, timestamp, details) "
                     "VALUES (NULL, 'capital.contribute', now(), %s)", (json.dumps(details),))
    return int(seq + 1)


def test_the_app_role_cannot_rewrite_accounts_or_delete_idempotency_records(
    migrated: dict[str, str],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(SECRET_ENV, "j" * 40)
    aaa = AAAPlugin.from_url(migrated["app"], FAST)
    ledger = Ledger(migrated["app"], load_config(), key=KEY)
    name = f"m{uuid.uuid4().hex[:8]}"
    try:
        # The normal paths, as the app role: an admin's account creation, a login (with
        # its rehash path), a password change, a capital action.
        made = aaa.add_user(name, "first password!", "member", via="cli")
        assert made.role.value == "member"
        assert aaa.authenticate(name, "first password!")
        assert aaa.change_password(name, "second password!", old_password="first password!") == 1
        assert aaa.authenticate(name, "second password!")
        assert ledger.contribute(name, "200.00", "k1", principal=OP)["ok"]
        with _app(migrated) as conn:
            for statement in (
                f"UPDATE users SET role = 'admin' WHERE username = '{name}'",
                f"UPDATE users SET password_hash = 'x' WHERE username = '{name}'",
                "INSERT INTO users (username, password_hash, role, is_active, created_at, "
                "failed_logins) VALUES ('evil', '$argon2id$x', 'admin', true, now(), 0)",
                f"DELETE FROM users WHERE username = '{name}'",
                "DELETE FROM capital_actions",
                "UPDATE capital_actions SET ok = false",
                "DELETE FROM capital_ledger_seals",
            ):
                with pytest.raises((errors.InsufficientPrivilege, errors.RaiseException)):
                    conn.execute(statement)
            # What the app may still change on users: lockout counters, activity.
            conn.execute(f"UPDATE users SET failed_logins = 0 WHERE username = '{name}'")
            row = conn.execute("SELECT role FROM users WHERE username = %s", (name,)).fetchone()
            assert row == ("member",)
            # The functions check what they must.
            with pytest.raises(errors.InvalidParameterValue, match="not a role"):
                conn.execute("SELECT aaa_add_user('x', NULL, '$argon2id$v=19$x', 'root', now())")
            with pytest.raises(errors.InvalidParameterValue, match="argon2"):
                conn.execute("SELECT aaa_set_password_hash(1, 'plain')")
        replay = ledger.contribute(name, "200.00", "k1", principal=OP)
        assert replay.get("replayed") is True  # the idempotency record survived
        assert ledger.verify() == []
    finally:
        ledger.close()
        aaa.close()


def test_a_node_with_another_ledger_key_refuses_to_write_and_verify_says_why(
    migrated: dict[str, str],  # noqa: F811
) -> None:
    good = Ledger(migrated["app"], load_config(), key=KEY)
    other_key = secrets.token_hex(32).encode()
    wrong = Ledger(migrated["app"], load_config(), key=other_key)
    try:
        assert good.contribute("carol", "300.00", "c1", principal=OP)["ok"]
        with pytest.raises(LedgerKeyError, match=r"is not the key the ledger is written with"):
            wrong.contribute("carol", "300.00", "c2", principal=OP)
        problems = wrong.verify()
        assert problems and "MACed entries matches this node's ledger key" in problems[0]
        assert f"id {chain.key_id(other_key)}" in problems[0]
        assert good.verify() == []  # nothing was written by the wrong node
    finally:
        good.close()
        wrong.close()


def test_the_ledger_key_comes_from_the_environment_or_a_private_file(
    settings: Any, tmp_path: Path
) -> None:
    env = {"COREC_GRANT_KEY": "g" * 40}
    made = ledger_key.load_key(settings, env)  # unset: <data_dir>/ledger.key (keys init)
    path = Path(settings.data_dir) / ledger_key.KEY_FILE
    assert path.read_bytes().strip() == made and path.stat().st_mode & 0o777 == 0o600
    path.rename(path.with_suffix(".aside"))
    with pytest.raises(ConfigurationError, match="COREC_LEDGER_KEY is not set"):
        ledger_key.load_key(settings, env)  # never made by the process itself
    path.with_suffix(".aside").rename(path)
    assert ledger_key.load_key(settings, env) == made
    path.chmod(0o644)
    with pytest.raises(ConfigurationError, match="chmod 600"):
        ledger_key.load_key(settings, env)
    with pytest.raises(ConfigurationError, match=r"COREC_LEDGER_KEY.*is 5 bytes, 32"):
        ledger_key.load_key(settings, {"COREC_LEDGER_KEY": "short"})
    with pytest.raises(ConfigurationError, match="must differ from COREC_GRANT_KEY"):
        ledger_key.load_key(settings, {**env, "COREC_LEDGER_KEY": "g" * 40})
    assert ledger_key.load_key(settings, {"COREC_LEDGER_KEY": "L" * 40}) == b"L" * 40


# Last: it leaves a forged entry at the head of this module's ledger.
def test_a_forged_well_chained_contribution_fails_verify_and_verify_head(
    migrated: dict[str, str],  # noqa: F811
) -> None:
    ledger = Ledger(migrated["app"], load_config(), key=KEY)
    try:
        assert ledger.contribute("alice", "1000.00", "a1", principal=OP)["ok"]
        assert ledger.contribute("bob", "500.00", "b1", principal=OP)["ok"]
        assert ledger.verify() == []
        kept = ledger.snapshot()[2]["hash"]
        with _app(migrated) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (migrated["app_role"],)
            # An entry without a MAC is refused outright by the table.
            with pytest.raises(errors.CheckViolation, match="capital_ledger_mac_present"):
                conn.execute(
                    "INSERT INTO capital_ledger (idempotency_key, kind, user_id, cash_delta, "
                    "active_delta, units_delta, equity_after, cash_after, active_after, "
                    "units_after, seq, created_at, prev_hash, hash) VALUES ('x', 'contribute', "
                    "'bob', 1, 0, 1, 1, 1, 0, 1, 999, now(), 'p', 'h')")  # fmt: skip
            seq = _forge_contribution(conn, "bob", Decimal("50000.00"))
        # Every balance agrees with the forged entry; only its MAC gives it away.
        audit = ledger.audit()
        assert (audit.chain.first_seq, audit.chain.first_kind, audit.chain.first_reason) == (
            seq, "contribute", "bad MAC")
        assert len(audit.problems) == 1, audit.problems
        assert audit.problems[0].startswith(
            f"ledger entry seq {seq} (contribute by bob, key 'forged-1'): bad MAC")
        with_head = ledger.audit(kept)
        assert kept in with_head.chain.found  # the kept head is before the forgery...
        assert with_head.problems == audit.problems  # ...and verify is red all the same
        # A ledger starting on a new connection checks its key against the newest MACed
        # entry: the forged one fails, so the $20,000 withdrawal moves nothing.
        fresh = Ledger(migrated["app"], load_config(), key=KEY)
        try:
            with pytest.raises(LedgerKeyError, match=f"entry seq {seq} "):
                fresh.withdraw("bob", "20000.00", "w1", principal="user:bob")
        finally:
            fresh.close()
    finally:
        ledger.close()
