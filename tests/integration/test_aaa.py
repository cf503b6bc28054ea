"""The AAA plugin on PostgreSQL and on SQLite: logins, lockout, tokens, roles, audit.

A settable clock drives expiry and lockout; argon2 runs at its lowest cost.
PostgreSQL tests share the run's database, so every user name is unique per test.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from corec_tasks.errors import ConfigurationError
from plugins.aaa.errors import (
    AccountDisabledError,
    AccountLockedError,
    AuthenticationError,
    AuthorizationError,
    TokenExpiredError,
    TokenInvalidError,
    TokenRevokedError,
    UserError,
)
from plugins.aaa.main import PLUGIN_NAME, AAAPlugin
from plugins.aaa.tokens import SECRET_ENV
from plugins.trading.models import AuditLog, User

pytestmark = pytest.mark.integration

FAST: dict[str, Any] = {
    "argon2_time_cost": 1,
    "argon2_memory_cost": 8,
    "argon2_parallelism": 1,
    "max_login_attempts": 3,
    "lockout_s": 60,
    "session_timeout": 120,
}
PASSWORD = "correct horse battery"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture()
def clock() -> Clock:
    return Clock()


@pytest.fixture()
def make_aaa(trading_url: str, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv(SECRET_ENV, "k" * 40)
    made: list[AAAPlugin] = []

    def make(**overrides: Any) -> AAAPlugin:
        plugin = AAAPlugin.from_url(trading_url, {**FAST, **overrides}, clock=clock)
        made.append(plugin)
        return plugin

    yield make
    for plugin in made:
        plugin.close()


@pytest.fixture()
def aaa(make_aaa: Any) -> AAAPlugin:
    plugin: AAAPlugin = make_aaa()
    return plugin


def _name(prefix: str = "u") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def _audit(aaa: AAAPlugin, user_id: int | None) -> list[tuple[str, dict[str, Any]]]:
    with aaa._sessions() as db:
        rows = db.scalars(select(AuditLog).where(AuditLog.user_id == user_id).order_by(AuditLog.id))
        return [(r.action, json.loads(r.details) if r.details else {}) for r in rows]


def _audit_about(aaa: AAAPlugin, username: str) -> list[str]:
    """Actions whose details name ``username`` (CLI and unknown-user rows have no user_id)."""
    with aaa._sessions() as db:
        rows = db.scalars(select(AuditLog).order_by(AuditLog.id))
        return [r.action for r in rows if r.details and f'"{username}"' in r.details]


def test_plugin_entry_point() -> None:
    assert PLUGIN_NAME == "aaa"


def test_login_verify_logout(aaa: AAAPlugin, clock: Clock) -> None:
    name = _name()
    user = aaa.add_user(name, PASSWORD, "member", email=f"{name}@example.org")
    token = aaa.authenticate(name, PASSWORD)
    claims = aaa.verify(token)
    assert (claims.user_id, claims.username, claims.role.value) == (user.id, name, "member")
    assert claims.expires_at - claims.issued_at == timedelta(seconds=120)
    aaa.logout(token)
    with pytest.raises(TokenRevokedError, match="revoked"):
        aaa.verify(token)
    assert [a for a, _ in _audit(aaa, user.id)] == ["login.success", "logout", "token.refused"]


def test_wrong_passwords_lock_the_account_until_lockout_s_passes(
    aaa: AAAPlugin, clock: Clock
) -> None:
    name = _name()
    user = aaa.add_user(name, PASSWORD, "member")
    for _ in range(2):
        with pytest.raises(AuthenticationError, match="invalid username or password") as err:
            aaa.authenticate(name, "wrong password!")
        assert type(err.value) is AuthenticationError
    # Locked reads exactly like a wrong password (no enumeration of locked accounts).
    with pytest.raises(AccountLockedError, match=r"^invalid username or password$"):
        aaa.authenticate(name, "wrong password!")
    clock.advance(59)
    with pytest.raises(AccountLockedError, match=r"^invalid username or password$"):
        aaa.authenticate(name, PASSWORD)
    assert [u.locked_until for u in aaa.list_users() if u.username == name] == [
        clock.now + timedelta(seconds=1)
    ]
    clock.advance(1)
    assert aaa.verify(aaa.authenticate(name, PASSWORD)).username == name
    actions = [a for a, _ in _audit(aaa, user.id)]
    assert actions == [
        "login.failure",
        "login.failure",
        "login.failure",
        "account.locked",
        "login.refused",
        "account.unlocked",
        "login.success",
    ]


def test_a_success_resets_the_count_and_unknown_users_look_alike(aaa: AAAPlugin) -> None:
    name = _name()
    aaa.add_user(name, PASSWORD, "viewer")
    for _ in range(5):  # never 3 in a row
        with pytest.raises(AuthenticationError):
            aaa.authenticate(name, "wrong password!")
        aaa.authenticate(name, PASSWORD)
    with pytest.raises(AuthenticationError, match=r"^invalid username or password$"):
        aaa.authenticate(_name("ghost"), PASSWORD)


def test_lockout_s_zero_waits_for_an_admin_unlock(make_aaa: Any, clock: Clock) -> None:
    aaa = make_aaa(lockout_s=0, max_login_attempts=1)
    name = _name()
    aaa.add_user(name, PASSWORD, "member")
    with pytest.raises(AccountLockedError):
        aaa.authenticate(name, "wrong password!")
    clock.advance(10 * 365 * 86400)
    with pytest.raises(AccountLockedError, match=r"^invalid username or password$"):
        aaa.authenticate(name, PASSWORD)
    assert not aaa.unlock(name, via="test").locked_until
    aaa.authenticate(name, PASSWORD)


def test_concurrent_wrong_passwords_are_each_counted(aaa: AAAPlugin) -> None:
    name = _name()
    aaa.add_user(name, PASSWORD, "member")

    def attempt(_: int) -> str:
        try:
            aaa.authenticate(name, "wrong password!")
        except AuthenticationError as exc:
            return type(exc).__name__
        return "accepted"

    with ThreadPoolExecutor(4) as pool:
        outcomes = sorted(pool.map(attempt, range(8)))
    # Exactly 3 counted failures: 2 plain refusals, then the lock, then refusals as locked.
    assert outcomes.count("AuthenticationError") == 2
    assert outcomes.count("AccountLockedError") == 6
    assert [u.failed_logins for u in aaa.list_users() if u.username == name] == [3]


def test_disabled_users_are_refused_and_their_tokens_revoked(aaa: AAAPlugin) -> None:
    name = _name()
    aaa.add_user(name, PASSWORD, "member")
    token = aaa.authenticate(name, PASSWORD)
    assert not aaa.set_active(name, False, via="test").is_active
    with pytest.raises(TokenRevokedError):
        aaa.verify(token)
    with pytest.raises(AccountDisabledError, match=f"corec users enable {name}"):
        aaa.authenticate(name, PASSWORD)
    # A wrong password still gets the plain answer: disabled accounts are not revealed.
    with pytest.raises(AuthenticationError, match=r"^invalid username or password$"):
        aaa.authenticate(name, "wrong password!")
    aaa.set_active(name, True, via="test")
    aaa.verify(aaa.authenticate(name, PASSWORD))


def test_expired_token_is_refused(aaa: AAAPlugin, clock: Clock) -> None:
    name = _name()
    user = aaa.add_user(name, PASSWORD, "member")
    token = aaa.authenticate(name, PASSWORD)
    clock.advance(119)
    aaa.verify(token)
    clock.advance(1)
    with pytest.raises(TokenExpiredError, match="expired at"):
        aaa.verify(token)
    with pytest.raises(TokenExpiredError):
        aaa.authorize(token, "capital.view", user_id=user.id)


def _segments(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    header, payload, signature = token.split(".")
    return (
        json.loads(base64.urlsafe_b64decode(header + "==")),
        json.loads(base64.urlsafe_b64decode(payload + "==")),
        signature,
    )


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_tampered_token_is_refused(aaa: AAAPlugin) -> None:
    name = _name()
    aaa.add_user(name, PASSWORD, "viewer")
    header, payload, signature = _segments(aaa.authenticate(name, PASSWORD))
    forged = f"{_b64(header)}.{_b64({**payload, 'role': 'admin'})}.{signature}"
    with pytest.raises(TokenInvalidError, match="signature does not match"):
        aaa.verify(forged)
    with pytest.raises(TokenInvalidError):
        aaa.authorize(forged, "users.add")
    assert "token.refused" in [a for a, _ in _audit(aaa, None)]


def test_alg_none_is_refused(aaa: AAAPlugin) -> None:
    name = _name()
    aaa.add_user(name, PASSWORD, "admin")
    _, payload, _ = _segments(aaa.authenticate(name, PASSWORD))
    unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(payload)}."
    with pytest.raises(TokenInvalidError, match="algorithm 'none' is refused"):
        aaa.verify(unsigned)


def test_another_plugins_secret_is_refused(make_aaa: Any) -> None:
    ours, theirs = make_aaa(), make_aaa()
    name = _name()
    ours.add_user(name, PASSWORD, "member")
    theirs._secret = "z" * 40
    with pytest.raises(TokenInvalidError, match="signature does not match"):
        ours.verify(theirs.authenticate(name, PASSWORD))


def test_member_cannot_act_on_another_members_capital(aaa: AAAPlugin) -> None:
    alice, bob, root, eve = _name("alice"), _name("bob"), _name("root"), _name("eve")
    a = aaa.add_user(alice, PASSWORD, "member")
    b = aaa.add_user(bob, PASSWORD, "member")
    aaa.add_user(root, PASSWORD, "admin")
    aaa.add_user(eve, PASSWORD, "viewer")
    alice_token = aaa.authenticate(alice, PASSWORD)

    assert aaa.authorize(alice_token, "capital.withdraw", user_id=a.id)
    with pytest.raises(AuthorizationError, match="only on their own capital") as err:
        aaa.authorize(alice_token, "capital.withdraw", user_id=b.id)
    assert f"user '{alice}' (member) may not 'capital.withdraw'" in str(err.value)
    with pytest.raises(AuthorizationError, match="only their own data"):
        aaa.authorize(alice_token, "capital.view", user_id=b.id)
    with pytest.raises(AuthorizationError, match="needs the admin role"):
        aaa.authorize(alice_token, "users.add")

    eve_claims = aaa.verify(aaa.authenticate(eve, PASSWORD))
    assert aaa.authorize(eve_claims, "capital.view", user_id=b.id)
    with pytest.raises(AuthorizationError, match="read-only"):
        aaa.authorize(eve_claims, "capital.contribute", user_id=eve_claims.user_id)

    root_token = aaa.authenticate(root, PASSWORD)
    assert aaa.authorize(root_token, "capital.withdraw", user_id=b.id)

    decisions = [
        (act, d["action"], d["target_user_id"])
        for act, d in _audit(aaa, a.id)
        if act.startswith("authorize.")
    ]
    assert decisions == [
        ("authorize.allow", "capital.withdraw", a.id),
        ("authorize.deny", "capital.withdraw", b.id),
        ("authorize.deny", "capital.view", b.id),
        ("authorize.deny", "users.add", None),
    ]


def test_role_changes_apply_to_live_tokens(aaa: AAAPlugin) -> None:
    name = _name()
    user = aaa.add_user(name, PASSWORD, "admin")
    token = aaa.authenticate(name, PASSWORD)
    with aaa._sessions.begin() as db:
        db.get_one(User, user.id).role = "viewer"  # type: ignore[assignment]
    with pytest.raises(AuthorizationError, match="viewer"):
        aaa.authorize(token, "users.add")


def test_admin_actions_through_the_api_are_authorized_and_audited(aaa: AAAPlugin) -> None:
    admin, member, newcomer = _name("admin"), _name("member"), _name("new")
    aaa.add_user(admin, PASSWORD, "admin")
    aaa.add_user(member, PASSWORD, "member")
    admin_claims = aaa.verify(aaa.authenticate(admin, PASSWORD))
    member_claims = aaa.verify(aaa.authenticate(member, PASSWORD))
    with pytest.raises(AuthorizationError):
        aaa.add_user(newcomer, PASSWORD, "admin", actor=member_claims)
    added = aaa.add_user(newcomer, PASSWORD, "viewer", actor=admin_claims)
    aaa.set_active(newcomer, False, actor=admin_claims)
    assert [a for a, _ in _audit(aaa, admin_claims.user_id)][-4:] == [
        "authorize.allow",
        "user.add",
        "authorize.allow",
        "user.disable",
    ]
    assert _audit(aaa, admin_claims.user_id)[-1][1]["target_user_id"] == added.id


def test_every_action_is_audited(aaa: AAAPlugin, clock: Clock) -> None:
    name = _name()
    user = aaa.add_user(name, PASSWORD, "member", via="test")
    with pytest.raises(AuthenticationError):
        aaa.authenticate(name, "wrong password!")
    token = aaa.authenticate(name, PASSWORD)
    aaa.authorize(token, "capital.contribute", user_id=user.id)
    with pytest.raises(AuthorizationError):
        aaa.authorize(token, "capital.contribute", user_id=user.id + 1)
    aaa.set_active(name, False, via="test")
    aaa.set_active(name, True, via="test")
    for _ in range(3):
        with pytest.raises(AuthenticationError):
            aaa.authenticate(name, "wrong password!")
    aaa.unlock(name, via="test")
    aaa.logout(aaa.authenticate(name, PASSWORD))
    assert aaa.audit(user.id, "capital.contribute", {"amount": "100.00"}) > 0

    assert _audit_about(aaa, name) == [
        "user.add",
        "login.failure",
        "login.success",
        "user.disable",
        "user.enable",
        "login.failure",
        "login.failure",
        "login.failure",
        "account.locked",
        "account.unlocked",
        "login.success",
    ]
    assert [a for a, _ in _audit(aaa, user.id)] == [
        "login.failure",
        "login.success",
        "authorize.allow",
        "authorize.deny",
        "login.failure",
        "login.failure",
        "login.failure",
        "account.locked",
        "login.success",
        "logout",
        "capital.contribute",
    ]
    assert _audit(aaa, user.id)[-1][1] == {"amount": "100.00"}


def test_account_input_errors(aaa: AAAPlugin) -> None:
    name = _name()
    aaa.add_user(name, PASSWORD, "member")
    with pytest.raises(UserError, match="already exists"):
        aaa.add_user(name, PASSWORD, "member")
    with pytest.raises(UserError, match="at least 12 characters"):
        aaa.add_user(_name(), "short", "member")
    with pytest.raises(UserError, match="role 'root' must be one of"):
        aaa.add_user(_name(), PASSWORD, "root")
    with pytest.raises(UserError, match="must be 1-64 letters"):
        aaa.add_user("bad name", PASSWORD, "member")
    with pytest.raises(UserError, match="no user named"):
        aaa.set_active(_name("ghost"), False)


def test_a_missing_secret_is_named_before_anything_is_counted(
    aaa: AAAPlugin, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = _name()
    aaa.add_user(name, PASSWORD, "member")
    monkeypatch.delenv(SECRET_ENV)
    with pytest.raises(ConfigurationError, match="COREC_JWT_SECRET: is not set"):
        aaa.authenticate(name, "wrong password!")
    monkeypatch.setenv(SECRET_ENV, "short")
    with pytest.raises(ConfigurationError, match="COREC_JWT_SECRET: is 5 bytes"):
        aaa.authenticate(name, PASSWORD)
    assert [u.failed_logins for u in aaa.list_users() if u.username == name] == [0]


def test_a_changed_argon2_cost_rehashes_on_login(make_aaa: Any) -> None:
    name = _name()
    make_aaa().add_user(name, PASSWORD, "member")
    stronger = make_aaa(argon2_time_cost=2)
    stronger.authenticate(name, PASSWORD)
    with stronger._sessions() as db:
        stored = db.scalars(select(User.password_hash).where(User.username == name)).one()
    assert ",t=2," in stored
